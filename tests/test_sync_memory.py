"""The memory files of gipc._sync (csrc/sync.c): ``Block`` (the words,
bells and ring of queues and locks) and ``Memory`` (shared values), and
their ``_attach`` for a spawn or forkserver child that receives their
descriptors.  Misuse gets a clear Python exception, never a crash: a
mapping past the end of a memory file (SIGBUS where it is touched), a
negative size taken modulo 2**64, a ring whose words were overwritten.
Checks whose failure would be a crash run in a fresh interpreter.
"""
import errno
import fcntl
import os
import tempfile

import pytest

from gipc import _core
from gipc._sync import Block, Memory
from support import run_script

R_HEAD = 64
R_TAIL = 72


def _is_closed(fd):
    try:
        os.fstat(fd)
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False


def _memory_file(size):
    """A descriptor of a file of ``size`` zero bytes, named nowhere."""
    fd, path = tempfile.mkstemp()
    os.unlink(path)
    os.ftruncate(fd, size)
    return fd


def _in_fresh_interpreter(code):
    done = run_script(code)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"),
                    reason="names descriptors by /proc/self/fd")
def test_memory_files_are_unnamed_and_close_on_exec():
    # memfd_create, or (portable build) shm_open unlinked at once; the
    # bells are non-blocking pipes, pipe2's or pipe()'s and fcntl's.
    memory = Memory(10)
    block = Block(2)
    try:
        for fd in [memory.fd] + block.fds():
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        for fd in block.fds()[1:]:
            assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
        for fd in (memory.fd, block.fds()[0]):
            target = os.readlink("/proc/self/fd/%d" % fd)
            if _core.PORTABLE:
                assert target.startswith("/dev/shm/gipc."), target
                assert target.endswith(" (deleted)"), target
            else:
                assert target.startswith("/memfd:gipc-shared"), target
    finally:
        memory.close_fd()
        block.close()


def test_memory_files_are_distinct():
    memories = [Memory(8) for _ in range(50)]
    assert len({os.fstat(m.fd).st_ino for m in memories}) == 50
    for memory in memories:
        memory.close_fd()


@pytest.mark.parametrize("ring_bytes, error", [
    (-1, ValueError), (-2 ** 63, ValueError), (2 ** 64, OverflowError),
    (2 ** 64 - 1, OverflowError), (1.5, TypeError)])
def test_a_block_refuses_a_bad_ring_size(ring_bytes, error):
    with pytest.raises(error):
        Block(1, ring_bytes)


@pytest.mark.parametrize("bells, error", [
    (-1, ValueError), (5, ValueError), (2 ** 40, OverflowError)])
def test_a_block_refuses_a_bad_number_of_bells(bells, error):
    with pytest.raises(error):
        Block(bells)


@pytest.mark.parametrize("size, error", [
    (0, ValueError), (-1, ValueError), (2 ** 63, OverflowError),
    ("1", TypeError)])
def test_memory_refuses_a_bad_size(size, error):
    with pytest.raises(error):
        Memory(size)


def test_attached_memory_is_the_same_memory():
    memory = Memory(100)
    twin = Memory._attach(os.dup(memory.fd), 100)
    with memoryview(memory) as here, memoryview(twin) as there:
        here[99] = 7
        assert there[99] == 7
    memory.close_fd()
    assert memory.fd == -1
    twin.close_fd()


def test_an_attached_block_is_the_same_block():
    block = Block(1, ring_bytes=1)
    twin = Block._attach(1, block.capacity, [os.dup(fd) for fd in
                                              block.fds()])
    try:
        twin.store(3, 42)
        assert block.load(3) == 42
        assert twin.put(b"item", 0, os.getpid(), False) == 0
        assert block.get(os.getpid()) == b"item"
    finally:
        twin.close()
        block.close()


def test_memory_attach_past_the_end_of_the_file_is_refused():
    out = _in_fresh_interpreter("""
        import os, tempfile
        from gipc._sync import Memory
        fd, path = tempfile.mkstemp()
        os.unlink(path)
        os.ftruncate(fd, 4096)
        try:
            memory = Memory._attach(fd, 1 << 20)
        except ValueError as exc:
            print("refused:", exc)
            try:
                os.fstat(fd)
            except OSError:
                print("closed")
        else:
            with memoryview(memory) as view:
                view[-1] = 1  # SIGBUS: beyond the file
            print("mapped past the end")
    """)
    assert "refused: the memory file holds 4096 bytes" in out
    assert "closed" in out


