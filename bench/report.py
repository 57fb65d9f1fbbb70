"""Medians, ratios, the table, the JSON lines, the targets and the Markdown
file."""
import datetime
import json
import os
import platform
import subprocess
import sys

from . import cases as C
from .common import median


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    a = abs(v)
    if a >= 10000:
        return "{:,.0f}".format(v)
    if a >= 100:
        return "%.0f" % v
    if a >= 10:
        return "%.1f" % v
    return "%.2f" % v


def fmt_ratio(r):
    return "-" if r is None else "%.2f" % r


def summarise(results, impls):
    """One entry per (metric, impl): status, median, values, ratios."""
    rows = []
    for cid in results:
        case = C.CASE_BY_ID[cid]
        for metric in case.metrics:
            cells = {}
            for impl in impls:
                reps = results[cid][impl]
                statuses = {r["status"] for r in reps}
                values = [r["metrics"][metric.key] for r in reps
                          if r["status"] == "ok" and
                          r["metrics"].get(metric.key) is not None]
                if "timeout" in statuses:
                    status = "timeout"
                elif "failed" in statuses:
                    status = "failed"
                elif values:
                    status = "ok"
                elif "na" in statuses:
                    status = "n/a"
                else:
                    status = "missing"
                error = next((r.get("error") or r.get("reason")
                              for r in reps if r["status"] != "ok"), None)
                cells[impl] = {"status": status, "values": values,
                               "median": median(values) if status == "ok"
                               else None, "note": error}
            for impl, cell in cells.items():
                cell["ratios"] = {}
                for ref in C.REFS:
                    if ref == impl or ref not in cells:
                        continue
                    a, b = cell["median"], cells[ref]["median"]
                    cell["ratios"][ref] = (a / b if a is not None and b
                                           else None)
                if impl != "gipc18" and "gipc18" in cells:
                    a, b = cell["median"], cells["gipc18"]["median"]
                    cell["ratios"]["gipc18"] = (a / b if a is not None and b
                                                else None)
            rows.append({"case": cid, "metric": metric, "cells": cells})
    return rows


def _cell_text(cell):
    if cell["status"] == "ok":
        return fmt(cell["median"])
    return {"n/a": "n/a", "failed": "FAILED", "timeout": "TIMEOUT",
            "missing": "-"}[cell["status"]]


def table_lines(summary, impls):
    ratio_refs = [r for r in ("cref", "crefspin", "mp", "pyref", "pyrefgipc",
                              "gipc18")
                  if r in impls]
    heads = ["case / metric"] + impls + ["gipc/" + r for r in ratio_refs
                                         if "gipc" in impls]
    body = []
    for row in summary:
        cells = row["cells"]
        line = [row["metric"].label] + [_cell_text(cells[i]) for i in impls]
        if "gipc" in impls:
            line += [fmt_ratio(cells["gipc"]["ratios"].get(r))
                     for r in ratio_refs]
        body.append(line)
    widths = [max(len(h), *(len(b[k]) for b in body)) if body else len(h)
              for k, h in enumerate(heads)]

    def render(cols):
        return "  ".join(c.ljust(widths[0]) if k == 0 else c.rjust(widths[k])
                         for k, c in enumerate(cols))
    lines = [render(heads), render(["-" * w for w in widths])]
    lines += [render(b) for b in body]
    return lines


def json_lines(summary, meta):
    out = []
    for row in summary:
        m = row["metric"]
        for impl, cell in row["cells"].items():
            out.append(json.dumps({
                "implementation": impl, "case": row["case"],
                "metric": m.key, "label": m.label.split(None, 1)[1],
                "median": cell["median"], "unit": m.unit,
                "higher_is_better": m.higher, "status": cell["status"],
                "values": cell["values"],
                "ratios": {k: v for k, v in cell["ratios"].items()},
                "note": cell["note"] if cell["status"] != "ok" else None,
                "mode": meta["mode"], "reps": meta["reps"],
            }, ensure_ascii=False))
    return out


def evaluate_targets(summary):
    """[(text, verdict, detail)] for the issue's targets (never fatal)."""
    by_key = {(r["case"], r["metric"].key): r for r in summary}
    out = []
    for issue, text, cid, key, ref, op, bound in C.TARGETS:
        text = "issue %d: %s" % (issue, text)
        row = by_key.get((cid, key))
        if row is None or "gipc" not in row["cells"]:
            out.append((text, "NOT RUN", "case or gipc not selected"))
            continue
        g = row["cells"]["gipc"]
        if g["status"] != "ok":
            out.append((text, "MISSED", "gipc: %s" % _cell_text(g)))
            continue
        if ref is None:
            value = g["median"]
            detail = "gipc %s %s" % (fmt(value), row["metric"].unit)
        else:
            if ref not in row["cells"] or row["cells"][ref]["status"] != "ok":
                out.append((text, "NOT RUN", "no %s value" % ref))
                continue
            value = g["ratios"][ref]
            detail = "gipc/%s = %.2f" % (ref, value)
        met = _within(value, op, bound)
        if ref is not None and (cid, key) in C.FLOORS:
            detail += _floor_detail(row, ref, op, bound, *C.FLOORS[cid, key])
        out.append((text, "MET" if met else "MISSED", detail))
    return out


def _floor_detail(row, ref, op, bound, floor, what):
    """What the target's floor is (see cases.FLOORS), for its detail."""
    cell = row["cells"].get(floor)
    ratio = None if cell is None else cell["ratios"].get(ref)
    if ratio is None:
        return "; floor (%s) not measured" % floor
    return "; floor: %s is %.2f x %s%s" % (
        what, ratio, ref, "" if _within(ratio, op, bound) else
        ", beyond the bound: no implementation can meet it")


