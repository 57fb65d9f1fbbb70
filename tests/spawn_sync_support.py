"""Child targets for tests/test_spawn_sync.py: importable in a spawn or
forkserver child, importing nothing but gipc (a test module would bring
pytest along)."""
import os

import gipc


def echo_queues(inbox, outbox, simple):
    """Move an item from the parent to it and back, through every kind
    of queue."""
    item = inbox.get(timeout=30)
    inbox.task_done()
    outbox.put(("from child", item, os.getpid()))
    simple.put(item * 2)


def hold_and_die(lock, rlock, held):
    """Take both locks, say so, and exit without releasing them."""
    lock.acquire()
    rlock.acquire()
    rlock.acquire()
    held.set()
    os._exit(0)


def use_primitives(value, array, text, raw, semaphore, cond, barrier,
                   started, done, same_lock):
    """Change shared memory and signal through each primitive."""
    assert value.get_lock() is same_lock, "identity lost in the child"
    started.set()
    with value.get_lock():
        value.value += 40
    array[1] = 7
    text.value = b"child"
    raw.value = 99
    semaphore.release()
    with cond:
        cond.notify_all()
    barrier.wait(timeout=30)
    done.wait(timeout=30)


def fork_grandchild(queue):
    """From a spawn child, fork a child that uses the same queue."""
    p = gipc.start_process(put, args=(queue, "from grandchild"))
    p.join(30)
    queue.put(p.exitcode)


def put(queue, item):
    queue.put(item)


marker = None


def set_marker(value):
    """A pool initializer: what the tasks of this worker see."""
    global marker
    marker = value


def read_marker():
    return marker, os.getpid()


def square(x):
    return x * x


def die():
    os._exit(3)
