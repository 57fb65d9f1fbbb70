"""The "spawn" start method: a fresh interpreter runs the child.

The payload (``_spawn``) is pickled before anything else, so that what
cannot be sent raises before a process exists.  The child is started with
``posix_spawn`` (signals at their defaults, none blocked; C helper
``gipc._spawnc``, run in the hub's thread pool), inherits the
descriptors it is passed under their own numbers and closes every other
one first thing; the parent then writes the payload to it cooperatively.
It is watched as every popen watches its child (``_popen_base``): the
parent's own child, through its pidfd or a sentinel pipe.
"""
from __future__ import annotations

import os
from typing import Any

from . import _core, _popen_base, _spawn, _spawnc
from ._cooperate import close_fd
from ._popen_base import BasePopen, libev_reaps_children

# Off: posix_spawn on the calling thread (blocking the loop for the call).
_SPAWN_IN_THREAD = os.environ.get("GIPC_SPAWN_IN_THREAD", "1") != "0"


class _DupFd:
    """multiprocessing's handle of a descriptor sent to a spawn child
    (``Popen.duplicate_for_child``): the same number there."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def detach(self) -> int:
        """The descriptor, in the child."""
        return self.fd


def parent_sentinel() -> tuple[int, bool]:
    """A descriptor the child watches for this process's exit (its
    ``parent_process().sentinel``), and whether the caller closes it once
    the child has it: a pidfd of this process, or the read end of its
    lifeline pipe (see ``_popen_fork``)."""
    if _popen_base.USE_PIDFDS:
        return _core.pidfd_open(os.getpid()), True
    from . import _popen_fork
    return _popen_fork._lifeline_for_fork()[0], False


def _spawn_process(argv: list[str], fds: list[int]) -> int:
    """posix_spawn ``argv`` with ``fds`` inherited under their numbers,
    in a thread of the hub's pool: the call lasts until the child has
    exec'd, and the event loop runs meanwhile (the C helper releases the
    GIL).  Descriptors another start makes inheritable meanwhile may reach
    this child too: every child closes what it was not given first thing.
    """
    import gevent
    made_inheritable = []
    try:
        for fd in fds:
            if fd >= 0 and not os.get_inheritable(fd):
                os.set_inheritable(fd, True)
                made_inheritable.append(fd)
        path = os.fsencode(argv[0])
        args = [os.fsencode(a) for a in argv]
        env = [k + b"=" + v for k, v in os.environb.items()]
        hub = gevent.get_hub()
        if hub.threadpool is None or not _SPAWN_IN_THREAD:
            return _spawnc.spawn(path, args, env)
        return int(hub.threadpool.apply(_spawnc.spawn, (path, args, env)))
    finally:
        for fd in made_inheritable:
            os.set_inheritable(fd, False)


class Popen(BasePopen):
    """Spawn a fresh interpreter for ``process_obj`` and watch it from the
    hub.  The gipc handles in ``kept`` are passed to the child."""

    method = "spawn"
    DupFd = _DupFd
    _passed: list[int]

    def __init__(self, process_obj: Any, kept: Any = ()) -> None:
        # Everything that can fail for a bad target or argument fails here,
        # before the child exists.
        payload, passed = _spawn.start_payload(process_obj, kept, self)
        watch_status = libev_reaps_children()
        self._forked = [0, -1]
        data_r, data_w = os.pipe()
        to_close = [data_r]
        own_r = -1
        try:
            sentinel, close_it = parent_sentinel()
            if close_it:
                to_close.append(sentinel)
            if _popen_base.USE_PIDFDS:
                own_r, own_w = -1, -1
            else:
                own_r, own_w = os.pipe()
                to_close.append(own_w)
            fds = [data_r, sentinel, own_w, *passed]
            pid = _spawn_process(_spawn.interpreter_argv(fds), fds)
            self._forked[0] = pid
            self._forked[1] = (_core.pidfd_open(pid)
                               if _popen_base.USE_PIDFDS else own_r)
            own_r = -1
            self._watch(self._forked, watch_status)
            for fd in to_close:
                close_fd(fd)
            to_close = []
            os.set_blocking(data_w, False)
            fd, data_w = data_w, -1
            _spawn.write_payload(fd, payload)
        except BaseException:
            for fd in to_close + [data_w, own_r]:
                if fd >= 0:
                    _close_quietly(fd)
            self._abandon()
            raise

    def duplicate_for_child(self, fd: int) -> int:
        """multiprocessing's seam: ``fd`` goes to the child, under the
        same number."""
        _spawn.record_passed(self, fd)
        return fd


def _close_quietly(fd: int) -> None:
    try:
        close_fd(fd)
    except OSError:
        pass

