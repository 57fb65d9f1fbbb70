"""A short tour of gipc: a child process, messages both ways, and a
greenlet in the parent that keeps ticking all along."""
import os

import gevent

import gipc


def worker(channel):
    """Runs in the child: square numbers until told to stop."""
    while True:
        number = channel.get()
        if number is None:
            break
        channel.put((os.getpid(), number * number))


def ticker(counter):
    while True:
        counter[0] += 1
        gevent.sleep(0.001)


def main():
    ticks = [0]
    tick_greenlet = gevent.spawn(ticker, ticks)
    with gipc.pipe(duplex=True) as (parent_end, child_end):
        child = gipc.start_process(worker, args=(child_end,))
        for number in range(1, 6):
            parent_end.put(number)
            pid, square = parent_end.get()
            print("child %d says %d * %d = %d" % (pid, number, number, square))
        parent_end.put(None)
        child.join()
    tick_greenlet.kill()
    print("parent %d: %r exited with code %s; the parent's greenlet ticked "
          "%d times meanwhile" % (os.getpid(), child, child.exitcode, ticks[0]))
    if child.exitcode != 0:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
