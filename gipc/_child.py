"""The child side of a fork: a clean gevent world, then the target.

Runs in the child right after the C fork helper returned there (signals are
already back at their defaults at the C level).  Nothing of the parent's
gevent state may run here: the parent's hub is parked for good and a fresh
hub with a fresh loop takes its place.  The child always ends in
``os._exit``; it never returns into the parent's stack.

Every page a child writes costs it a copy-on-write fault (several
microseconds each on a virtual machine), and every Python function it calls
writes at least the pages of the function and of its code object.  So the
parent works out everything it can before the fork (:class:`ChildPlan`),
and the child runs one short sequence of steps.  That code never runs in
the parent, so CPython never specializes it: each ``module.attribute`` it
reads writes to the name, the module and its dict as well, which is why
the functions it calls are imported by name here.
"""
from __future__ import annotations

from typing import Any
import _signal  # type: ignore[import-not-found]  # CPython's C half of signal
import sys
import traceback
from _signal import SIG_DFL
from _signal import set_wakeup_fd as _set_wakeup_fd
from _signal import signal as _set_signal
from gc import enable as _enable_gc
from gc import freeze as _freeze_gc
from gc import isenabled as _gc_isenabled
from os import _exit
from multiprocessing import process as mp_process
from multiprocessing.util import _flush_std_streams  # type: ignore[attr-defined]

from gevent._hub_local import (
    get_hub_class, get_hub_if_exists, get_loop, set_hub, set_loop)

from . import _bootstrap, _log, _ownership
from ._devnull import shared_devnull
from .exceptions import GIPCError
from .signals import _signals_to_reset

# Bound here, as the functions are (see above).
_run_bootstrap = _bootstrap.bootstrap
_process_vars = vars(mp_process)
_ownership_vars = vars(_ownership)  # its all_handles may be rebound
_sys_vars = vars(sys)

# What else of the parent's must stay referenced for the life of the child
# (the watchers and handles it takes over; the hub, loop and stdin are held
# by run()'s frame): if they were collected, greenlet would throw
# GreenletExit into the parent's greenlets and run their code here.
_parked: list[Any] = []


def park(obj: Any) -> None:
    """Keep ``obj`` (something of the parent's) referenced for the life of
    this child, so that collecting it never runs parent code here."""
    if obj is not None:
        _parked.append(obj)


class ChildPlan:
    """What the child needs, worked out in the parent right before the fork
    (nothing can change in between: no greenlet switch happens there)."""

    __slots__ = ("old_hub", "old_loop", "parked_hub_class", "hub_class",
                 "first_hub_init", "python_handlers", "stdin", "handles",
                 "sibling_popens", "prepared", "gc_enabled", "steps")

    def __init__(self, process_obj: Any, kept: Any = ()) -> None:
        hub = self.old_hub = get_hub_if_exists()
        # A loop gevent keeps aside for the next hub of this thread is the
        # parent's too.
        self.old_loop = get_loop()
        self.parked_hub_class = (
            None if hub is None else _parked_class(type(hub)))
        self.hub_class = get_hub_class()
        self.first_hub_init = _first_hub_init(self.hub_class, hub)
        # _signal.getsignal: signal.getsignal wraps every answer in an enum,
        # a cost that adds up for 60 signals on every start.
        self.python_handlers = [
            signum for signum in _signals_to_reset
            if _signal.getsignal(signum) not in (_signal.SIG_DFL, None)]
        self.stdin = None if sys.stdin is None else shared_devnull()
        # Tuples: empty ones cost no allocation (and no freeing).
        self.handles = _sort_handles(_ownership.all_handles, kept)
        # The parent's other children: their pidfds are inherited, and
        # they are not the child's children.
        children = mp_process._children  # type: ignore[attr-defined]
        self.sibling_popens = () if not children else tuple(
            child._popen for child in children
            if hasattr(getattr(child, "_popen", None), "_forget_in_child"))
        self.prepared = _bootstrap.prepared_for(process_obj)
        # The fork runs with the cyclic GC off, which the child turns back
        # on once its parent's objects are frozen (see run()).
        self.gc_enabled = _gc_isenabled()
        # What the child reads, as one tuple it unpacks: reading nine
        # attributes in the child's cold code would write to the pages of
        # their names and descriptors too (see _bootstrap._process_vars).
        self.steps = (hub, self.parked_hub_class, self.hub_class,
                      self.first_hub_init, self.python_handlers,
                      self.handles, self.sibling_popens, self.stdin,
                      self.prepared, self.gc_enabled)


def _sort_handles(registry: Any, kept: Any) -> Any:
    """The parent's open handles as the child treats them, ``(taken,
    alone, taken_to_close, log)``: the ones it was given (``kept``), which
    it takes over; those it closes alone (see
    ``Endpoint._close_inherited``); those it must take over to close them;
    and whether it logs each close.  ``()`` if there are none.

    Sorted here, in the parent: in the child, each attribute read of a
    handle writes the pages of the objects it reads (their reference
    counts)."""
    if not registry:
        return ()
    taken: list[Any] = []
    alone: list[Any] = []
    taken_to_close: list[Any] = []
    for handle in registry:
        if handle in kept:
            taken.append(handle)
        elif handle._child_closes_alone():
            alone.append(handle)
        else:
            taken_to_close.append(handle)
    log = "logging" in sys.modules and _log.enabled()
    return tuple(taken), tuple(alone), tuple(taken_to_close), log


_parked_classes: dict[Any, Any] = {}


