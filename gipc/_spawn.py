"""What the "spawn" and "forkserver" start methods share: the child's
payload, built and checked in the parent, and the child's side, which
reads it and runs the target in a fresh interpreter (spawn) or a fresh fork
of the forkserver.

The payload is two pickles on one pipe: first the preparation (the
parent's ``sys.path``, ``sys.argv``, working directory, authkey and how
to find its ``__main__``, as multiprocessing's spawn does), then the
process object itself, target and arguments included.  The second one is
only loaded once ``__main__`` is set up, so that a target defined in the
parent's main script is found.

gipc endpoints in the process object travel as descriptors the child
inherits: the pickle holds the index of the descriptor in the list the
child receives, and a recipe to rebuild the endpoint around it.  Any other
descriptor is closed in the child before anything else happens.
"""
from __future__ import annotations

import io
import os
import pickle
import sys
from multiprocessing import context as mp_context
from multiprocessing import process as mp_process
from multiprocessing.reduction import ForkingPickler
from multiprocessing.util import _flush_std_streams  # type: ignore[attr-defined]
from typing import Any

from ._cooperate import close_fd
from ._sync import Block, Memory
from .exceptions import GIPCError

#: The child's descriptor list begins with these (then the passed ones):
#: the payload pipe's read end, the parent's sentinel (its pidfd, or the
#: read end of its lifeline), and the write end of the child's own
#: sentinel pipe (or -1 where the parent watches a pidfd).
DATA, PARENT_SENTINEL, OWN_SENTINEL = 0, 1, 2
FIRST_PASSED = 3


class StartError(GIPCError, pickle.PicklingError):
    """What a spawn or forkserver child needs cannot be sent to it (no
    child was started).  Also a ``pickle.PicklingError``, as
    multiprocessing raises."""


# -- parent side -----------------------------------------------------------

