"""Transport over multiprocessing.Pipe(duplex=False) and
multiprocessing.Process with the fork context: blocking I/O, as users know
it.  Pipes keep multiprocessing's default size (what its users get)."""
import multiprocessing

from .common import get_pipe_size

_ctx = multiprocessing.get_context("fork")


class MpTransport:
    name = "mp"
    cooperative = False

    def __init__(self):
        # A Connection does not know whether the case wants raw bytes or
        # pickled objects; remember what each pipe was made for.
        self._raw = {}

    def pipe(self, raw):
        r, w = _ctx.Pipe(duplex=False)
        self._raw[id(r)] = self._raw[id(w)] = raw
        return r, w

    def getter(self, r):
        return r.recv_bytes if self._raw[id(r)] else r.recv

    def putter(self, w):
        return w.send_bytes if self._raw[id(w)] else w.send

    def getter_into(self, r):
        return r.recv_bytes_into

    def spawn(self, fn, args, moved):
        p = _ctx.Process(target=fn, args=tuple(args))
        p.start()
        for conn in moved:
            conn.close()
        return p

    def join(self, proc):
        proc.join()
        return proc.exitcode

    def close(self, conn):
        if not conn.closed:
            conn.close()

    def pipe_size(self, conn):
        return get_pipe_size(conn.fileno())

    def info(self):
        return {}


def transport(params):
    return MpTransport()
