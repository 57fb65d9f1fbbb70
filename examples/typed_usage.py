"""gipc with type annotations: a program that ``mypy --strict`` accepts.

A parent sends jobs to a child over a pipe, collects word counts from a
queue, and lets a process pool square numbers, all typed end to end.

    python examples/typed_usage.py
    mypy --strict examples/typed_usage.py
"""
from __future__ import annotations

import sys

import gipc
from gipc.handles import _GIPCReader
from gipc.queues import Queue


def count_words(jobs: _GIPCReader, results: Queue) -> None:
    """Child: count the words of every text from ``jobs`` until None."""
    while True:
        text: str | None = jobs.get()
        if text is None:
            break
        results.put((text, len(text.split())))


def square(n: int) -> int:
    return n * n


def main() -> int:
    texts = ["a pipe between processes", "gevent keeps running", "typed"]
    results: Queue = gipc.Queue()
    with gipc.pipe() as (reader, writer):
        child = gipc.start_process(count_words, args=(reader, results))
        for text in texts:
            writer.put(text)
        writer.put(None)
        counts: dict[str, int] = {}
        for _ in texts:
            text, n = results.get(timeout=30)
            counts[text] = n
        child.join(30)
    results.close()
    if child.exitcode != 0 or counts != {t: len(t.split()) for t in texts}:
        print("unexpected result:", child.exitcode, counts)
        return 1

    with gipc.Pool(2) as pool:
        squares: list[int] = pool.map(square, range(10))
    if squares != [n * n for n in range(10)]:
        print("unexpected squares:", squares)
        return 1

    for text in texts:
        print("%-28r %d words" % (text, counts[text]))
    print("squares:", squares)
    print("typed usage: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
