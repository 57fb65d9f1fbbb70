"""Helpers shared by the test modules."""
import os
import struct
import subprocess
import sys
import textwrap

import gipc

#: How long a test waits for a child to finish.
JOIN = 10

#: The directory holding the gipc package under test (site-packages after
#: `pip install .`, the checkout when it is on sys.path): subprocesses started
#: by tests import that same gipc.
GIPC_PATH = os.path.dirname(os.path.dirname(os.path.abspath(gipc.__file__)))


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
