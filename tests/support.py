"""Helpers shared by the test modules."""
import os
import struct
import subprocess
import sys
import textwrap

import pytest

import gipc

#: How long a test waits for a child to finish.
JOIN = 10

#: The directory holding the gipc package under test (site-packages after
#: `pip install .`, the checkout when it is on sys.path): subprocesses started
#: by tests import that same gipc.
GIPC_PATH = os.path.dirname(os.path.dirname(os.path.abspath(gipc.__file__)))


def unfair_pipe(**kwargs):
    """``gipc.pipe(**kwargs)`` whose handles never yield for fairness.

    For the tests of what a call does once it reaches the stream (hands a
    frame over, is cancelled half-way): with its fairness slice over, as
    on a slow machine more than a millisecond after the last turn of the
    loop, a call yields to the event loop first and touches the stream
    only after that, so that a cancel then finds nothing written."""
    from gipc import _stream
    saved = _stream.FAIRNESS_SLICE_US
    _stream.FAIRNESS_SLICE_US = 10 ** 9  # read as the handles are made
    try:
        return gipc.pipe(**kwargs)
    finally:
        _stream.FAIRNESS_SLICE_US = saved


def children():
    """pids of this process's children, zombies included."""
    pids = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/children" % task) as f:
                pids.update(int(p) for p in f.read().split())
        except FileNotFoundError:
            pass
    return pids


def finish(process, code=0):
    """Join a child, check its exit code, release it."""
    process.join(timeout=JOIN)
    assert process.exitcode == code
    process.close()


#: Working directory of Python subprocesses: not the repository root, whose
#: gipc/ (source, no compiled extension after `pip install .`) would shadow
#: the installed package where Python puts the directory of a ``-c`` script
#: first on sys.path (PYTHONSAFEPATH exists from Python 3.11 only).
SCRIPT_CWD = os.path.dirname(os.path.abspath(__file__))


def script_env():
    """The environment for a Python subprocess that imports gipc."""
    return dict(os.environ, PYTHONPATH=GIPC_PATH)


def run_script(code, timeout=60, **kwargs):
    """Run ``code`` (dedented) in a fresh interpreter; return the completed
    process with text stdout/stderr."""
    kwargs.setdefault("cwd", SCRIPT_CWD)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=script_env(),
        capture_output=True, text=True, timeout=timeout, **kwargs)


def end(process, timeout=JOIN):
    """Join a child (killing it if it does not exit in time), release it,
    and return its exit code."""
    process.join(timeout=timeout)
    if process.is_alive():
        process.kill()
        process.join(timeout=timeout)
    code = process.exitcode
    process.close()
    return code


def hand_write(handle, data):
    """Write bytes to the pipe behind ``handle`` by hand, on a dup of its
    descriptor.  The data must fit in the pipe."""
    fd = os.dup(handle.fileno())
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


def frame(payload):
    """``payload`` framed with a short (4-byte) header."""
    return struct.pack(">i", len(payload)) + payload


def _watching_by_pidfd():
    from gipc import _popen_base
    return _popen_base.USE_PIDFDS


#: For a test of the pidfd path itself: skipped where children are watched
#: through sentinel pipes (no pidfds, a portable build, GIPC_NO_PIDFD=1).
needs_pidfds = pytest.mark.skipif(
    not _watching_by_pidfd(),
    reason="tests the pidfd path; children are watched through sentinel "
    "pipes here (no pidfds, a portable build or GIPC_NO_PIDFD=1)")


def _core_flag(name):
    from gipc import _core
    return bool(getattr(_core, name))


#: For a test of pipe resizing (F_SETPIPE_SZ): Linux only, not in a
#: portable build.
needs_pipe_resize = pytest.mark.skipif(
    _core_flag("PORTABLE"),
    reason="pipe capacities change on Linux only (F_SETPIPE_SZ), and this "
    "is a portable build (GIPC_PORTABLE=1)")

#: For a test that needs to tell libev's SIGCHLD handler from others
#: (dladdr: glibc, macOS; not in a GIPC_PORTABLE=1 build).
needs_dladdr = pytest.mark.skipif(
    not _core_flag("HAVE_DLADDR"),
    reason="telling libev's SIGCHLD handler apart needs dladdr(), which a "
    "POSIX.1-2008-only build (GIPC_PORTABLE=1) has not")
