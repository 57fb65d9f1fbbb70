"""Child processes: ``Process`` (the ``multiprocessing.Process`` API) and
``start_process()`` (gipc 1.8's entry point, returning a ``_GProcess``).

Both are ``multiprocessing.Process`` subclasses (as in gipc 1.8:
``isinstance(p, multiprocessing.Process)`` holds), so every method and
every rule of ``multiprocessing.Process`` holds; only the popen object
differs (chosen by start method in ``gipc._popen``): the fork popen forks
through gipc's C helper and gives the child a fresh gevent hub, and every
popen waits on the hub, so ``join()`` never blocks the event loop.
"""
from __future__ import annotations

import multiprocessing.util  # noqa: F401  (registers multiprocessing's
# exit handler, which terminates daemonic children and joins the others)
import os
import signal
import sys
import warnings
from multiprocessing import context as mp_context
from multiprocessing import process as mp_process
from typing import Any, Callable, Iterable, Mapping

from . import _log, _shared
from ._inherit import check_close_fds, check_pass_fds
from ._moves import collect_moved_handles, collect_shared_handles
from ._popen import check_method, popen_class

_modules = sys.modules

# The default of ``pass_fds`` (the empty tuple is a singleton: a caller's
# ``()`` is this object too).
_NO_FDS: tuple[int, ...] = ()


class Process(mp_context.Process):
    """A child process with the exact ``multiprocessing.Process`` API
    (``start``, ``run``, ``join``, ``is_alive``, ``exitcode``, ``pid``,
    ``name``, ``daemon``, ``terminate``, ``kill``, ``close``,
    ``sentinel``), whose waits are gevent-cooperative.

    gipc pipe handles and connections given directly in ``args`` or
    ``kwargs`` move to the child: usable there, closed in the parent once
    the child has started.  Those held directly as attributes of the
    process object (a subclass keeping its connection) are shared, as with
    multiprocessing: open in both.  Every other one is closed in the child.

    With ``close_fds=True``, the child keeps no other descriptor of the
    parent's: only stdin, stdout and stderr, the gipc handles (and queues,
    locks, shared values) given to it, the descriptors listed in
    ``pass_fds``, and what gipc needs there.  Under fork each other one is
    replaced by /dev/null (not closed) before the target runs, so that a
    stale object of the parent's (a socket object) never reaches a file the
    child opens later.  ``close_fds`` and ``pass_fds`` are keyword-only;
    every other argument is ``multiprocessing.Process``'s.
    """

    _start_method: str | None = None
    # What the child inherits (see __init__); class defaults for process
    # objects made without calling it (multiprocessing's own copies).
    _close_fds: bool = False
    _pass_fds: tuple[int, ...] = ()
    # multiprocessing.BaseProcess's private state (typeshed omits it).
    _popen: Any
    _parent_pid: int
    _target: Callable[..., object] | None
    _args: tuple[Any, ...]
    _kwargs: dict[str, Any]
    _sentinel: int
    _config: dict[str, Any]
    _name: str
    _closed: bool
    # start_process() objects have no attributes of the caller's: no need to
    # look (reading vars() of a process object costs its page a write).
    _shares_attribute_handles = True

    def __init__(self, group: None = None,
                 target: Callable[..., object] | None = None,
                 name: str | None = None, args: Iterable[Any] = (),
                 kwargs: Mapping[str, Any] = {}, *,
                 daemon: bool | None = None, close_fds: bool = False,
                 pass_fds: Iterable[int] = _NO_FDS) -> None:
        """As ``multiprocessing.Process``, plus ``close_fds`` (keep only
        the descriptors listed above in the child) and ``pass_fds`` (more
        descriptors the child keeps).

        :raises TypeError: ``close_fds`` is not a bool, or ``pass_fds`` not
            an iterable of ints.
        :raises ValueError: a number in ``pass_fds`` is negative.
        """
        if close_fds is False and pass_fds is _NO_FDS:
            # The usual start: the class defaults hold (two more instance
            # attributes and the checks' allocations are pages written on
            # every start).
            super().__init__(group, target, name, args, kwargs,
                             daemon=daemon)
            return
        close = check_close_fds(close_fds)
        passed = check_pass_fds(pass_fds)
        super().__init__(group, target, name, args, kwargs, daemon=daemon)
        self._close_fds = close
        self._pass_fds = passed

    @staticmethod
    def _Popen(process_obj: Any,
               kept: tuple[Any, ...] = ()) -> Any:
        """Start the child of ``process_obj`` with the popen of its start
        method (multiprocessing's seam) and return the popen.  The gipc
        handles in ``kept`` stay open in the child."""
        return popen_class(process_obj._start_method)(process_obj, kept)

    def start(self) -> None:
        """Start the child: fork, run ``self.run()`` there, and close the
        moved handles in the parent."""
        # multiprocessing's BaseProcess.start, with the moved handles
        # checked before the fork and closed after it.
        self._check_closed()  # type: ignore[attr-defined]  # BaseProcess's
        assert self._popen is None, "cannot start a process twice"
        assert self._parent_pid == os.getpid(), \
            "can only start a process object created by current process"
        assert not mp_process._current_process._config.get(  # type: ignore[attr-defined]
            "daemon"), \
            "daemonic processes are not allowed to have children"
        moved = collect_moved_handles(self._args, self._kwargs)
        shared = (collect_shared_handles(self, moved)
                  if self._shares_attribute_handles else ())
        mp_process._cleanup()  # type: ignore[attr-defined]
        # Asked before the fork: until the child is gone, every page the
        # parent writes is copied, so little runs after it (no call of
        # its own here, the moved handles' teardown left for later).
        logs = "logging" in _modules and _log.enabled()  # skips self.name
        try:
            popen = self._popen = self._Popen(self, moved + shared)
        finally:
            _shared.forget_given()
        self._sentinel = popen.sentinel
        # As multiprocessing: no reference cycle through the target.
        del self._target, self._args, self._kwargs
        mp_process._children.add(self)  # type: ignore[attr-defined]
        if logs:
            _log.debug("started %s, pid %d", self.name, popen.pid)
        if moved:
            # Closed in the parent now; under fork, the end of their
            # teardown waits until the child is gone (see
            # Endpoint._close_moved).
            later = []
            defer = popen.defers_moved_teardown
            for handle in moved:
                if not handle._closed:
                    if logs:
                        _log.debug("moved %r to pid %d", handle, popen.pid)
                    if not defer:
                        handle.close()
                    elif handle._close_moved(logs):
                        later.append(handle)
            if later:
                popen._moved = later  # see BasePopen._release_start


