"""Which type lookups miss CPython's type cache in a gipc child.

A maintainer's tool for gipc/_lookups.py: it starts children that return at
once and lists, per child, the (type, attribute) lookups that missed the
type cache there (each one copies a page or more; see gipc/_lookups.py).
It puts a uprobe on CPython's miss path (``find_name_in_mro``), so it needs
perf, root and a CPython with symbols (pyenv's builds have them).

    python -m bench.child_lookups [--children N]

An empty list (or only lookups on the hub class, which the child changes)
means the parent's warm-up covers the child.  Exits with status 2 where
the probe cannot be used (no perf, not root, no symbols, a kernel without
uprobes).
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

# Offsets on x86-64: tp_name in a type object; the characters of a compact
# ASCII string follow its header (the size of "" minus its NUL).
_TP_NAME = 24
_ASCII_DATA = sys.getsizeof("") - 1

_WORKLOAD = """
import sys
import gevent
gevent.get_hub()
import gipc

def noop():
    pass

pids = []
for _ in range(int(sys.argv[1])):
    p = gipc.start_process(noop)
    pids.append(p.pid)
    p.join()
    p.close()
print(" ".join(map(str, pids[3:])))  # the first starts fill the caches
"""


def _libpython():
    name = sysconfig.get_config_var("LDLIBRARY") or ""
    path = os.path.join(sysconfig.get_config_var("LIBDIR") or "", name)
    return path if name.endswith(".so") or ".so." in name else sys.executable


def _perf(*args, **kwargs):
    return subprocess.run(["perf", *args], check=True, text=True,
                          capture_output=True, **kwargs)


def _unavailable(why):
    print(why, file=sys.stderr)
    sys.exit(2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=20)
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        _unavailable("perf is not installed")
    binary = _libpython()
    event = "gipc_lookup_miss"
    subprocess.run(["perf", "probe", "-q", "-d", "*:%s" % event],
                   capture_output=True)
    try:
        _perf("probe", "-x", binary, "--add",
              "%s=find_name_in_mro type=+0(+%d(%%di)):string "
              "name=+%d(%%si):string" % (event, _TP_NAME, _ASCII_DATA))
    except subprocess.CalledProcessError as exc:
        _unavailable("cannot place a uprobe on %s: %s" % (binary, exc.stderr))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "perf.data")
            script = os.path.join(tmp, "workload.py")
            with open(script, "w") as f:
                f.write(_WORKLOAD)
            try:
                run = _perf("record", "-q", "-e", "probe_*:%s" % event,
                            "-o", data, sys.executable, script,
                            str(args.children + 3))
            except subprocess.CalledProcessError as exc:
                if "Traceback" in exc.stderr:
                    raise SystemExit("the workload failed:\n" + exc.stderr)
                _unavailable("perf record failed: %s" % exc.stderr)
            pids = set(map(int, run.stdout.split()))
            trace = _perf("script", "-i", data, "-F", "pid,trace").stdout
    finally:
        subprocess.run(["perf", "probe", "-q", "-d", "*:%s" % event],
                       capture_output=True)
    misses = collections.Counter()
    seen = 0
    for line in trace.splitlines():
        m = re.match(r'\s*(\d+)\s.*type="(.*)" name="(.*)"', line)
        if m:
            seen += 1
            if int(m.group(1)) in pids:
                misses[m.group(2), m.group(3)] += 1
    if not seen:  # the parent always misses (imports): the probe is blind
        _unavailable("the probe recorded nothing")
    print("%d children, %.1f type cache misses per child"
          % (len(pids), sum(misses.values()) / max(len(pids), 1)))
    for (type_name, name), count in sorted(misses.items()):
        print("  %5.2f  %s.%s" % (count / len(pids), type_name, name))


if __name__ == "__main__":
    main()
