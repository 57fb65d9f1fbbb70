"""bench.plot: the speed-ups it draws, and the picture itself where
matplotlib is installed."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import plot  # noqa: E402


def _record(impl, case, label, higher, ratios, status="ok"):
    return {"implementation": impl, "case": case, "label": label,
            "higher_is_better": higher, "ratios": ratios, "status": status}


RECORDS = [
    _record("gipc", "1", "raw msgs/s", True, {"mp": 2.0, "cref": 0.5}),
    _record("gipc", "4", "round trip µs", False, {"mp": 0.25}),
    _record("mp", "1", "raw msgs/s", True, {"cref": 0.25}),
    _record("gipc", "5", "start ms", False, {"mp": None}),
    _record("gipc", "6", "stall ms", False, {"mp": 0.5}, status="failed"),
]


def test_speedups_point_the_same_way_for_every_metric():
    rows = plot.speedups(RECORDS)
    # Only gipc's measured rows with a ratio; a time 4x smaller than the
    # peer's is a 4x speed-up, a rate 2x higher a 2x one.
    assert rows == [("1 raw msgs/s", {"mp": 2.0, "cref": 0.5}),
                    ("4 round trip µs", {"mp": 4.0})]


def test_records_are_read_from_mixed_output():
    lines = ["table line", '{"implementation": "gipc"}', "", "  {\"a\": 1}"]
    assert plot.read_records(lines) == [{"implementation": "gipc"}, {"a": 1}]


def _plot_command(tmp_path, records, out):
    # In a subprocess: matplotlib keeps its font files open for good.
    run = tmp_path / "run.jsonl"
    run.write_text("".join(json.dumps(r) + "\n" for r in records))
    return subprocess.run(
        [sys.executable, "-m", "bench.plot", str(run), str(out)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True, text=True, timeout=120)


def test_draws_a_picture(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench.svg"
    done = _plot_command(tmp_path, RECORDS, out)
    assert done.returncode == 0, done.stderr
    assert out.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_nothing_to_draw_is_a_clear_error(tmp_path):
    pytest.importorskip("matplotlib")
    done = _plot_command(tmp_path, RECORDS[2:3], tmp_path / "x.png")
    assert done.returncode == 1
    assert "no gipc result" in done.stderr