def _within(value, op, bound):
    """Whether ``value`` meets a target's bound (``op``: ">=" or "<=")."""
    return value >= bound if op == ">=" else value <= bound


def machine_info():
    info = {"date": datetime.datetime.now().astimezone().strftime(
        "%Y-%m-%d %H:%M %Z")}
    info["nproc"] = os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in f
                                if l.startswith("model name")), "?")
    except OSError:
        info["cpu"] = "?"
    info["kernel"] = platform.release()
    info["python"] = platform.python_version()
    try:
        from importlib.metadata import version
        info["gevent"] = version("gevent")
    except Exception:  # noqa: BLE001
        info["gevent"] = "?"
    try:
        info["gipc_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        ).stdout.strip() or "?"
    except OSError:
        info["gipc_commit"] = "?"
    try:
        info["loadavg"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    return info


def _meta_lines(meta):
    return [
        "date: %s" % meta["date"],
        "machine: %s CPUs, %s, Linux %s; Python %s, gevent %s; gipc at "
        "commit %s" % (meta["nproc"], meta["cpu"], meta["kernel"],
                       meta["python"], meta["gevent"], meta["gipc_commit"]),
        "run: %s mode, %d repetitions (medians), pipe size %d B for gipc "
        "and the C/Python references (%s), %.0f s, load average at the end "
        "%s" % (meta["mode"], meta["reps"], meta["pipe_size"],
                "--pipe-size" if meta["pipe_size_explicit"]
                else "gipc's default", meta["seconds"],
                " ".join(meta.get("loadavg", []))) +
        ("; every process pinned to CPU %d" % meta["pin_cpu"]
         if meta.get("pin_cpu") is not None else "; no CPU pinning") +
        ("; mp and pyref in a bare interpreter (--bare-refs)"
         if meta.get("bare_refs") else "; every Python worker has gevent "
         "imported and its hub started, as the application forking would"),
    ]


LEGEND = [
    "gipc = this tree; gipc18 = gipc 1.8.0 from PyPI; mp = "
    "multiprocessing.Pipe(duplex=False) + Process (fork); pyref = os.fork + "
    "os.pipe, blocking os.read/os.write; pyrefgipc = the same in a process "
    "that imported gipc (start + join: the floor of any start there); cref "
    "= bench/cref.c (gcc -O2), blocking I/O; crefspin = the same, polling "
    "50 us before it blocks (round trip); gipcgreedy = gipc with its "
    "fairness slice off (loop stalls).",
    "gipc/X = gipc's median divided by X's (for msgs/s and MB/s higher is "
    "better, for µs, ms and memory lower is better).",
    "The receiver compares every message with the expected bytes inside the "
    "timed loop, for every implementation alike (for 64 MiB messages this "
    "memory-bound compare is a sizeable part of the time); case 6 checks "
    "after its window, case 7 with zlib.crc32 after the measurement.",
    "The machine may be shared: repetitions are interleaved across "
    "implementations and medians reported, yet single values can vary by "
    "2x under load (see the load average above).",
]


def emit(summary, meta, json_only=False, save_md=None):
    impls = meta["impls"]
    table = table_lines(summary, impls)
    targets = evaluate_targets(summary)
    jl = json_lines(summary, meta)
    if not json_only:
        print()
        for l in _meta_lines(meta):
            print(l)
        print()
        for l in table:
            print(l)
        print()
        for l in LEGEND:
            print(l)
        notes = _notes(summary)
        if notes:
            print()
            for l in notes:
                print(l)
        print()
        print("targets of issues 4 and 12 (reported, never enforced%s):" % (
            "; quick mode: sizes and counts are reduced, indicative only"
            if meta["mode"] == "quick" else ""))
        tw = max(len(t[0]) for t in targets) if targets else 0
        for text, verdict, detail in targets:
            print("  %-7s %s  %s" % (verdict, text.ljust(tw), detail))
        print()
    for l in jl:
        print(l)
    sys.stdout.flush()
    if save_md:
        with open(save_md, "w") as f:
            f.write(markdown(summary, meta, table, targets))


def _notes(summary):
    out = []
    seen = set()
    for row in summary:
        for impl, cell in row["cells"].items():
            if cell["status"] != "ok" and cell["note"]:
                key = (row["case"], impl)
                if key in seen:
                    continue
                seen.add(key)
                out.append("%s %s: %s: %s" % (
                    "case", row["case"], impl, cell["note"]))
    return out


def markdown(summary, meta, table, targets):
    lines = ["# gipc benchmark results", ""]
    lines += ["Produced by `python -m bench%s --save-md PATH` from the "
              "repository root (options: `python -m bench --help`; the "
              "suite is described in bench/__init__.py)."
              % (" --with-gipc18" if "gipc18" in meta["impls"] else ""), ""]
    lines += ["- " + l for l in _meta_lines(meta)]
    lines += ["", "```"] + table + ["```", ""]
    lines += LEGEND + [""]
    notes = _notes(summary)
    if notes:
        lines += ["Not measured:", ""] + ["- " + n for n in notes] + [""]
    lines += ["## Targets of issues 4 and 12", "",
              "| target | verdict | detail |",
              "|---|---|---|"]
    lines += ["| %s | %s | %s |" % t for t in targets]
    lines.append("")
    return "\n".join(lines)
