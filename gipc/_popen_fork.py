"""The "fork" start method: fork through the C helper, run the child's
bootstrap right there, and watch the child as every popen does
(``_popen_base``).

Everything the child needs is worked out in the parent before the fork
(``_child.ChildPlan``), and the parent does little between the fork and
its first wait: every page either side writes while both share it is
copied.
"""
from typing import Any
import os
from gc import disable as _gc_disable
from gc import enable as _gc_enable
import sys
import threading
import warnings
from multiprocessing.util import _flush_std_streams  # type: ignore[attr-defined]

import gevent

from . import _child, _core, _lookups, _popen_base
from ._cooperate import close_fd
from ._inherit import (
    await_child_setup, close_report_pipe, fds_to_keep, report_pipe)
from ._popen_base import BasePopen, libev_reaps_children
from .exceptions import GIPCError
from .signals import _signals_to_reset

# A global, not _child.run: the child's first steps run code the parent
# never ran, where each module attribute read writes the pages of the
# module, its dict and the name (see _child).
_run_child = _child.run
_use_pidfds = _popen_base.USE_PIDFDS

_warned_threads = False


def _check_can_fork() -> Any:
    """Raise GIPCError where gipc cannot fork a child; warn (once per
    process) if other threads run."""
    if sys.is_finalizing():
        raise GIPCError("cannot start a child process during interpreter "
                        "shutdown")
    hub = gevent.get_hub()
    # Under monkey-patching, threading.current_thread() in a greenlet other
    # than the main one is a dummy thread of that greenlet: gevent's hub
    # knows whether this is the main OS thread.
    if (threading.current_thread() is not threading.main_thread()
            and not hub.main_hub):
        raise GIPCError("gipc starts child processes from the main thread "
                        "only (the child's fresh gevent hub needs it)")
    if gevent.getcurrent() is hub:
        raise GIPCError("cannot start a child process from the gevent hub "
                        "greenlet (e.g. in a watcher callback); spawn a "
                        "greenlet for it")
    if (not _warned_threads and threading.active_count() > 1
            and not _threads_are_greenlets()):
        _warn_about_threads()


