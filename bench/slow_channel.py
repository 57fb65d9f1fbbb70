"""CPU a receiver spends on a slow channel: ``python -m bench.slow_channel``.

A child sends 500 small messages 1 ms apart; the parent receives them with
``get()`` and reports the CPU time it used.  Before every sleep a receive
may poll the empty pipe for up to ``gipc._stream.SPIN_US`` (a reply about
to arrive is caught without a wake-up); on a channel like this one the
spins never catch anything, and adaptive spinning (csrc/spin.c) stops
them after a few misses.  Not part of the suite: one number, no targets.
"""
import time

import gipc

COUNT = 500
GAP_S = 0.001


def _send_slowly(writer):
    for i in range(COUNT):
        time.sleep(GAP_S)
        writer.put(i)


def main():
    with gipc.pipe() as (reader, writer):
        child = gipc.start_process(_send_slowly, args=(writer,))
        cpu = time.process_time()
        for i in range(COUNT):
            if reader.get(timeout=10) != i:
                raise SystemExit("message %d lost or out of order" % i)
        cpu = time.process_time() - cpu
        child.join(timeout=10)
    print("receiver CPU for %d messages %g ms apart: %.1f ms (%.1f us per "
          "message)" % (COUNT, GAP_S * 1e3, cpu * 1e3, cpu * 1e6 / COUNT))
    return 0 if child.exitcode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