def _main_module_info() -> Any:
    """How the child finds the parent's ``__main__``, by multiprocessing's
    rules: by module name if it was run with ``-m`` (not a package's
    ``__main__``), else by the path of its script; None if it has neither
    (interactive, ``-c``)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name is not None:
        if name == "__main__" or name.endswith(".__main__"):
            return None
        return ("name", name)
    path = getattr(main, "__file__", None)
    if path is None or os.path.basename(path).startswith("ipython"):
        return None
    return ("path", os.path.abspath(path))


def check_importable(target: Any, what: str = "target") -> None:
    """A target (or a function for a pool's workers: ``what``) defined in
    a ``__main__`` the child cannot import again (an interactive session,
    ``python -c``) pickles fine but cannot be found in the child: refuse
    it here, before any child or task exists."""
    if getattr(target, "__module__", None) == "__main__" and \
            _main_module_info() is None:
        raise StartError(
            "the %s %r is defined in __main__, which a spawn or "
            "forkserver child cannot import (the program runs "
            "interactively or from -c); define it in a module"
            % (what, getattr(target, "__qualname__", target)))


class _Pickler(ForkingPickler):
    """Pickles a process object as multiprocessing's spawn does (its
    reducers for connections, sockets and locks), except that gipc
    endpoints become indices into the child's descriptor list (see
    :func:`build_payload`)."""

    def __init__(self, file: Any, kept: Any, fds: list[int]) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._kept = kept
        self._fds = fds
        self._shared_seen: dict[int, Any] = {}
        ctypes_module = sys.modules.get(__package__ + ".sharedctypes")
        self._ctypes_memory = getattr(ctypes_module, "reduce_for_child", None)

    def _fd_index(self, fd: int) -> int:
        if fd not in self._fds:
            self._fds.append(fd)
        return FIRST_PASSED + self._fds.index(fd)

    def persistent_id(self, obj: Any) -> Any:  # noqa: C901
        from ._shared import SharedObject
        from ._stream import Endpoint
        from .handles import _GIPCDuplexHandle
        if isinstance(obj, _GIPCDuplexHandle):
            return ("duplex", self.persistent_id(obj._reader),
                    self.persistent_id(obj._writer))
        if isinstance(obj, Endpoint):
            if obj not in self._kept:
                raise StartError(
                    "%r is not passed to the child directly (in args, "
                    "kwargs or as a Process attribute), so a spawn or "
                    "forkserver child cannot get it; pass it as an "
                    "argument of its own" % (obj,))
            return ("endpoint", self._fd_index(obj._fd), _recipe(obj))
        if isinstance(obj, SharedObject):
            return self._shared(obj)
        if type(obj) is Block:
            return ("block", obj.bells, obj.capacity,
                    [self._fd_index(fd) for fd in obj.fds()])
        if type(obj) is Memory:
            if obj.fd < 0:
                raise StartError("shared memory closed in this process "
                                 "cannot be sent to a child")
            return ("memory", self._fd_index(obj.fd), obj.size)
        if self._ctypes_memory is not None:
            shared = self._ctypes_memory(obj)
            if shared is not None:
                return ("ctypes", *shared)  # the Memory: see above
        return None

    def _shared(self, obj: Any) -> Any:
        """A queue, lock or shared value: its state, whose memory and bells
        travel as descriptors (the child maps the same memory)."""
        from . import _shared
        key = id(obj)
        if key in self._shared_seen:
            return ("shared-again", key)
        given = _shared._given
        if given is not None and key not in given:
            # As under fork, where such an object is disowned in the child.
            raise StartError(
                "%r is not passed to the child directly (in args, kwargs, "
                "a list, tuple, set or dict there, or as a Process "
                "attribute), so a spawn or forkserver child cannot get it; "
                "pass it as an argument of its own" % (obj,))
        if isinstance(obj.__dict__.get("_block"), _shared._Unusable):
            raise StartError("%r cannot be sent to a child: it is closed or "
                             "not usable in this process" % (obj,))
        self._shared_seen[key] = obj  # alive (its id unique) until done
        return ("shared", key, type(obj), dict(vars(obj)))


def _recipe(endpoint: Any) -> Any:
    """What the child needs to rebuild ``endpoint`` around its descriptor
    (a picklable tuple)."""
    from .connection import Connection
    from .handles import _GIPCReader, _GIPCWriter
    if isinstance(endpoint, Connection):
        return ("connection", endpoint._readable, endpoint._writable)
    if isinstance(endpoint, _GIPCReader):
        return ("reader", endpoint._decoder, endpoint._core.max_size)
    if isinstance(endpoint, _GIPCWriter):
        return ("writer", endpoint._encoder, endpoint._may_grow)
    raise StartError("cannot pass %r to a spawn or forkserver child"
                     % (endpoint,))


def preparation(process_obj: Any = None) -> dict[str, Any]:
    """The parent's state a child recreates before loading its process
    object (multiprocessing's spawn preparation data)."""
    current = mp_process.current_process()
    return {
        "name": current.name,
        "parent_pid": os.getpid(),
        "authkey": bytes(current.authkey),
        "sys_path": list(sys.path),
        "sys_argv": list(sys.argv),
        "dir": os.getcwd(),
        "main": _main_module_info(),
        "start_method": getattr(process_obj, "_start_method", None),
    }


def start_payload(process_obj: Any, kept: Any,
                  popen: Any) -> tuple[bytes, list[int]]:
    """What a pickling start method (spawn, forkserver) does before its
    child exists: refuse a start where none may happen, pickle the child's
    payload (:func:`build_payload`: every failure for a bad target or
    argument raises here), and flush the standard streams, which the child
    would otherwise write again."""
    check_can_start()
    popen._passed = []
    payload = build_payload(process_obj, kept, popen)
    _flush_std_streams()
    return payload


def record_passed(popen: Any, fd: int) -> int:
    """Record ``fd`` as one of the descriptors ``popen``'s child receives
    (multiprocessing's ``duplicate_for_child`` seam); its index among
    them."""
    if fd not in popen._passed:
        popen._passed.append(fd)
    return int(popen._passed.index(fd))


def build_payload(process_obj: Any, kept: Any, popen: Any,
                  ) -> tuple[bytes, list[int]]:
    """Pickle what the child of ``process_obj`` needs; return the payload
    and the descriptors the child must receive (after the three of
    :data:`FIRST_PASSED`).

    :raises StartError: something could not be pickled; the message names
        it (the target, an argument, a handle not passed directly).
    """
    target = getattr(process_obj, "_target", None)
    if target is not None:
        check_importable(target)
    fds: list[int] = popen._passed
    # The descriptors of ``pass_fds`` (gipc.Process's ``_pass_fds``) go
    # first, each to be open under its own number in the child.
    pass_fds = []
    for fd in getattr(process_obj, "_pass_fds", ()):
        if fd not in fds:
            fds.append(fd)
        pass_fds.append((FIRST_PASSED + fds.index(fd), fd))
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, kept, fds)
    # multiprocessing's objects (its authkey, connections, locks) pickle
    # for a child only while a popen is "spawning".
    mp_context.set_spawning_popen(popen)
    try:
        prep = preparation(process_obj)
        prep["pass_fds"] = pass_fds
        pickle.dump(prep, buffer, pickle.HIGHEST_PROTOCOL)
        pickler.dump(process_obj)
    except StartError:
        raise
    except Exception as exc:
        raise StartError(_what_failed(process_obj, kept, popen, exc)) \
            from exc
    finally:
        mp_context.set_spawning_popen(None)
    return buffer.getvalue(), fds


