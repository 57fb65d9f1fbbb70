"""Streaming a large array from a child into one reused buffer.

The child produces frames of a large array (here: 8 MiB of float64 each,
as a simulation or a camera might) and sends each as raw bytes.  The parent
receives every frame with ``get_into()`` straight into the same
preallocated ``bytearray``: no ``bytes`` object per frame, no copy, and the
event loop keeps running (a greenlet counts its ticks meanwhile).
"""
import array
import time

import gevent

import gipc

FRAME_VALUES = 1024 * 1024  # float64 values per frame: 8 MiB
FRAMES = 24


def producer(writer):
    """In the child: frames whose every value is the frame's number."""
    with writer:
        for number in range(FRAMES):
            writer.put(array.array("d", [float(number)]) * FRAME_VALUES)


def main():
    ticks = [0]

    def tick():
        while True:
            ticks[0] += 1
            gevent.sleep(0.001)

    ticker = gevent.spawn(tick)
    frame = bytearray(FRAME_VALUES * 8)
    values = memoryview(frame).cast("d")
    started = time.perf_counter()
    with gipc.pipe(encoder=None, decoder=None) as (reader, writer):
        child = gipc.start_process(producer, args=(writer,))
        for number in range(FRAMES):
            size = reader.get_into(frame)
            # Check the frame in place, as a consumer would use it.
            if size != len(frame) or values[0] != number or \
                    values[-1] != number:
                raise SystemExit("frame %d arrived damaged" % number)
        child.join()
    elapsed = time.perf_counter() - started
    ticker.kill()
    values.release()
    megabytes = FRAMES * len(frame) / 2 ** 20
    print("received %d frames (%d MiB) into one reused buffer in %.2f s "
          "(%.0f MiB/s); the event loop ticked %d times meanwhile"
          % (FRAMES, megabytes, elapsed, megabytes / elapsed, ticks[0]))
    if child.exitcode != 0:
        raise SystemExit("the producer exited with code %s" % child.exitcode)


if __name__ == "__main__":
    main()