def _parked_class(base: Any) -> Any:
    """A subclass of the hub class ``base`` whose switch() raises.

    gevent objects the parent used (an Event or Semaphore it waited on, a
    greenlet it spawned) stay bound to the parent's hub; waiting on one in
    the child switches to that hub, whose run loop would then continue in
    the child (and crash: its loop is destroyed).  The parked hub gets this
    class, so such a switch raises a clear error instead."""
    cls = _parked_classes.get(base)
    if cls is None:
        def switch(self: Any, *args: Any, **kwargs: Any) -> Any:
            raise GIPCError(
                "this gevent object (lock, event, queue, greenlet...) belongs "
                "to the parent process's hub and cannot be waited on in a "
                "gipc child; create it in the child")

        cls = _parked_classes[base] = type("ParkedParentHub", (base,), {
            "switch": switch, "throw": switch, "__module__": __name__})
    return cls


_hub_init_cache: list[Any] = []  # [(hub_class, old_hub, first_hub_init)]


def _first_hub_init(hub_class: Any, old_hub: Any) -> Any:
    """The ``__init__`` the child puts on the hub class (one per hub and
    hub class, reused by every start: the parent pays for what it
    allocates too, at the next fork)."""
    if _hub_init_cache:
        cached_class, cached_hub, init = _hub_init_cache[0]
        if cached_class is hub_class and cached_hub is old_hub:
            return init
    init = _make_first_hub_init(hub_class, old_hub)
    _hub_init_cache[:] = [(hub_class, old_hub, init)]
    return init


def _make_first_hub_init(hub_class: Any, old_hub: Any) -> Any:
    """The ``__init__`` the child puts on the hub class, for one call.

    The child's fresh hub is made lazily (a child that never touches gevent
    does not pay for it), by gevent itself: with no hub set, get_hub()
    creates one.  Before that happens, the parent's default loop must be
    destroyed (libev has one default loop per process, and the new hub would
    inherit its watchers and so run parent greenlets), and right after it,
    libev's SIGCHLD handler must go: it reaps *every* child with
    waitpid(-1), and gevent removes it only for the first default loop of a
    process.
    """
    own_init = hub_class.__dict__.get("__init__")
    init = hub_class.__init__

    def first_hub_init(self: Any, *args: Any, **kwargs: Any) -> None:
        if own_init is None:
            del hub_class.__init__
        else:
            hub_class.__init__ = own_init
        if old_hub is not None and old_hub.loop is not None:
            old_hub.loop.destroy()
        init(self, *args, **kwargs)
        if getattr(self.loop, "default", False):
            # gevent's child watchers install it again when used.
            _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)

    return first_hub_init


def run(process_obj: Any, parent_sentinel: Any, plan: Any) -> None:
    """Leave the parent's world, bootstrap the child and exit with
    multiprocessing's exit code.

    Leaving the parent's world: park the parent's hub, reset the signal
    module, close the parent's handles (but the given ones) and forget its
    children; /dev/null becomes sys.stdin.  One function, not two: a call
    of cold code costs the child a few page copies (see the module's
    docstring).

    This frame never returns, so what it references is never freed here:
    ``plan`` (the parent's hub and loop), the parent's sys.stdin and its
    ``current_process()`` object, which the bootstrap replaces (freeing
    them would copy the pages they live on, for nothing: the child ends in
    ``os._exit``)."""
    code = 1
    parents_process = _process_vars["_current_process"]  # noqa: F841 (kept)
    try:
        # The parent's objects are never garbage here: keep the collector
        # from walking (and so copying) every page of them.  It was off
        # from before the fork (see _popen_fork): a collection of the
        # parent's youngest objects, in the after-fork hooks, would write
        # to every page they live on (some hundred copies).
        _freeze_gc()
        (old_hub, parked_hub_class, hub_class, first_hub_init,
         python_handlers, handles, sibling_popens, stdin,
         prepared, gc_enabled) = plan.steps
        if gc_enabled:
            _enable_gc()
        if old_hub is not None:
            if parked_hub_class is not None:
                try:
                    old_hub.__class__ = parked_hub_class
                except TypeError:
                    pass  # an exotic hub class: keep it as it is
            set_hub(None)
        set_loop(None)
        hub_class.__init__ = first_hub_init

        # The C helper reset the dispositions; make the signal module
        # agree, so that signal.getsignal() tells the truth in the child.
        for signum in python_handlers:
            try:
                _set_signal(signum, SIG_DFL)
            except (OSError, ValueError):
                pass
        _set_wakeup_fd(-1)

        if handles:
            taken, alone, taken_to_close, log = handles
            # The registry keeps the handles given to the child only (one
            # write for all: a closing handle's own unregister() then
            # finds itself gone).
            _ownership_vars["all_handles"][:] = taken
            for handle in taken:
                _parked.append(handle._take_over())
            for handle in alone:
                handle._close_inherited(log)
            for handle in taken_to_close:
                _parked.append(handle._take_over())
                handle.close()

        for popen in sibling_popens:
            popen._forget_in_child()

        # As multiprocessing: sys.stdin reads /dev/null; file descriptor 0
        # stays as it is (the old sys.stdin, kept, does not own it).
        # Through the dict, as _bootstrap does with its modules.
        parents_stdin = _sys_vars["stdin"]  # noqa: F841 (kept)
        if stdin is not None:
            _sys_vars["stdin"] = stdin

        code = _run_bootstrap(process_obj, prepared, parent_sentinel)
    except BaseException:
        try:
            sys.stderr.write("gipc: child process failed to start:\n")
            traceback.print_exc()
            _flush_std_streams()
        except BaseException:
            pass
    finally:
        _exit(code)
