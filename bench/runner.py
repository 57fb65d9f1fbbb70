"""Command line and orchestration: build the C reference, set up gipc 1.8 if
asked, then run every (case, repetition, implementation) in a fresh worker
process with a timeout, implementations interleaved within each repetition
so that all of them see the same machine conditions."""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

from . import cases as C
from . import impl_cref, plot, report
from .worker import MARK

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description="gipc benchmark suite (issue 4): gipc against "
        "multiprocessing, a C reference, a Python reference and, with "
        "--with-gipc18, gipc 1.8 from PyPI.")
    ap.add_argument("--quick", action="store_true",
                    help="small counts and sizes, 2 repetitions (CI); "
                    "exits non-zero only if a transfer was not intact, "
                    "crashed or timed out")
    ap.add_argument("--reps", type=int, default=None,
                    help="repetitions per case and implementation "
                    "(default 5, --quick 2); medians are reported")
    ap.add_argument("--cases", default="",
                    help="comma-separated case ids, e.g. 1,3,6 or 3b,4 "
                    "(default: all)")
    ap.add_argument("--impls", default="",
                    help="comma-separated implementations among %s "
                    "(default: all but gipc18)" % ",".join(C.IMPLS))
    ap.add_argument("--with-gipc18", action="store_true",
                    help="also measure gipc 1.8 from PyPI, installed into "
                    "bench/out/gipc18-venv on first use")
    ap.add_argument("--pipe-size", type=int, default=None,
                    help="pipe size in bytes for gipc (pipe_size=) and the "
                    "C and Python references (default: the size of a "
                    "default gipc.pipe(), read with F_GETPIPE_SZ); "
                    "multiprocessing and gipc 1.8 keep their defaults")
    ap.add_argument("--json-only", action="store_true",
                    help="print only the JSON lines on stdout")
    ap.add_argument("--save-md", metavar="PATH",
                    help="also write the table, the targets and the machine "
                    "info as Markdown to PATH (e.g. bench/RESULTS.md)")
    ap.add_argument("--pin-cpu", type=int, default=None, metavar="CPU",
                    help="run every case (parent and child) on this one CPU "
                    "(sched_setaffinity); default: no pinning.  On a VM, "
                    "cross-CPU wake-ups of an idle vCPU can dominate the "
                    "round trip (case 4); pinning shows the software cost")
    ap.add_argument("--bare-refs", action="store_true",
                    help="run multiprocessing and the Python reference in a "
                    "bare interpreter; by default every Python worker has "
                    "gevent imported and its hub started (a gevent "
                    "application), which makes forking it slower (case 5)")
    ap.add_argument("--plot", metavar="FILE",
                    help="also draw gipc's speed-up over each peer as a bar "
                    "chart to FILE (.png or .svg; needs matplotlib: "
                    "pip install -e '.[bench]')")
    ap.add_argument("--timeout-scale", type=float, default=1.0,
                    help="multiply every per-case timeout")
    args = ap.parse_args(argv)
    if args.plot:
        plot.require_matplotlib()  # before a run of minutes, not after it
    return args


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def gipc_default_pipe_size():
    """F_GETPIPE_SZ of a default gipc.pipe() under load (gipc grows a pipe
    the first time a put() finds it full, so measure it after one message
    larger than the pipe), in a subprocess (the library may be mid-edit; a
    failure here must not stop the run)."""
    code = ("import fcntl, gevent, gipc\n"
            "r, w = gipc.pipe(encoder=None, decoder=None)\n"
            "g = gevent.spawn(w.put, bytes(4 << 20))\n"
            "assert len(r.get()) == 4 << 20\n"
            "g.join()\n"
            "print(fcntl.fcntl(w.fileno(), fcntl.F_GETPIPE_SZ))\n")
    try:
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, timeout=60)
        return int(out.stdout.strip())
    except Exception as exc:  # noqa: BLE001
        log("warning: cannot read gipc's pipe size (%s); using 65536" % exc)
        return 65536


