"""gipc benchmark suite (issue 4).

Run from the repository root (the C extension built in place, or gipc
installed)::

    python -m bench                  # full run, 5 repetitions (a few minutes)
    python -m bench --quick          # CI: small counts, < 1 minute
    python -m bench --with-gipc18    # also gipc 1.8 from PyPI (own venv)
    python -m bench --cases 1,3b --reps 3 --json-only
    python -m bench --with-gipc18 --save-md bench/RESULTS.md

Every case runs a real parent and a real child process for each
implementation side by side: gipc (this tree), multiprocessing.Pipe +
Process (fork context), a C reference (bench/cref.c, compiled with gcc -O2
into bench/out/ at run time), a Python reference (os.fork + os.pipe,
blocking I/O; pyrefgipc: the same in a process that imported gipc, the
floor of case 5), gipc with its fairness slice off (gipcgreedy: the
throughput reference of the loop-stall cases) and optionally gipc 1.8.
Each (case, repetition,
implementation) runs in a fresh worker process (bench/worker.py) under a
timeout that kills its whole process group; implementations are
interleaved within each repetition.  Every message is checked (count, size,
content); a transfer that is not intact, a crash or a timeout makes the run
exit with status 1.  The targets of issues 4 and 12 are reported as MET /
MISSED and never enforced.

Every Python worker imports gevent and starts its hub before its case, the
blocking implementations too: that is the process a gevent application
forks, and forking it costs more than forking a bare interpreter (page
tables to copy, pages to copy on write), which matters in case 5.
``--bare-refs`` runs multiprocessing and the Python reference in a bare
interpreter instead.

Layout: cases.py (what is measured, targets), scenarios.py (the parent and
child code of every case, shared by the Python implementations),
impl_gipc.py / impl_gipc18.py / impl_mp.py / impl_pyref.py / impl_cref.py +
cref.c (the implementations), worker.py (one measurement), runner.py
(command line, orchestration), report.py (table, JSON lines, Markdown).

Worker processes import nothing here at package import time: in the gipc
1.8 venv, ``import gipc`` must find gipc 1.8.
"""
