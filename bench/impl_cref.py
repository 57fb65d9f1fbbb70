"""C reference: bench/cref.c, compiled with gcc -O2 into bench/out/ at run
time; it forks its own child and prints one JSON line per run."""
import json
import os
import subprocess

from .common import BenchError, NotApplicable

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "cref.c")
OUT = os.path.join(HERE, "out")
BINARY = os.path.join(OUT, "cref")


def build():
    """Compile cref.c unless the binary is newer.  Returns its path."""
    os.makedirs(OUT, exist_ok=True)
    if (os.path.exists(BINARY)
            and os.path.getmtime(BINARY) >= os.path.getmtime(SOURCE)):
        return BINARY
    tmp = BINARY + ".tmp%d" % os.getpid()
    subprocess.run(["gcc", "-O2", "-Wall", "-o", tmp, SOURCE], check=True)
    os.replace(tmp, BINARY)
    return BINARY


def _run(args):
    proc = subprocess.run([BINARY] + [str(a) for a in args],
                          stdout=subprocess.PIPE, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise BenchError("cref %s: exit code %d, no result"
                         % (args[0], proc.returncode))
    out = json.loads(lines[-1])
    if proc.returncode != 0 or not out.get("ok"):
        raise BenchError("cref %s: %s" % (args[0], out.get("error")))
    out.pop("ok")
    return out


#: How long the spinning reference polls an empty pipe before it blocks:
#: gipc's SPIN_US.
SPIN_US = 50


def run(case_id, p, spin=False):
    """Run one case; ``spin``: the spinning reference, which only has a
    round trip (case 4)."""
    ps = p.get("pipe_size") or 0
    if spin:
        if case_id != "4":
            raise NotApplicable("the spinning reference is for the round "
                                "trip only")
        out = _run(["rtt", p["n"], p.get("warmup", 200), 64, ps, SPIN_US])
        return {"rtt_median_us": out["rtt_median_us"],
                "rtt_p99_us": out["rtt_p99_us"],
                "_pipe_size": out["pipe_size"]}
    if case_id == "1":
        out = _run(["msgs", p["n"], p["size"], 1, 0, ps])
        return {"msgs_per_s": p["n"] / out["seconds"],
                "_pipe_size": out["pipe_size"],
                "_reads_per_msg": out["reads"] / p["n"]}
    if case_id in ("3a", "3b", "3c", "3d"):
        into = 1 if p.get("into") else 0
        out = _run(["msgs", p["n"], p["size"], 0, into, ps])
        return {"mb_per_s": p["n"] * p["size"] / out["seconds"] / 1e6,
                "_pipe_size": out["pipe_size"]}
    if case_id == "4":
        out = _run(["rtt", p["n"], p.get("warmup", 200), 64, ps])
        return {"rtt_median_us": out["rtt_median_us"],
                "rtt_p99_us": out["rtt_p99_us"],
                "_pipe_size": out["pipe_size"]}
    if case_id == "5":
        return _run(["spawn", p["n"]])
    if case_id == "7":
        return _run(["rss", p["size"], ps])
    if case_id == "2":
        raise NotApplicable("no pickle in C")
    if case_id == "6" or case_id.startswith("8"):
        raise NotApplicable("blocking implementation (no event loop)")
    raise ValueError(case_id)