def _what_failed(process_obj: Any, kept: Any, popen: Any,
                 exc: BaseException) -> str:
    """Name the part of ``process_obj`` that could not be pickled."""
    parts = [("the target", getattr(process_obj, "_target", None))]
    parts += [("argument %d" % i, a)
              for i, a in enumerate(getattr(process_obj, "_args", ()))]
    parts += [("keyword argument %r" % k, v)
              for k, v in getattr(process_obj, "_kwargs", {}).items()]
    for label, value in parts:
        try:
            _Pickler(io.BytesIO(), kept, []).dump(value)
        except Exception as part_exc:
            return ("cannot send %s (%r) to a spawn or forkserver child: "
                    "%s: %s" % (label, value, type(part_exc).__name__,
                                part_exc))
    return ("cannot send the process object %r to a spawn or forkserver "
            "child: %s: %s" % (process_obj, type(exc).__name__, exc))


def interpreter_argv(fds: list[int], entry: str = "_spawn:spawn_main",
                     ) -> list[str]:
    """The command line of a fresh interpreter (a spawn child, the
    forkserver) with this one's flags, running ``entry`` (``module:function``
    in gipc), which finds the descriptors ``fds`` in ``sys.argv[1]``."""
    import subprocess
    home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    module, function = entry.split(":")
    code = ("import sys; sys.path.insert(0, %r); "
            "from gipc.%s import %s; %s()" % (home, module, function,
                                                function))
    return [sys.executable,
            *subprocess._args_from_interpreter_flags(),  # type: ignore[attr-defined]
            "-c", code, ",".join(map(str, fds))]


# -- child side ------------------------------------------------------------

def close_all_but(keep: Any) -> None:
    """Close every descriptor from 3 up but those in ``keep``."""
    low = 3
    for fd in sorted(fd for fd in set(keep) if fd >= 3):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _max_fd())


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 65536


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, True)
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    close_fd(fd)
    return b"".join(chunks)


class _Unpickler(pickle.Unpickler):
    """Rebuilds the gipc endpoints of the payload around the descriptors
    this child received."""

    def __init__(self, file: Any, fds: list[int]) -> None:
        super().__init__(file)
        self._fds = fds
        self._made: dict[Any, Any] = {}
        self._taken: set[int] = set()

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0]
        if kind == "duplex":
            from .handles import _GIPCDuplexHandle
            return _GIPCDuplexHandle((self.persistent_load(pid[1]),
                                      self.persistent_load(pid[2])))
        if kind == "shared":
            _, key, cls, state = pid
            obj = cls.__new__(cls)
            obj.__dict__.update(state)
            obj._register()
            self._made[("shared", key)] = obj
            return obj
        if kind == "shared-again":
            return self._made[("shared", pid[1])]
        if kind == "block":
            _, bells, capacity, indices = pid
            return Block._attach(bells, capacity,
                                 [self._take(i) for i in indices])
        if kind == "memory":
            return Memory._attach(self._take(pid[1]), pid[2])
        if kind == "ctypes":
            from .sharedctypes import attach
            return attach(pid[1], pid[2])
        _, index, recipe = pid
        made = self._made.get(index)
        if made is None:
            made = self._made[index] = _rebuild(self._fds[index], recipe)
        return made

    def _take(self, index: int) -> int:
        """The descriptor at ``index``, for an object that owns it from now
        on (a duplicate if another one took it already)."""
        fd = self._fds[index]
        if index in self._taken:
            return os.dup(fd)
        self._taken.add(index)
        return fd


def _rebuild(fd: int, recipe: Any) -> Any:
    from .connection import Connection
    from .handles import _GIPCReader, _GIPCWriter
    kind = recipe[0]
    if kind == "connection":
        return Connection(fd, recipe[1], recipe[2])
    if kind == "reader":
        return _GIPCReader(fd, recipe[1], recipe[2])
    writer = _GIPCWriter(fd, recipe[1])
    writer._may_grow = recipe[2]
    return writer


def _prepare(data: dict[str, Any]) -> None:
    """Recreate the parent's state (multiprocessing's spawn.prepare)."""
    mp_process.current_process().name = data["name"]
    mp_process.current_process().authkey = data["authkey"]
    sys.path[:] = data["sys_path"]
    sys.argv[:] = data["sys_argv"]
    try:
        os.chdir(data["dir"])
    except OSError:
        pass
    main = data["main"]
    if main is not None:
        _fixup_main(*main)


