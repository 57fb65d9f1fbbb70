"""Python reference: os.fork + os.pipe, blocking I/O, the same framing as
gipc and multiprocessing (4-byte big-endian signed length, then payload).

About as fast as plain Python gets: the reader keeps a 64 KiB buffer and
parses every frame a read brought in before reading again; a payload larger
than the buffer is read with os.readv straight into a preallocated bytearray
(returned as is, no conversion copy).  The writer sends header and payload
with one os.write (small) or os.writev (large).  The pipe gets the same size
as gipc's (F_SETPIPE_SZ).
"""
import os
import pickle
import struct
import traceback

from .common import get_pipe_size, set_pipe_size

_HDR = struct.Struct(">i")
_unpack_from = _HDR.unpack_from
_pack = _HDR.pack
_CHUNK = 65536


class Reader:
    __slots__ = ("fd", "buf", "pos")

    def __init__(self, fd):
        self.fd = fd
        self.buf = b""
        self.pos = 0

    def get(self):
        buf = self.buf
        pos = self.pos
        avail = len(buf) - pos
        if avail >= 4:
            n = _unpack_from(buf, pos)[0]
            if avail - 4 >= n >= 0:
                start = pos + 4
                self.pos = start + n
                return buf[start:start + n]
        return self._get_slow()

    def get_obj(self):
        return pickle.loads(self.get())

    def _fill(self, need):
        """Make at least `need` unparsed bytes available in self.buf."""
        rest = self.buf[self.pos:]
        while len(rest) < need:
            chunk = os.read(self.fd, max(_CHUNK, need - len(rest)))
            if not chunk:
                raise EOFError("pipe closed")
            rest += chunk
        self.buf = rest
        self.pos = 0

    def _header(self):
        if len(self.buf) - self.pos < 4:
            self._fill(4)
        n = _unpack_from(self.buf, self.pos)[0]
        if n < 0:
            raise ValueError("frames of 2 GiB and more are not supported")
        self.pos += 4
        return n

    def _into(self, view, n):
        """Fill view[:n] with the next n payload bytes."""
        have = min(n, len(self.buf) - self.pos)
        view[:have] = self.buf[self.pos:self.pos + have]
        self.pos += have
        readv = os.readv
        fd = self.fd
        while have < n:
            got = readv(fd, [view[have:n]])
            if not got:
                raise EOFError("pipe closed in the middle of a message")
            have += got

    def _get_slow(self):
        n = self._header()
        if n <= _CHUNK:
            if len(self.buf) - self.pos < n:
                self._fill(n)
            start = self.pos
            self.pos = start + n
            return self.buf[start:start + n]
        out = bytearray(n)
        self._into(memoryview(out), n)
        return out

    def get_into(self, buffer):
        n = self._header()
        view = memoryview(buffer)
        if n > view.nbytes:
            raise ValueError("buffer too small")
        self._into(view, n)
        return n


class Writer:
    __slots__ = ("fd",)

    def __init__(self, fd):
        self.fd = fd

    def put(self, data):
        n = len(data)
        fd = self.fd
        if n <= _CHUNK:
            frame = _pack(n) + data
            sent = os.write(fd, frame)
            while sent < len(frame):
                sent += os.write(fd, frame[sent:])
            return
        hdr = _pack(n)
        view = memoryview(data)
        sent = os.writev(fd, [hdr, view])
        while sent < n + 4:
            if sent < 4:
                sent += os.writev(fd, [hdr[sent:], view])
            else:
                sent += os.write(fd, view[sent - 4:])

    def put_obj(self, obj):
        self.put(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


class PyRefTransport:
    name = "pyref"
    cooperative = False

    def __init__(self, pipe_size):
        self._pipe_size = pipe_size
        self._raw = {}

    def pipe(self, raw):
        r, w = os.pipe()
        set_pipe_size(w, self._pipe_size)
        reader, writer = Reader(r), Writer(w)
        self._raw[id(reader)] = self._raw[id(writer)] = raw
        return reader, writer

    def getter(self, r):
        return r.get if self._raw[id(r)] else r.get_obj

    def putter(self, w):
        return w.put if self._raw[id(w)] else w.put_obj

    def getter_into(self, r):
        return r.get_into

    def spawn(self, fn, args, moved):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fn(*args)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        for handle in moved:
            self.close(handle)
        return pid

    def join(self, pid):
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    def close(self, handle):
        if handle.fd is not None:
            os.close(handle.fd)
            handle.fd = None

    def pipe_size(self, handle):
        return get_pipe_size(handle.fd)

    def info(self):
        return {}


def transport(params):
    return PyRefTransport(params.get("pipe_size"))