def run_worker(cmd, impl, case_id, params, timeout):
    """Run one worker; returns a result dict with 'status' in ok / na /
    failed / timeout."""
    argv = cmd + [impl, case_id, json.dumps(params)]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        out, err = proc.communicate()
    # Whatever happened, leave no child of this worker behind.
    _kill_group(proc.pid)
    elapsed = time.monotonic() - t0
    if timed_out:
        return {"status": "timeout", "error": "timed out after %.0f s"
                % timeout, "stderr": err[-2000:], "elapsed": elapsed}
    line = None
    for l in out.splitlines():
        if l.startswith(MARK):
            line = l[len(MARK):]
    if line is None:
        return {"status": "failed", "error": "worker exited with %s and no "
                "result" % proc.returncode, "stderr": err[-2000:],
                "elapsed": elapsed}
    res = json.loads(line)
    if not res.get("ok"):
        return {"status": "failed", "error": res.get("error"),
                "stderr": err[-2000:], "elapsed": elapsed}
    if "na" in res:
        return {"status": "na", "reason": res["na"], "elapsed": elapsed}
    return {"status": "ok", "metrics": res["metrics"], "elapsed": elapsed}


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    reps = args.reps or (2 if args.quick else 5)
    case_ids = C.select(args.cases)
    impls = [i for i in (args.impls.split(",") if args.impls else C.IMPLS)
             if i]
    for i in impls:
        if i not in C.IMPLS:
            raise SystemExit("unknown implementation %r" % i)
    if "gipc18" in impls and not args.with_gipc18:
        if args.impls:
            args.with_gipc18 = True
        else:
            impls.remove("gipc18")
    if args.with_gipc18 and "gipc18" not in impls:
        impls.insert(1, "gipc18")

    started = time.time()
    impl_cref.build()
    cmds = {i: [sys.executable, "-m", "bench.worker"] for i in impls}
    if "gipc18" in impls:
        from . import impl_gipc18
        impl_gipc18.ensure_venv()
        cmds["gipc18"] = impl_gipc18.worker_command()
    pipe_size = args.pipe_size or gipc_default_pipe_size()
    log("bench: %s mode, %d repetitions, cases %s, implementations %s, "
        "pipe size %d" % ("quick" if args.quick else "full", reps,
                          ",".join(case_ids), ",".join(impls), pipe_size))

    # results[case_id][impl] = list of per-repetition results
    results = {cid: {i: [] for i in impls} for cid in case_ids}
    for cid in case_ids:
        case = C.CASE_BY_ID[cid]
        params = dict(case.quick if args.quick else case.full)
        params["pipe_size"] = pipe_size
        params["pipe_size_explicit"] = args.pipe_size is not None
        if args.pin_cpu is not None:
            params["pin_cpu"] = args.pin_cpu
        params["bare_refs"] = args.bare_refs
        timeout = case.timeout * args.timeout_scale * (0.5 if args.quick
                                                       else 1)
        for rep in range(reps):
            order = impls[rep % len(impls):] + impls[:rep % len(impls)]
            for impl in order:
                if results[cid][impl] and results[cid][impl][-1]["status"] \
                        in ("na", "failed", "timeout"):
                    # Not applicable, or broken: do not try again.
                    results[cid][impl].append(results[cid][impl][-1])
                    continue
                res = run_worker(cmds[impl], impl, cid, params, timeout)
                results[cid][impl].append(res)
                log("  case %-3s rep %d/%d %-6s %s" % (
                    cid, rep + 1, reps, impl, _brief(case, res)))
                if res["status"] in ("failed", "timeout") and res.get(
                        "stderr"):
                    log("    stderr: " + res["stderr"].strip()[-600:]
                        .replace("\n", "\n    "))
    meta = report.machine_info()
    meta.update({"mode": "quick" if args.quick else "full", "reps": reps,
                 "pipe_size": pipe_size,
                 "pipe_size_explicit": args.pipe_size is not None,
                 "pin_cpu": args.pin_cpu,
                 "bare_refs": args.bare_refs,
                 "seconds": round(time.time() - started, 1),
                 "impls": impls, "cases": case_ids})
    summary = report.summarise(results, impls)
    report.emit(summary, meta, json_only=args.json_only,
                save_md=args.save_md)
    if args.plot:
        plot.draw([json.loads(line) for line in report.json_lines(
            summary, meta)], args.plot)
    failures = [(cid, i) for cid in case_ids for i in impls
                if any(r["status"] in ("failed", "timeout")
                       for r in results[cid][i])]
    if failures:
        log("bench: FAILED (not intact, crashed or timed out): " + ", ".join(
            "%s/%s" % f for f in failures))
        return 1
    return 0


def _brief(case, res):
    if res["status"] == "ok":
        return "  ".join("%s=%s" % (m.key, report.fmt(res["metrics"].get(
            m.key))) for m in case.metrics) + "  (%.1f s)" % res["elapsed"]
    if res["status"] == "na":
        return "n/a (%s)" % res["reason"]
    return "%s: %s" % (res["status"].upper(), res.get("error"))
