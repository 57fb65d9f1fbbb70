"""Contexts: gipc's API bound to one start method, in the shape of
``multiprocessing.context``.

``gipc.get_context("spawn")`` returns the context of the "spawn" method:
its ``Process`` and ``start_process`` start children that way; its
``Pipe``, ``pipe``, queues, locks and shared values are gipc's own (they
do not depend on the method).  ``gipc.get_context()`` is the default
context, whose start method :func:`set_start_method` chooses: gipc's
default only, ``multiprocessing``'s is never touched.

The pools of a context (``ctx.Pool(...)``, ``ctx.ProcessPoolExecutor(...)``)
start their workers by its method; ``gipc.Pool`` itself forks them unless
given ``context=``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from . import _popen
from .process import Process, _GProcess, start_process


class ForkProcess(Process):
    """A :class:`gipc.Process` started with the "fork" method."""

    _start_method = "fork"


class SpawnProcess(Process):
    """A :class:`gipc.Process` started with the "spawn" method (a fresh
    interpreter; target and arguments travel pickled)."""

    _start_method = "spawn"


class ForkServerProcess(Process):
    """A :class:`gipc.Process` started with the "forkserver" method (forked
    by gipc's forkserver; target and arguments travel pickled)."""

    _start_method = "forkserver"


_PROCESS_CLASSES: dict[str, type[Process]] = {
    "fork": ForkProcess, "spawn": SpawnProcess,
    "forkserver": ForkServerProcess}


class BaseContext:
    """gipc's API with one start method (see the module docstring).

    Attributes resolve as ``gipc``'s do: ``ctx.Queue``, ``ctx.Lock``,
    ``ctx.Value``, ... are gipc's.
    """

    _name: str | None = None

    # What every context offers as it is (independent of the method).
    _SHARED_NAMES = frozenset({
        "Pipe", "pipe", "Connection", "wait", "current_process",
        "parent_process", "active_children", "Queue", "SimpleQueue",
        "JoinableQueue", "Lock", "RLock", "Semaphore", "BoundedSemaphore",
        "Event", "Condition", "Barrier", "Value", "Array", "RawValue",
        "RawArray", "GIPCError", "GIPCClosed", "GIPCLocked",
        "GIPCProtocolError"})
    # Offered with this context's start method bound (as their context=,
    # mp_context= argument).
    _POOL_NAMES = {"Pool": "context", "ProcessPoolExecutor": "mp_context"}

    def get_start_method(self, allow_none: bool = False) -> str:
        """This context's start method."""
        assert self._name is not None
        return self._name

    def get_all_start_methods(self) -> list[str]:
        """The start methods gipc has, the default first."""
        return _popen.start_methods()

    def get_context(self, method: str | None = None) -> BaseContext:
        """The context of ``method`` (None: the default context)."""
        return get_context(method)

    @property
    def Process(self) -> type[Process]:
        """The process class of this context's start method."""
        return _PROCESS_CLASSES[self._method()]

    def _method(self) -> str:
        method = self.get_start_method()
        assert method is not None
        return method

    def start_process(self, target: Callable[..., object],
                      args: tuple[Any, ...] = (),
                      kwargs: dict[str, Any] | None = None,
                      daemon: bool | None = None,
                      name: str | None = None) -> _GProcess:
        """:func:`gipc.start_process` with this context's start method."""
        return start_process(target, args, {} if kwargs is None else kwargs,
                             daemon, name,
                             start_method=self._method())

    def __getattr__(self, name: str) -> Any:
        import gipc
        keyword = self._POOL_NAMES.get(name)
        if keyword is not None:
            pool_class = getattr(gipc, name)
            if self._method() == "fork":
                return pool_class  # gipc 1.8's Pool: forked workers
            return functools.partial(pool_class, **{keyword: self})
        if name not in self._SHARED_NAMES:
            raise AttributeError("%s has no attribute %r"
                                 % (type(self).__name__, name))
        return getattr(gipc, name)

    def __repr__(self) -> str:
        return "<gipc context %r>" % self._name


class Context(BaseContext):
    """The context of one start method."""

    def __init__(self, method: str) -> None:
        self._name = _popen.check_method(method)


class DefaultContext(BaseContext):
    """The default context: its start method is gipc's default, which
    :meth:`set_start_method` chooses."""

    def get_start_method(self, allow_none: bool = False) -> str | None:  # type: ignore[override]
        """gipc's default start method; None with ``allow_none`` while
        :meth:`set_start_method` was not called (as multiprocessing)."""
        if allow_none and not _set_explicitly:
            return None
        return _popen.default_start_method()

    @property
    def Process(self) -> type[Process]:
        """:class:`gipc.Process`: its start method is the default at the
        time of ``start()``."""
        return Process

    def set_start_method(self, method: str | None,
                         force: bool = False) -> None:
        """Make ``method`` gipc's default start method (None: back to
        "fork").  As with multiprocessing, a second call needs
        ``force=True``; ``multiprocessing``'s default is left alone.

        :raises ValueError: gipc has no such start method.
        :raises RuntimeError: the start method was set already.
        """
        global _set_explicitly
        if method is not None:
            _popen.check_method(method)
        if _set_explicitly and not force:
            raise RuntimeError("gipc's start method has already been set")
        if method is None:
            _popen.set_default_start_method("fork")
            _set_explicitly = False
        else:
            _popen.set_default_start_method(method)
            _set_explicitly = True

    def __repr__(self) -> str:
        return "<gipc default context (%r)>" % self.get_start_method()


_set_explicitly = False
_contexts = {name: Context(name) for name in _popen.START_METHODS}

#: The default context (``gipc.get_context()``).
default_context = DefaultContext()


def get_context(method: str | None = None) -> BaseContext:
    """The context of the start method ``method``: "fork", "spawn" or
    "forkserver"; None: the default context.

    :raises ValueError: gipc has no such start method.
    """
    if method is None:
        return default_context
    return _contexts[_popen.check_method(method)]


def get_start_method(allow_none: bool = False) -> str | None:
    """gipc's default start method ("fork" unless
    :func:`set_start_method` changed it; None with ``allow_none`` while it
    was not set)."""
    return default_context.get_start_method(allow_none)


def set_start_method(method: str | None, force: bool = False) -> None:
    """Change gipc's default start method (see
    :meth:`DefaultContext.set_start_method`)."""
    default_context.set_start_method(method, force)


def get_all_start_methods() -> list[str]:
    """The start methods gipc has, the default first."""
    return _popen.start_methods()



def pool_start_method(context: Any, argument: str) -> str:
    """The start method of a pool's workers given its ``context`` argument
    (``argument`` names it in errors): a gipc context, a
    ``multiprocessing`` one (the gipc method of the same name), or None
    ("fork", as gipc 1.8's pools)."""
    if context is None:
        return "fork"
    get_method = getattr(context, "get_start_method", None)
    if get_method is None:
        raise TypeError("%s must be a gipc or multiprocessing context, not "
                        "%r" % (argument, context))
    method = get_method()
    if method not in _popen.START_METHODS:
        raise ValueError("%s: gipc has no start method %r" % (argument,
                                                             method))
    return method  # type: ignore[no-any-return]
