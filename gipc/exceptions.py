"""The exceptions gipc raises (the names and hierarchy of gipc 1.8)."""
from __future__ import annotations


class GIPCError(Exception):
    """Base class of gipc's own errors: misuse of a handle or a process."""


class GIPCClosed(GIPCError):
    """The handle is closed (or was moved to a child process)."""


class GIPCLocked(GIPCError):
    """The handle cannot be closed: another greenlet is inside ``get()``
    or ``put()`` on it."""


class GIPCProtocolError(GIPCError, OSError):
    """The byte stream of a pipe cannot be trusted any more.

    Raised for a message larger than ``max_message_size``, a corrupt header,
    a pipe closed in the middle of a message, or a ``put()`` interrupted
    half-way through a message.  The handle is then marked broken and every
    later call on it raises this error again, naming the original cause.
    Being an ``OSError`` too, it keeps the ``errno`` of the cause
    (``EMSGSIZE``, ``EPROTO``).
    """


class WorkerLostError(GIPCError):
    """A pool worker died (a crash, ``os._exit()``, a signal, the OOM
    killer) while running the task; only that task fails.

    ``exitcode`` is the worker's exit code (``-N``: killed by signal N),
    or None if unknown.
    """

    def __init__(self, message: str, exitcode: int | None = None) -> None:
        GIPCError.__init__(self, message)
        self.exitcode = exitcode

    def __reduce__(self) -> tuple[type[WorkerLostError], tuple[str, int | None]]:
        return type(self), (self.args[0], self.exitcode)
