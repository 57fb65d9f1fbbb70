"""The signals whose disposition a child gets back at its default.

As in gipc 1.8, every signal except SIGKILL and SIGSTOP (which cannot be
changed) and SIGPIPE (left ignored, as CPython sets it, so that a closed
pipe is an exception rather than death).  "Every signal" is every signal
number the C library lets programs use (``signal.valid_signals()``), the
unnamed real-time ones included; the few that glibc reserves for itself are
not in that set and keep their handlers.
"""
import signal

_signals_to_reset = sorted(
    int(s) for s in signal.valid_signals()
    if 0 < int(s) < signal.NSIG
    and s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE))
