"""Regression tests for the C core findings of issue 17: length overflow in
the reader, pid ranges, signals blocked across the fork hooks, reference
cycles through the reader and writer, and README promises of the C side
(frames of 2 GiB and more, the 4 MiB slice per call, fork() failing in the
C helper)."""
import errno
import gc
import mmap
import os
import platform
import struct
import sys
import weakref
import zlib

import gevent
import gevent.os
import pytest

import gipc
from gipc import GIPCProtocolError, _core
from support import hand_write, run_script

WAIT = 30


def _long_header(n):
    """The header announcing a payload of ``n`` bytes in the long form."""
    return struct.pack(">iQ", -1, n)


# ------------------------------------------------ max_message_size bounds


def test_max_message_size_has_a_maximum_that_leaves_room_for_a_header():
    assert _core.MAX_MESSAGE_SIZE == sys.maxsize - 12


@pytest.mark.parametrize("size", [sys.maxsize, _core.MAX_MESSAGE_SIZE + 1])
def test_max_message_size_above_the_maximum_is_refused(size):
    fds_before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(ValueError, match="at most"):
        gipc.pipe(max_message_size=size)
    # Refused before any descriptor was created.
    assert set(os.listdir("/proc/self/fd")) == fds_before
    with gipc.pipe() as (r, w):
        with pytest.raises(ValueError, match="at most"):
            r.max_message_size = size
        assert r.max_message_size == 4 * 1024 ** 3
        with pytest.raises(ValueError, match="at most"):
            _core.Reader(r.fileno(), size)


def test_max_message_size_beyond_ssize_t_is_an_overflow_in_the_core():
    with gipc.pipe() as (r, w):
        with pytest.raises(OverflowError):
            _core.Reader(r.fileno(), 2 ** 63)


@pytest.mark.parametrize("announced", [
    2 ** 63 - 1,          # the sum with the header overflowed a Py_ssize_t
    2 ** 63,
    2 ** 64 - 1,
    _core.MAX_MESSAGE_SIZE + 1,
])
def test_announced_length_above_the_maximum_is_a_protocol_error(announced):
    with gipc.pipe(encoder=None, decoder=None,
                   max_message_size=_core.MAX_MESSAGE_SIZE) as (r, w):
        hand_write(w, _long_header(announced) + b"x" * 64)
        with pytest.raises(GIPCProtocolError) as info:
            r.get(timeout=WAIT)
        assert info.value.errno == errno.EMSGSIZE


@pytest.mark.parametrize("announced", [
    _core.MAX_MESSAGE_SIZE,   # no bytes object can be that large
    pytest.param(2 ** 62, marks=pytest.mark.skipif(
        bool(os.environ.get("GIPC_SANITIZED")),
        reason="AddressSanitizer aborts on a malloc() this large instead "
               "of failing it")),
])
@pytest.mark.parametrize("into", [False, True])
def test_announced_length_at_the_maximum_is_a_memory_error(announced, into):
    """max_message_size at its maximum: a peer announcing that much gets
    MemoryError (no bytes object can be that large), not a crash, a hang
    or undefined behaviour."""
    with gipc.pipe(encoder=None, decoder=None,
                   max_message_size=_core.MAX_MESSAGE_SIZE) as (r, w):
        assert r.max_message_size == _core.MAX_MESSAGE_SIZE
        hand_write(w, _long_header(announced) + b"x" * 64)
        with pytest.raises(MemoryError):
            if into:
                r.get_into(bytearray(16), timeout=WAIT)
            else:
                r.get(timeout=WAIT)



# ------------------------------------------------------------ pid ranges


@pytest.mark.parametrize("pid", [2 ** 32 + 1, 2 ** 31, -2 ** 31 - 1])
def test_pidfd_open_refuses_a_pid_beyond_pid_t(pid):
    """A bare cast made pidfd_open(2**32 + 1) open pid 1."""
    with pytest.raises(OverflowError):
        _core.pidfd_open(pid)


@pytest.mark.parametrize("pid", [0, -1])
def test_pidfd_open_refuses_a_pid_that_is_not_positive(pid):
    with pytest.raises(ValueError):
        _core.pidfd_open(pid)


@pytest.mark.parametrize("pid", [2 ** 32 + 1, 2 ** 32 + os.getpid(),
                                 -2 ** 32 + 1])
def test_reap_refuses_a_pid_beyond_pid_t(pid):
    with pytest.raises(OverflowError):
        _core.reap(pid)
    with pytest.raises(OverflowError):
        _core.reap(pid, -1)


