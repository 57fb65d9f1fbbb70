"""Load and soak scripts for gipc (issue 5): ``python -m stress [--quick]``.

Many children at once, many start/join cycles, gigabytes through one pipe;
the parent's open descriptors and resident memory are recorded at the start
and the end, and the run fails if either grew.
"""
