"""The signals whose disposition a child gets back at its default.

As in gipc 1.8: every signal the platform names, except SIGKILL and SIGSTOP
(which cannot be changed) and SIGPIPE (left ignored, as CPython sets it, so
that a closed pipe is an exception rather than death).
"""
import signal

_signals_to_reset = sorted({
    int(value) for name, value in vars(signal).items()
    if name.startswith("SIG") and not name.startswith("SIG_")
    and name not in ("SIGKILL", "SIGSTOP", "SIGPIPE")
    and 0 < int(value) < signal.NSIG
})
