"""Every program in examples/ runs to completion and says it succeeded.

The examples check their own results and exit non-zero when something is
wrong; each runs here in a fresh interpreter, with the gipc under test."""
import glob
import os
import subprocess
import sys

import pytest

from support import SCRIPT_CWD, script_env

EXAMPLES = sorted(glob.glob(os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "examples", "*.py")))


def test_the_gallery_is_there():
    names = {os.path.basename(path) for path in EXAMPLES}
    assert {"demo.py", "pool.py", "queue_workers.py", "stream_into_buffer.py",
            "migrated_from_multiprocessing.py"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_runs(path):
    done = subprocess.run([sys.executable, path], env=script_env(),
                          cwd=SCRIPT_CWD, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip(), "the example printed nothing"
