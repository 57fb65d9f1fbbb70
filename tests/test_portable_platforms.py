"""Where gipc runs (issue 13): the build's flags and the paths the Python
layer takes after them, a clear refusal on unsupported platforms, and
gipc 1.8's ``isinstance(p, multiprocessing.Process)``."""
import multiprocessing
import os
import subprocess
import sys
import textwrap

import pytest

import gipc
from gipc import _core, _pipesize, _popen_base
from support import JOIN, script_env, SCRIPT_CWD

def run_script(code, extra_env=None):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=SCRIPT_CWD,
        env=dict(script_env(), **(extra_env or {})), capture_output=True,
        text=True, timeout=60)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_pipe_module = sys.modules["gipc.pipe"]


def test_the_build_says_what_it_has():
    assert _core.PORTABLE in (0, 1)
    if _core.PORTABLE:
        # POSIX.1-2008 only: every Linux-only path is off.
        assert not _core.HAVE_PIDFD and not _core.HAVE_DLADDR
    if not _core.HAVE_PIDFD:
        assert not _popen_base.USE_PIDFDS
    assert _pipesize.CAN_RESIZE == (not _core.PORTABLE)
    assert _pipe_module._HAVE_PIPE2 == (not _core.PORTABLE)


def test_pipes_are_non_blocking_and_close_on_exec_on_either_path():
    import fcntl

    with gipc.pipe() as (r, w):
        for fd in (r._fd, w._fd):
            assert not os.get_blocking(fd)
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC


def test_gipc_no_pidfd_forces_the_sentinel_path():
    result = run_script("""
        import gipc
        from gipc import _popen_base
        p = gipc.start_process(int)
        p.join(10)
        print(_popen_base.USE_PIDFDS, p.exitcode)
        p.close()
    """, extra_env={"GIPC_NO_PIDFD": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "0"]


@pytest.mark.parametrize("patch, words", [
    ("sys.platform = 'win32'", "does not support win32"),
    ("os.name = 'nt'", "POSIX"),
    ("sys.implementation = types.SimpleNamespace("
     "**dict(vars(sys.implementation), name='pypy'))",
     "does not support pypy"),
])
def test_an_unsupported_platform_gets_a_clear_import_error(patch, words):
    result = run_script("""
        import os, sys, types
        %s
        try:
            import gipc
        except ImportError as exc:
            print("ImportError:", exc)
    """ % patch)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ImportError:"), result.stdout
    assert words in result.stdout


def test_setup_refuses_windows_cleanly():
    # setup.py run as on Windows: a one-line reason, not a compiler dump.
    code = ("import sys, runpy; sys.platform = 'win32'; "
            "sys.argv = ['setup.py', '--name']; "
            "runpy.run_path('setup.py', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "does not support win32" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_gipc_process_is_a_multiprocessing_process():
    # gipc 1.8's start_process() returned a multiprocessing.Process.
    p = gipc.start_process(int)
    try:
        assert isinstance(p, multiprocessing.Process)
        assert isinstance(gipc.Process(target=int), multiprocessing.Process)
        # ... whose child is still gipc's (not multiprocessing's popen).
        assert type(p._popen).__module__ == "gipc._popen_fork"
    finally:
        p.join(JOIN)
    assert p.exitcode == 0
    p.close()
