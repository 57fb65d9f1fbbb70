"""Transport over gipc: this project, or gipc 1.8 when the worker runs in the
gipc 1.8 virtual environment (impl_gipc18.py); the case code is the same,
since gipc 2 keeps gipc 1.8's API."""
import gipc

from .common import get_pipe_size

# Names a receive-into-buffer call of _GIPCReader might have; looked up at
# run time, so the bench picks it up as soon as gipc grows one.
_INTO_NAMES = ("get_into", "get_bytes_into", "recv_into", "recv_bytes_into",
               "readinto")


class GipcTransport:
    cooperative = True

    def __init__(self, name="gipc", pipe_size=None):
        self.name = name
        self._pipe_kw = {}
        if pipe_size:
            self._pipe_kw["pipe_size"] = pipe_size

    def pipe(self, raw):
        if raw:
            return gipc.pipe(encoder=None, decoder=None, **self._pipe_kw)
        return gipc.pipe(**self._pipe_kw)

    def getter(self, r):
        return r.get

    def putter(self, w):
        return w.put

    def getter_into(self, r):
        for name in _INTO_NAMES:
            meth = getattr(r, name, None)
            if callable(meth):
                return meth
        return None

    def spawn(self, fn, args, moved):
        # gipc closes the moved handles in the parent itself.
        return gipc.start_process(fn, args=tuple(args))

    def join(self, proc):
        proc.join()
        return proc.exitcode

    def close(self, handle):
        # gipc 1.8 handles have no public `closed`.
        if not getattr(handle, "_closed", False):
            handle.close()

    def pipe_size(self, handle):
        return get_pipe_size(handle.fileno() if hasattr(handle, "fileno")
                             else handle._fd)

    def info(self):
        return {"gipc_version": getattr(gipc, "__version__", "?"),
                "gipc_file": gipc.__file__}


def transport(params):
    return GipcTransport("gipc", params.get("gipc_pipe_size"))


def greedy_transport():
    """gipc with its fairness slice off (this process and its children):
    a loop of calls that never wait keeps the CPU to the end, as before
    fairness by time.  The reference for what the yields cost a loop's
    throughput (case 8)."""
    from gipc import _stream
    _stream.FAIRNESS_SLICE_US = 10 ** 9  # 1000 s: never over in a case
    return GipcTransport("gipcgreedy")
