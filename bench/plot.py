"""The benchmark picture: gipc's speed relative to each peer, one group of
bars per metric.

Used by ``python -m bench --plot FILE`` (after a run), or on saved JSON
lines: ``python -m bench --json-only > run.jsonl`` then
``python -m bench.plot run.jsonl FILE``.  The format follows FILE's suffix
(``.png`` or ``.svg``).  Needs matplotlib: ``pip install -e '.[bench]'``.
"""
import json
import sys

#: The peers gipc is compared with, in the order the bars are drawn.
PEERS = [("mp", "multiprocessing"), ("pyref", "Python reference"),
         ("cref", "C reference"), ("crefspin", "C reference, spinning"),
         ("gipc18", "gipc 1.8")]


def speedups(records):
    """``[(label, {peer: speed-up})]`` from the benchmark's JSON records of
    gipc: a speed-up above 1 means gipc is faster (or stalls less) than
    that peer, whichever way the metric itself points."""
    rows = []
    for rec in records:
        if rec["implementation"] != "gipc" or rec["status"] != "ok":
            continue
        bars = {}
        for peer, _ in PEERS:
            ratio = rec["ratios"].get(peer)
            if ratio:
                bars[peer] = ratio if rec["higher_is_better"] else 1 / ratio
        if bars:
            rows.append(("%s %s" % (rec["case"], rec["label"]), bars))
    return rows


def require_matplotlib():
    """Import matplotlib for drawing without a screen, or exit saying how to
    install it."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("bench --plot needs matplotlib: "
                         "pip install -e '.[bench]'")
    matplotlib.use("Agg")


def draw(records, path, title="gipc relative to its peers"):
    """Write the bar chart of ``records`` (JSON records, as printed by
    ``python -m bench``) to ``path``."""
    require_matplotlib()
    from matplotlib import pyplot

    rows = speedups(records)
    if not rows:
        raise SystemExit("bench --plot: no gipc result with a ratio to plot")
    peers = [(key, name) for key, name in PEERS
             if any(key in bars for _, bars in rows)]
    height = 0.8 / len(peers)
    # A row per metric, as tall as its bars need (about 0.13 inch each).
    bar_inches = 0.13
    fig, ax = pyplot.subplots(
        figsize=(9, bar_inches * len(rows) * len(peers) + 1.5))
    for k, (key, name) in enumerate(peers):
        ys = [i + k * height for i in range(len(rows))]
        values = [bars.get(key, 0) for _, bars in rows]
        # Bars grow from 1 (as fast as the peer) towards the speed-up, so
        # that on the log scale a 2x win and a 2x loss look the same size.
        ax.barh(ys, [v - 1 if v else 0 for v in values], left=1,
                height=height, label=name)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))])
    ax.set_yticklabels([label for label, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("gipc speed-up over the peer (log scale; > 1: gipc is "
                  "better)")
    ax.set_title(title)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    pyplot.close(fig)


def read_records(lines):
    """The JSON records among ``lines`` (other lines are skipped)."""
    out = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def main(argv):
    if len(argv) != 2:
        raise SystemExit("usage: python -m bench.plot RUN.jsonl FILE.png|svg")
    with open(argv[0]) as f:
        draw(read_records(f), argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