def _fixup_main(kind: str, where: str) -> None:
    """Run the parent's main module as ``__mp_main__`` and make it
    ``__main__`` too, so that what the parent pickled from its main module
    is found (its ``if __name__ == "__main__":`` block does not run)."""
    import runpy
    import types
    current = sys.modules.get("__main__")
    if kind == "path" and getattr(current, "__file__", None) == where:
        return  # already there (a forkserver child)
    if kind == "name" and getattr(getattr(current, "__spec__", None),
                                  "name", None) == where:
        return
    from . import _popen
    module = types.ModuleType("__mp_main__")
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module
    _popen.importing_main = True
    try:
        if kind == "name":
            found = runpy.run_module(where, run_name="__mp_main__",
                                     alter_sys=True)
        else:
            found = runpy.run_path(where, run_name="__mp_main__")
    finally:
        _popen.importing_main = False
    module.__dict__.update(found)


#: In a child: the descriptors it received (multiprocessing's objects
#: find theirs here by index, see ``_popen_forkserver``).
received_fds: list[int] = []


def child_main(fds: list[int], kind: str) -> None:
    """Run the child described by the payload on ``fds[DATA]`` and exit
    with multiprocessing's exit code; ``kind`` is the start method."""
    code = 1
    try:
        close_all_but(fds)
        # As a fork child: SIGINT at its default (the interpreter installed
        # KeyboardInterrupt's handler).
        import signal
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        stream = io.BytesIO(_read_all(fds[DATA]))
        data = pickle.load(stream)
        pass_fds = data["pass_fds"]
        _install_pass_fds(fds, pass_fds)
        received_fds[:] = fds
        parent_sentinel = fds[PARENT_SENTINEL]
        if fds[OWN_SENTINEL] >= 0:
            # Held for our whole life; our own children must not keep it.
            os.set_inheritable(fds[OWN_SENTINEL], False)
            from . import _popen_fork
            _popen_fork._own_sentinel = fds[OWN_SENTINEL]
        passed_through = {index for index, _ in pass_fds}
        for index in range(FIRST_PASSED, len(fds)):
            if index not in passed_through:
                os.set_inheritable(fds[index], False)
        os.set_inheritable(parent_sentinel, False)
        _prepare(data)
        process_obj = _Unpickler(stream, fds).load()
        code = _run(process_obj, data, parent_sentinel)
    except BaseException:
        import traceback
        try:
            sys.stderr.write("gipc: %s child process failed to start:\n"
                             % kind)
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        _flush()
        os._exit(code)


def _install_pass_fds(fds: list[int], pass_fds: Any) -> None:
    """Put each descriptor of ``pass_fds`` (``(index in fds, number)``
    pairs) under its number, as the parent has it (a forkserver child
    receives them under other numbers); ``fds`` is updated in place."""
    targets = {target for _, target in pass_fds}
    if not targets:
        return
    import fcntl
    above = max(targets) + 1
    in_place = {index for index, target in pass_fds if fds[index] == target}
    for index, fd in enumerate(fds):
        if fd in targets and index not in in_place:
            fds[index] = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, above)
            close_fd(fd)
    for index, target in pass_fds:
        if fds[index] != target:
            os.dup2(fds[index], target, inheritable=True)
            close_fd(fds[index])
            fds[index] = target


def _run(process_obj: Any, data: dict[str, Any], parent_sentinel: int) -> Any:
    from . import _bootstrap
    from ._devnull import shared_devnull
    if sys.stdin is not None:
        sys.stdin = shared_devnull()  # as with fork: fd 0 stays as it is
    prepared = _bootstrap.Prepared((data["name"], data["parent_pid"]))
    return _bootstrap.bootstrap(process_obj, prepared, parent_sentinel)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


def spawn_main() -> None:
    """The entry point of a spawn child (see :func:`interpreter_argv`)."""
    child_main([int(fd) for fd in sys.argv[1].split(",")], "spawn")


def check_can_start() -> None:
    """Raise GIPCError where a spawn or forkserver child cannot start (no
    warning about other threads: nothing is forked from this process)."""
    import gevent
    if sys.is_finalizing():
        raise GIPCError("cannot start a child process during interpreter "
                        "shutdown")
    if gevent.getcurrent() is gevent.get_hub():
        raise GIPCError("cannot start a child process from the gevent hub "
                        "greenlet (e.g. in a watcher callback); spawn a "
                        "greenlet for it")


def write_payload(fd: int, payload: bytes) -> None:
    """Write ``payload`` to the non-blocking pipe ``fd`` cooperatively and
    close it.  A child that died before reading it all (its exit code
    tells) is not an error of the start."""
    from ._cooperate import WRITE, FdWaiter
    view = memoryview(payload)
    waiter = FdWaiter(fd, WRITE)
    try:
        if len(view) > 65536:
            from . import _pipesize
            _pipesize.set_size(fd, min(len(view), 1 << 20))
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                waiter.wait()
            except BrokenPipeError:
                break
    finally:
        waiter.close()
        close_fd(fd)