@pytest.mark.parametrize("file_size, capacity", [
    (0, 0), (4096, 1 << 26), (8192, 1 << 26)])
def test_block_attach_past_the_end_of_the_file_is_refused(file_size,
                                                          capacity):
    out = _in_fresh_interpreter("""
        import os, tempfile
        from gipc._sync import Block
        fd, path = tempfile.mkstemp()
        os.unlink(path)
        os.ftruncate(fd, %d)
        try:
            block = Block._attach(0, %d, [fd])
        except ValueError as exc:
            print("refused:", exc)
            try:
                os.fstat(fd)
            except OSError:
                print("closed")
        else:
            block.store(1, 1)  # SIGBUS without a header in the file
            block.put(b"x" * 100000, 0, 1, False)  # and without a ring
            print("mapped past the end")
    """ % (file_size, capacity))
    assert "refused: the memory file holds %d bytes" % file_size in out
    assert "closed" in out


@pytest.mark.parametrize("capacity", [3, 4, 12, 2 ** 41])
def test_block_attach_refuses_a_bad_capacity_and_closes_the_fds(capacity):
    fd = _memory_file(1 << 20)
    with pytest.raises(ValueError, match="bad block description"):
        Block._attach(0, capacity, [fd])
    assert _is_closed(fd)


def test_block_attach_refuses_a_repeated_descriptor():
    fd = _memory_file(4096)
    r, w = os.pipe()
    with pytest.raises(ValueError, match="repeated descriptor"):
        Block._attach(1, 0, [fd, r, r])
    assert _is_closed(fd) and _is_closed(r)
    os.close(w)


def test_attach_refuses_a_descriptor_that_is_no_memory_file():
    r, w = os.pipe()
    with pytest.raises(ValueError, match="holds 0 bytes"):
        Memory._attach(r, 1)
    assert _is_closed(r)
    with pytest.raises(ValueError, match="holds 0 bytes"):
        Block._attach(0, 0, [w])
    assert _is_closed(w)


def test_a_closed_block_raises_on_every_use():
    block = Block(2, ring_bytes=1)
    block.close()
    assert block.closed
    calls = [
        lambda: block.load(0), lambda: block.store(0, 1),
        lambda: block.add(0, 1), lambda: block.cas(0, 0, 1),
        lambda: block.ring(0), lambda: block.drain(0),
        lambda: block.poke(0), lambda: block.take(0),
        lambda: block.bell_fd(0), lambda: block.try_lock(1),
        lambda: block.unlock(), lambda: block.sem_try(),
        lambda: block.sem_post(), lambda: block.put(b"x", 0, 1, False),
        lambda: block.get(1),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="closed"):
            call()
    assert block.fds() == []
    block.close()  # again: nothing left to release


def test_corrupt_ring_words_are_refused():
    out = _in_fresh_interpreter("""
        import os
        from gipc._sync import Block
        R_HEAD, R_TAIL = %d, %d
        block = Block(2, ring_bytes=1)
        pid = os.getpid()
        # A record whose payload holds what reads as a record length of
        # 130 MiB once the tail points into it (twice the ring).
        payload = (130 << 20).to_bytes(8, "little") * 2
        assert block.put(payload, 0, pid, False) == 0
        for head, tail in [(24, 8), (1 << 40, 0), (4, 0), (8, 0)]:
            block.store(R_HEAD, head)
            block.store(R_TAIL, tail)
            try:
                got = block.get(pid)
            except ValueError as exc:
                print("refused:", exc)
            else:
                print("got", len(got) if isinstance(got, bytes) else got)
        block.store(R_HEAD, 24)
        block.store(R_TAIL, 0)
        print("intact:", block.get(pid) == payload)
    """ % (R_HEAD, R_TAIL))
    assert out.count("refused: the ring's words are corrupt") == 4, out
    assert "intact: True" in out