def _threads_are_greenlets() -> bool:
    """Whether gevent monkey-patched threading: then every thread that
    threading knows of is a greenlet of this OS thread (nothing a fork
    leaves behind), and threading knows of no real one."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


def _warn_about_threads() -> None:
    # fork() copies only the calling thread: locks held by other threads
    # stay locked in the child for ever.  gevent's own threadpool workers
    # are not threading.Thread objects and do not show up here.
    global _warned_threads
    others = [t.name for t in threading.enumerate()
              if t is not threading.current_thread()]
    if others:
        _warned_threads = True
        warnings.warn(
            "gipc is forking while other threads run (%s); only the "
            "calling thread exists in the child, and locks held by the "
            "others stay held there; start children with "
            "start_method=\"forkserver\" (or \"spawn\") to avoid it"
            % ", ".join(others),
            RuntimeWarning, stacklevel=7)


# The sentinel path (no pidfds, see _popen_base.USE_PIDFDS).  A child's
# parent_process().is_alive() watches its parent's lifeline: a pipe whose
# write end only the parent holds (the fork helper closes it in every
# child), one per process for all its children.  (owner pid, read end,
# descriptors for the fork helper to close in a new child), or None.
_lifeline = None
# In a child on the sentinel path: the write end of its own sentinel,
# which its own children must not keep.
_own_sentinel = None


def _lifeline_for_fork() -> Any:
    """The read end of this process's lifeline and the descriptors to close
    in a new child: the lifeline's write end, and this process's own
    sentinel if it is a gipc child (made at the first start of each
    process: a child inherits its parent's, which is not its own)."""
    global _lifeline
    lifeline = _lifeline
    if lifeline is None or lifeline[0] != os.getpid():
        r, w = os.pipe()  # close-on-exec, as Python makes every pipe
        close = (w,) if _own_sentinel is None else (w, _own_sentinel)
        lifeline = _lifeline = (os.getpid(), r, close)
    return lifeline[1], lifeline[2]


def _parent_sentinel() -> Any:
    """In the child whose parent was gone before the fork helper could open
    a pidfd on it: a descriptor that is readable already, as the parent's
    pidfd would be (for ``parent_process().is_alive()``)."""
    r, w = os.pipe()
    close_fd(w)
    return r


class Popen(BasePopen):
    """Fork a child for ``process_obj`` and watch it from the hub.  The gipc
    handles in ``kept`` stay open in the child; every other one is closed
    there.  With the process's ``close_fds``, every other descriptor is
    replaced by /dev/null in the child (see ``_inherit``)."""

    defers_moved_teardown = True

    def __init__(self, process_obj: Any, kept: Any = ()) -> None:
        # As multiprocessing: what is buffered is written once, not once
        # more by the child.
        _flush_std_streams()
        parent = os.getpid()
        # The fork helper fills this list before a signal handler can run,
        # so an interrupted start always knows which child to abandon.
        forked = self._forked = [0, -1]
        # With close_fds: the pipe on which the child reports that its
        # descriptors are replaced (see _inherit).
        report = None
        gc_off = False
        try:
            plan, watch_status = _plan_child(process_obj, kept)
            if process_obj._close_fds:
                report = report_pipe()
            # No collection in the child before it froze the parent's
            # objects (see _child.run); none here either, for the instant.
            if plan.gc_enabled:
                _gc_disable()
                gc_off = True
            if _use_pidfds:
                if report is None:
                    _core.fork(_signals_to_reset, forked)
                else:
                    _core.fork(_signals_to_reset, forked, None, fds_to_keep(
                        process_obj, kept, plan.stdin), tuple(report))
                if forked[0] == 0:
                    # The child: straight into its bootstrap (no call of
                    # this module's own on its path).
                    try:
                        _run_child(process_obj, forked[1]
                                   if forked[1] >= 0
                                   else _parent_sentinel(), plan)
                    finally:
                        os._exit(1)  # never return into the parent's stack
            else:
                lifeline, close_in_child = _lifeline_for_fork()
                # The lifeline's read end is the child's parent sentinel.
                if report is None:
                    _core.fork(_signals_to_reset, forked, close_in_child)
                else:
                    _core.fork(_signals_to_reset, forked, close_in_child,
                               fds_to_keep(process_obj, kept, plan.stdin,
                                           (lifeline,)), tuple(report))
                if forked[0] == 0:
                    global _own_sentinel
                    _own_sentinel = forked[1]
                    try:
                        _run_child(process_obj, lifeline, plan)
                    finally:
                        os._exit(1)
            # The parent.  Every page it writes while the child shares it
            # is copied, so little happens from here until it waits: two
            # calls.
            if gc_off:
                gc_off = False
                _gc_enable()
            self._watch(forked, watch_status)
            if report is not None:
                await_child_setup(report)  # closes the pipe
            # The plan is dropped once the child is gone (freeing writes to
            # the pages of what is freed).  But not the parent's other
            # handles and children: this start must not keep them alive.
            if plan.handles or plan.sibling_popens:
                plan.handles = plan.sibling_popens = ()
                plan.steps = None
            self._plan = plan
        except BaseException:
            if os.getpid() != parent:
                os._exit(1)  # a child never returns into the parent's stack
            if gc_off:
                _gc_enable()
            if report is not None:
                close_report_pipe(report)
            self._abandon()
            raise


def _plan_child(process_obj: Any, kept: Any) -> Any:
    """Before the fork: check that gipc can fork here, work out the child's
    plan, and make the type lookups the child will make (see _lookups).
    Returns the plan and whether to watch the child's status with libev
    (see ``_popen_base.libev_reaps_children``)."""
    _check_can_fork()
    plan = _child.ChildPlan(process_obj, kept)
    watch_status = libev_reaps_children()
    _core.warm_type_cache(_lookups.child_lookups(
        type(process_obj), type(plan.old_hub)))
    return plan, watch_status


if not _use_pidfds:
    # Made now rather than at the first start, so that starting a child
    # never shows as two more open descriptors.
    _lifeline_for_fork()
