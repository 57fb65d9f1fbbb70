"""gipc 1.8 from PyPI, for comparison (``--with-gipc18``).

It is installed into its own virtual environment, bench/out/gipc18-venv
(``pip install gipc==1.8.0``, which brings gevent), so its import name does
not collide with ours.  Its side of every case runs in a worker started with
that environment's python, ``-P`` (no script or current directory on
sys.path) and the repository root *appended* to sys.path: ``import gipc``
then finds gipc 1.8 in the venv's site-packages, ``import bench`` finds this
package.  The case code is bench/impl_gipc.py + bench/scenarios.py, the same
as for our gipc.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV = os.path.join(HERE, "out", "gipc18-venv")
PYTHON = os.path.join(VENV, "bin", "python")
VERSION = "1.8.0"

_BOOT = ("import sys; sys.path.append(%r); "
         "import gipc; assert gipc.__file__.startswith(%r), gipc.__file__; "
         "from bench.worker import main; sys.exit(main())")


def _installed_version():
    if not os.path.exists(PYTHON):
        return None
    proc = subprocess.run(
        [PYTHON, "-P", "-c",
         "import importlib.metadata as m; print(m.version('gipc'))"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_venv(log=sys.stderr):
    """Create the venv and install gipc 1.8 unless already there."""
    if _installed_version() == VERSION:
        return PYTHON
    print("gipc18: creating %s and installing gipc==%s ..." % (VENV, VERSION),
          file=log, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", VENV], check=True)
    subprocess.run([PYTHON, "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "gipc==%s" % VERSION],
                   check=True)
    got = _installed_version()
    if got != VERSION:
        raise RuntimeError("gipc %s not importable in %s (got %r)"
                           % (VERSION, VENV, got))
    return PYTHON


def worker_command():
    """argv prefix that runs bench.worker under gipc 1.8."""
    return [PYTHON, "-P", "-c",
            _BOOT % (ROOT, os.path.realpath(VENV))]
