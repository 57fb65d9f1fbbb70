"""The load and soak scripts (stress/, issue 5) in their quick form.

Marked ``stress``: not in the default run (CI runs ``python -m stress
--quick`` itself); run with ``pytest -m stress``.  The script runs in a
subprocess so that its descriptor and memory figures are its own.
"""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.stress
def test_stress_quick(tmp_path):
    # `python -m stress` from a directory that has only the stress package:
    # gipc is imported from wherever it is installed, never from the
    # source tree by accident.
    os.symlink(os.path.join(REPO, "stress"), tmp_path / "stress")
    env = dict(os.environ)
    env.pop("PYTHONSAFEPATH", None)
    out = subprocess.run([sys.executable, "-m", "stress", "--quick"],
                         cwd=tmp_path, env=env, capture_output=True,
                         timeout=300, stdin=subprocess.DEVNULL, check=False)
    report = out.stdout.decode() + out.stderr.decode()
    assert out.returncode == 0, report
    assert report.rstrip().endswith("OK"), report
    assert "200 children alive at once" in report
    assert "FAIL" not in report


@pytest.mark.stress
def test_stress_detects_growth(tmp_path):
    """The check can fail: a run that leaks descriptors is reported."""
    os.symlink(os.path.join(REPO, "stress"), tmp_path / "stress")
    script = (
        "import os, sys, stress.__main__ as s\n"
        "real = s.cycles\n"
        "leaked = []\n"
        "def cycles(n):\n"
        "    leaked.append(os.open('/dev/null', os.O_RDONLY))\n"
        "    return real(n)\n"
        "s.cycles = cycles\n"
        "sys.exit(s.main(['--children', '2', '--seconds', '0.1',\n"
        "                 '--cycles', '2', '--volume', '1000']))\n")
    env = dict(os.environ)
    env.pop("PYTHONSAFEPATH", None)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path,
                         env=env, capture_output=True, timeout=300,
                         stdin=subprocess.DEVNULL, check=False)
    report = out.stdout.decode() + out.stderr.decode()
    assert out.returncode == 1, report
    assert "FAIL: open descriptors grew" in report