@pytest.mark.parametrize("pid", [0, -1])
def test_reap_refuses_a_pid_that_is_not_positive(pid):
    with pytest.raises(ValueError):
        _core.reap(pid)


def test_reap_refuses_a_pidfd_beyond_an_int():
    pidfd = os.pidfd_open(os.getpid())
    try:
        # The low 32 bits name a real pidfd: a cast would have used it.
        with pytest.raises(OverflowError):
            _core.reap(os.getpid(), 2 ** 32 + pidfd)
        with pytest.raises(ValueError):
            _core.reap(os.getpid(), -2)
    finally:
        os.close(pidfd)


# ------------------------------------------- signals during the fork hooks


def test_signals_are_deliverable_while_the_fork_hooks_run():
    """fork.c blocked every signal across PyOS_BeforeFork and the
    after-fork hooks: a hook that waits (on logging's lock, say) left the
    process deaf to SIGINT and SIGTERM.  Each hook here sends the main
    thread a signal and waits (bounded) for its handler to run."""
    result = run_script("""
        import os, signal, threading, time
        import gipc

        handled = []
        signal.signal(signal.SIGUSR1, lambda *args: handled.append(1))
        armed = False
        seen = {}

        def hook(name):
            def run():
                if not armed:
                    return
                del handled[:]
                signal.pthread_kill(threading.main_thread().ident,
                                    signal.SIGUSR1)
                deadline = time.monotonic() + 5
                while not handled and time.monotonic() < deadline:
                    pass
                seen[name] = bool(handled)
            return run

        os.register_at_fork(before=hook("before"),
                            after_in_parent=hook("after_in_parent"))
        armed = True
        p = gipc.start_process(target=os.getpid)
        armed = False
        p.join(30)
        print(sorted(seen.items()), p.exitcode)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == (
        "[('after_in_parent', True), ('before', True)] 0"), result.stderr


# ------------------------------------- reference cycles through a buffer


class _Owner(bytearray):
    """A buffer that can hold a reference back to the core object using
    it (and be weakly referenced)."""


@pytest.fixture
def raw_pipe():
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    yield r, w
    os.close(r)
    os.close(w)


@pytest.mark.parametrize("view", [False, True])
def test_cycle_through_the_buffer_of_a_pending_frame_is_collected(
        raw_pipe, view):
    r, w = raw_pipe
    writer = _core.Writer(w)
    data = _Owner(4 * 1024 * 1024)  # more than the pipe holds
    data.writer = writer
    assert writer.send(memoryview(data) if view else data) is False
    owner = weakref.ref(data)
    del data, writer
    gc.collect()
    assert owner() is None, "the cycle was not collected"


@pytest.mark.parametrize("view", [False, True])
def test_cycle_through_the_buffer_of_a_partial_get_into_is_collected(
        raw_pipe, view):
    """The buffer export of a half-received read_frame_into held a
    reference that tp_traverse did not report, and there was no tp_clear:
    such a cycle was never freed."""
    r, w = raw_pipe
    reader = _core.Reader(r, 1 << 30)
    buffer = _Owner(1024 * 1024)
    buffer.reader = reader
    os.write(w, struct.pack(">i", 512 * 1024) + b"x" * 1000)
    assert reader.read_frame_into(
        memoryview(buffer) if view else buffer) is None
    assert reader.buffered == 1000
    owner = weakref.ref(buffer)
    del buffer, reader
    gc.collect()
    assert owner() is None, "the cycle was not collected"


def test_timed_out_get_into_keeps_the_buffer_exported_until_the_message_completes():
    """As README's get_into entry says: a bytearray being filled cannot be
    resized until the message is complete."""
    size = 512 * 1024
    buffer = bytearray(size)
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        hand_write(w, struct.pack(">i", size) + b"a" * 1000)
        with pytest.raises(gevent.Timeout):
            r.get_into(buffer, timeout=0.05)
        with pytest.raises(BufferError):
            buffer.extend(b"more")
        fd = os.dup(w.fileno())
        try:
            sender = gevent.spawn(_write_all, fd, b"b" * (size - 1000))
            assert r.get_into(buffer, timeout=WAIT) == size
            sender.get(timeout=WAIT)
        finally:
            os.close(fd)
        buffer.extend(b"more")  # released
        assert buffer == b"a" * 1000 + b"b" * (size - 1000) + b"more"


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[gevent.os.nb_write(fd, view):]


# ------------------------------------------ frames of 2 GiB and more


_LONG_FRAME = 2 ** 31 + 4096     # just past the short header's reach
_MARKS = (0, 2 ** 31 - 16, 2 ** 31 - 4, _LONG_FRAME - 8)  # 8 bytes each


def _mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _marked_buffer():
    """_LONG_FRAME bytes, zero but for 8-byte marks around the 2 GiB
    boundary and at both ends.  Anonymous memory never written reads as
    the kernel's zero page: the buffer costs a few pages, not 2 GiB."""
    buffer = mmap.mmap(-1, _LONG_FRAME)
    for i, offset in enumerate(_MARKS):
        buffer[offset:offset + 8] = struct.pack(">Q", 0x0102030405060700 + i)
    return buffer


@pytest.mark.skipif(_mem_available() < 8 * 1024 ** 3,
                    reason="needs 8 GiB of free memory (the receiver "
                           "holds a 2 GiB message)")
@pytest.mark.skipif(bool(os.environ.get("GIPC_SANITIZED")),
                    reason="2 GiB through the sanitizers takes minutes")
def test_frame_of_2_gib_and_more_crosses_a_pipe_between_processes_whole():
    """The 64-bit header: a child writes a frame of 2 GiB + 4 KiB, the
    parent receives it into a preallocated buffer; the length, the marks
    around the 2 GiB boundary and a checksum of the whole payload match."""
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        with gipc.pipe() as (checksum_r, checksum_w):
            received = mmap.mmap(-1, _LONG_FRAME)
            try:
                p = gipc.start_process(_send_framed_and_checksum,
                                       args=(w, checksum_w))
                # The long header is -1, then the 8-byte length.
                assert r.get_into(received, timeout=120) == _LONG_FRAME
                expected_crc = checksum_r.get(timeout=120)
                assert finish_code(p) == 0
                for i, offset in enumerate(_MARKS):
                    assert received[offset:offset + 8] == struct.pack(
                        ">Q", 0x0102030405060700 + i)
                assert zlib.crc32(received) == expected_crc
            finally:
                received.close()


def _send_framed_and_checksum(w, checksum_w):
    buffer = _marked_buffer()
    w.put(buffer)
    checksum_w.put(zlib.crc32(buffer))
    buffer.close()


def finish_code(process):
    process.join(timeout=120)
    code = process.exitcode
    process.close()
    return code


def test_long_header_is_written_for_2_gib_and_more():
    """The header the writer builds for 2**31 bytes and more is the -1
    marker and the 8-byte length (without sending that much: the frame is
    abandoned once the header and the first bytes are in the pipe)."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    buffer = _marked_buffer()
    try:
        writer = _core.Writer(w)
        assert writer.send(buffer) is False   # the pipe fills up
        written, total = writer.abandon()
        assert total == 12 + _LONG_FRAME
        head = os.read(r, 12 + 8)
        assert head[:12] == struct.pack(">iQ", -1, _LONG_FRAME)
        assert head[12:] == struct.pack(">Q", 0x0102030405060700)
    finally:
        buffer.close()
        os.close(r)
        os.close(w)


# ---------------------------------------------- the 4 MiB slice per call


_SLICE = 4 * 1024 * 1024


def test_one_send_call_moves_at_most_the_slice_even_when_more_would_fit(
        tmp_path):
    """README: a single call moves at most 4 MiB before it lets the event
    loop run.  A regular file never makes a write wait (no pipe this
    machine lets grow past 1 MiB could show it): each call still moves
    only the header and 4 MiB of the frame."""
    fd = os.open(tmp_path / "frames", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        writer = _core.Writer(fd)
        payload = b"s" * (10 * 1024 * 1024)
        assert writer.send(payload) is False
        assert os.fstat(fd).st_size == 4 + _SLICE
        assert writer.resume() is False
        assert os.fstat(fd).st_size == 4 + 2 * _SLICE
        assert writer.resume() is True
        assert os.fstat(fd).st_size == 4 + len(payload)
    finally:
        os.close(fd)


def test_one_receive_call_moves_at_most_the_slice_even_with_data_waiting(
        tmp_path):
    path = tmp_path / "frames"
    payload = bytes(range(256)) * (10 * 1024 * 1024 // 256)
    path.write_bytes(struct.pack(">i", len(payload)) + payload)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        reader = _core.Reader(fd, 1 << 30)
        consumed = []
        while True:
            got = reader.read_frame()
            consumed.append(os.lseek(fd, 0, os.SEEK_CUR))
            if got is not None:
                break
        assert got == payload
        # Each call read at most a slice, though the file always had the
        # rest ready (one read() used to take all of it).
        steps = [b - a for a, b in zip([0] + consumed, consumed)]
        assert steps == [_SLICE, _SLICE, 4 + len(payload) - 2 * _SLICE]
    finally:
        os.close(fd)


# --------------------------------------- fork() failing in the C helper


_NO_FORK_SECCOMP = """
    import ctypes, errno, os, platform, struct

    def forbid_fork():
        # A seccomp filter: fork, and clone without CLONE_VM (a process,
        # not a thread or a vfork), fail with EAGAIN; the rest is allowed.
        # x86_64 numbers: fork 57, clone 56; AUDIT_ARCH_X86_64.
        ld_arch, ld_nr, ld_flags = (0x20, 0, 0, 4), (0x20, 0, 0, 0), \\
            (0x20, 0, 0, 16)
        program = [
            ld_arch,
            (0x15, 0, 6, 0xC000003E),   # not x86_64: allow
            ld_nr,
            (0x15, 3, 0, 57),           # fork: deny
            (0x15, 0, 3, 56),           # not clone: allow
            ld_flags,
            (0x45, 1, 0, 0x100),        # CLONE_VM: allow
            (0x06, 0, 0, 0x00050000 | errno.EAGAIN),
            (0x06, 0, 0, 0x7FFF0000),
        ]
        code = b"".join(struct.pack("HBBI", *op) for op in program)
        filters = ctypes.create_string_buffer(code)
        fprog = struct.pack("HxxxxxxP", len(program),
                            ctypes.addressof(filters))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p,
                               ctypes.c_ulong, ctypes.c_ulong]
        if libc.prctl(38, 1, None, 0, 0) != 0:   # PR_SET_NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
        prog = ctypes.create_string_buffer(fprog)
        if libc.prctl(22, 2, ctypes.addressof(prog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")
"""


def test_fork_failing_inside_the_c_helper_raises_oserror_and_leaks_nothing():
    """A real fork() failure (EAGAIN from a seccomp filter, in a
    subprocess: the tests run as root, where RLIMIT_NPROC does not apply):
    start_process() raises OSError from the C helper, no descriptor or
    child is left, and the handles stay usable."""
    if platform.machine() != "x86_64":
        pytest.skip("the seccomp filter of this test knows x86_64 only")
    result = run_script(_NO_FORK_SECCOMP + """
    import gipc
    from gipc import _core

    def children():
        pids = set()
        for task in os.listdir("/proc/self/task"):
            with open("/proc/self/task/%s/children" % task) as f:
                pids.update(f.read().split())
        return pids

    def fds():
        return sorted(os.listdir("/proc/self/fd"))

    calls = []
    real_fork = _core.fork

    def counting_fork(*args):
        calls.append(1)
        return real_fork(*args)

    _core.fork = counting_fork
    with gipc.pipe() as (r, w):
        # One start first: everything opened lazily is open now.
        p = gipc.start_process(os.getpid)
        p.join(30)
        print("first", p.exitcode)
        p.close()
        forbid_fork()
        if True:   # the filter works: os.fork() fails too
            try:
                pid = os.fork()
            except OSError as exc:
                print("os.fork", errno.errorcode[exc.errno])
            else:
                if pid == 0:
                    os._exit(0)
                os.waitpid(pid, 0)
                print("os.fork worked")
        before_fds, before_calls = fds(), len(calls)
        try:
            gipc.start_process(os.getpid)
        except OSError as exc:
            # BlockingIOError: the OSError of EAGAIN.
            print("start", isinstance(exc, OSError),
                  errno.errorcode[exc.errno])
        else:
            print("start succeeded")
        print("helper called", len(calls) - before_calls)
        print("fds", fds() == before_fds, "children", children())
        w.put("still usable")
        print(r.get(timeout=10))
    """)
    if "PR_SET_SECCOMP" in result.stderr or \
            "PR_SET_NO_NEW_PRIVS" in result.stderr:
        pytest.skip("cannot install a seccomp filter: "
                    + result.stderr.strip().splitlines()[-1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "first 0",
        "os.fork EAGAIN",
        "start True EAGAIN",
        "helper called 1",
        "fds True children set()",
        "still usable",
    ], result.stderr