def _status(process: Process) -> str:
    """The state word of gipc 1.8's repr."""
    if process._closed:
        return "closed"
    if process._popen is None:
        return "initial"
    if process._parent_pid != mp_process.current_process().pid:
        return "unknown"
    code = process._popen.poll()
    if code is None:
        return "started"
    if code == 0:
        return "stopped"
    if code < 0:
        try:
            return "stopped[%s]" % signal.Signals(-code).name
        except ValueError:
            pass
    return "stopped[%s]" % code


class _GProcess(Process):
    """The process object of :func:`start_process` (gipc 1.8's name): a
    :class:`Process` that is already started; a second ``start()`` only
    warns."""

    _shares_attribute_handles = False

    def start(self) -> None:
        """Start the child; warn and do nothing if it was started."""
        if self._popen is not None:
            warnings.warn("Redundant call to %r.start(): the process is "
                          "already started" % self, RuntimeWarning,
                          stacklevel=2)
            return
        super().start()

    def __repr__(self) -> str:
        return "<%s(%s, %s%s)>" % (
            type(self).__name__, self._name, _status(self),
            " daemon" if self._config.get("daemon") else "")

    __str__ = __repr__


def start_process(target: Callable[..., object], args: tuple[Any, ...] = (),
                  kwargs: dict[str, Any] = {},
                  daemon: bool | None = None,
                  name: str | None = None, *, close_fds: bool = False,
                  pass_fds: Iterable[int] = _NO_FDS,
                  start_method: str | None = None) -> _GProcess:
    """Start a child process running ``target(*args, **kwargs)`` and return
    its :class:`_GProcess` (the ``multiprocessing.Process`` API, started).

    gipc handles (and duplex handles) given directly as ``args`` or
    ``kwargs`` values move to the child: they are usable there and closed in
    the parent right after the fork.  Every other gipc handle is closed in
    the child.  The child starts with a fresh gevent hub: no greenlet of the
    parent runs there, every signal except SIGKILL, SIGSTOP and SIGPIPE is
    back at its default disposition, and it exits with ``os._exit`` and
    multiprocessing's exit codes.

    With ``close_fds=True`` the child keeps only stdin, stdout, stderr, the
    handles it is given, the descriptors in ``pass_fds`` and what gipc
    needs; every other descriptor is replaced by /dev/null there before
    ``target`` runs (see :class:`Process`).

    ``start_method`` is "fork", "spawn" or "forkserver" (see
    :func:`gipc.get_context`); None: gipc's default
    (:func:`gipc.get_start_method`).  Under spawn and forkserver the target
    and arguments are pickled, and a failure raises before any child
    exists.

    :raises TypeError: ``args`` is not a tuple or ``kwargs`` not a dict;
        ``close_fds`` is not a bool or ``pass_fds`` not an iterable of ints.
    :raises ValueError: a number in ``pass_fds`` is negative; gipc has no
        such start method.
    :raises GIPCClosed, GIPCLocked, GIPCError: a handle cannot move (closed,
        in use, foreign, or hidden in a container); nothing was forked.
    :raises OSError: fork() failed, or a ``close_fds`` child could not
        replace a descriptor (it did not run); the handles stay usable in
        the parent.
    """
    if not isinstance(args, tuple):
        raise TypeError("`args` must be a tuple.")
    if not isinstance(kwargs, dict):
        raise TypeError("`kwargs` must be a dictionary.")
    if not callable(target):
        raise TypeError("`target` must be callable, not %s"
                        % type(target).__name__)
    process = _GProcess(target=target, name=name, args=args, kwargs=kwargs,
                        close_fds=close_fds, pass_fds=pass_fds)
    if start_method is not None:
        process._start_method = check_method(start_method)
    if daemon is not None:
        process.daemon = daemon
    process.start()
    return process
