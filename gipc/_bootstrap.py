"""What a child does around its target, by multiprocessing's rules.

``multiprocessing.process.BaseProcess._bootstrap`` makes a forked child a
multiprocessing process: it becomes ``current_process()``, its parent
becomes ``parent_process()``, finalizers and after-fork hooks run, and
``SystemExit`` and exceptions turn into exit codes.  gipc does exactly
that, here, with the objects prepared in the parent before the fork (see
:class:`Prepared`): every object a child creates or touches costs it a
copy-on-write page fault, and multiprocessing's version also re-imports
its own modules and calls its logger on every start.  The exit codes, the
messages on stderr and the state left in ``multiprocessing.process`` and
``multiprocessing.util`` are multiprocessing's.
"""
from __future__ import annotations

from typing import Any
import atexit
import itertools
import sys
import threading
import traceback
from multiprocessing import context as mp_context
from multiprocessing import process as mp_process
from multiprocessing import util as mp_util


# Since Python 3.13, multiprocessing's fork start method runs the atexit
# handlers a child registers (its exit function among them) when the child
# ends, after the bootstrap; before, the bootstrap called the exit function
# itself and nothing else ran.
_CHILD_RUNS_ATEXIT = sys.version_info >= (3, 13)

# threading._shutdown() runs the thread-atexit calls, marks the main thread
# stopped and joins the non-daemon threads other than the main one (whose
# lock is in that set too).  Before 3.13 nothing but os._exit follows it in
# a child, so where there are no such calls and threads (the usual child),
# all it would change is the main thread's state, for the instant before
# the process ends (a daemon thread joining the main thread would not be
# woken, and is killed with the process either way); skipping it saves a
# dozen page copies.  Only threading's own: gevent's monkey-patching
# replaces it with one that also lets ready greenlets run.  None where a
# child never skips it.
_SKIPPABLE_THREAD_SHUTDOWN = (
    threading._shutdown  # type: ignore[attr-defined]
    if (not _CHILD_RUNS_ATEXIT and hasattr(threading, "_shutdown_locks")
        and hasattr(threading, "_threading_atexits")
        and getattr(threading._shutdown, "__module__", None) == "threading")  # type: ignore[attr-defined]
    else None)


# The child reads and writes the attributes of these modules through their
# dicts.  Its code is cold (the parent never runs it, so CPython never
# specializes it), and a cold ``module.attribute`` writes to the name and
# its descriptor lookup as well as to the value: a page copied per name.
_process_vars = vars(mp_process)
_util_vars = vars(mp_util)
_threading_vars = vars(threading)


class Prepared:
    """The fresh multiprocessing state of a child, built in the parent.

    The parent never uses these objects itself (only its children's copies
    are used, and changed), so one serves every child started from the
    same process under the same parent name.  ``state`` is the tuple
    (process counter, set of children, parent process object), one tuple
    for the child to unpack rather than three attributes to read (see
    ``_process_vars``).
    """

    __slots__ = ("key", "state", "contexts")

    def __init__(self, key: Any) -> None:
        self.key = key
        parent_name, parent_pid = key
        children: set[Any] = set()
        # The parent process object's sentinel is only known in the child.
        parent = mp_process._ParentProcess(  # type: ignore[attr-defined]
            parent_name, parent_pid, None)
        self.state = (itertools.count(1), children, parent)
        # What multiprocessing.context._force_start_method(method) changes
        # in a child whose process object names its start method: the
        # default context's actual one becomes ``concrete[method]``.  Read
        # here: an import statement and a call in the child's cold code
        # write a dozen pages.
        self.contexts = (mp_context._default_context,
                         mp_context._concrete_contexts)  # type: ignore[attr-defined]


_prepared = None


def prepared_for(process_obj: Any) -> Any:
    """The :class:`Prepared` state for a child of ``process_obj``."""
    global _prepared
    # _parent_pid is this process (multiprocessing's start() asserts it),
    # so a child that starts children of its own never reuses ours.
    key = (process_obj._parent_name, process_obj._parent_pid)
    if _prepared is None or _prepared.key != key:
        _prepared = Prepared(key)
    return _prepared


def bootstrap(process_obj: Any, prepared: Any, parent_sentinel: Any) -> Any:
    """Run ``process_obj.run()`` as multiprocessing's bootstrap does and
    return the exit code."""
    if _CHILD_RUNS_ATEXIT:
        atexit._clear()  # the parent's handlers are not the child's
        atexit.register(_exit_function)
    try:
        exitcode = _run(process_obj, prepared, parent_sentinel)
    finally:
        if _CHILD_RUNS_ATEXIT:
            atexit._run_exitfuncs()
    return exitcode


def _run(process_obj: Any, prepared: Any, parent_sentinel: Any) -> Any:
    """The bootstrap proper: ``run()`` with multiprocessing's state, exit
    codes and messages."""
    process_vars = _process_vars
    util_vars = _util_vars
    try:
        method = process_obj._start_method
        if method is not None:
            # multiprocessing.context._force_start_method(method)
            default_context, concrete = prepared.contexts
            default_context._actual_context = concrete[method]
        counter, children, parent_process = prepared.state
        process_vars["_process_counter"] = counter
        process_vars["_children"] = children
        old_process = process_vars["_current_process"]
        process_vars["_current_process"] = process_obj
        parent_process._sentinel = parent_sentinel
        process_vars["_parent_process"] = parent_process
        if _threading_vars["_HAVE_THREAD_NATIVE_ID"]:
            # The main thread (threading's after-fork hook made the forking
            # thread the main one): what threading.main_thread() returns.
            _threading_vars["_main_thread"]._set_native_id()
        try:
            util_vars["_finalizer_registry"].clear()
            # Walking an empty WeakValueDictionary still costs a dozen
            # page faults; nothing is registered in most programs.  Its
            # dict, not len() (a call of cold Python code): an entry
            # whose object is gone may linger there, and the walk then
            # skips it.
            if util_vars["_afterfork_registry"].data:
                util_vars["_run_after_forkers"]()
        finally:
            # multiprocessing drops the parent's process object here, after
            # the after-fork hooks; gipc's child keeps it referenced until
            # it exits (see _child.run).
            del old_process
        if util_vars["_logger"]:
            mp_util.info("child process calling self.run()")
        if _CHILD_RUNS_ATEXIT:
            process_obj.run()
            exitcode = 0
        else:
            try:
                process_obj.run()
                exitcode = 0
            finally:
                _exit_function()
    except SystemExit as e:
        if e.code is None:
            exitcode = 0
        elif isinstance(e.code, int):
            exitcode = e.code
        else:
            sys.stderr.write(str(e.code) + "\n")
            exitcode = 1
    except BaseException:
        exitcode = 1
        sys.stderr.write("Process %s:\n" % process_obj.name)
        traceback.print_exc()
    finally:
        # Skip threading._shutdown() where it is skippable (see above), no
        # thread-atexit call is registered and there is no thread to join
        # but the main one (read now: threading replaces its set after a
        # fork).  Here, not in a function of its own: one cold call less.
        threading_vars = _threading_vars
        idle = threading_vars["_shutdown"] is _SKIPPABLE_THREAD_SHUTDOWN
        if idle:
            locks = threading_vars["_shutdown_locks"]
            idle = not threading_vars["_threading_atexits"] and (
                not locks or (len(locks) == 1 and threading_vars[
                    "_main_thread"]._tstate_lock in locks))
        if not idle:
            threading._shutdown()  # type: ignore[attr-defined]
        if util_vars["_logger"]:
            mp_util.info("process exiting with exitcode %d" % exitcode)
        util_vars["_flush_std_streams"]()
    return exitcode


if not _CHILD_RUNS_ATEXIT:
    bootstrap = _run  # nothing to add around it (one call less per start)


def _exit_function() -> None:
    """multiprocessing's ``util._exit_function``, which runs the finalizers
    and joins the children left, without its calls when there is nothing
    to finalize and no child: then all it does is this."""
    util_vars = _util_vars
    if util_vars["_finalizer_registry"] or _process_vars["_children"]:
        util_vars["_exit_function"]()
    elif not util_vars["_exiting"]:
        util_vars["_exiting"] = True
        if util_vars["_logger"]:
            mp_util.info("process shutting down")
            mp_util.debug('running all "atexit" finalizers with '
                          'priority >= 0')
            mp_util.debug('running the remaining "atexit" finalizers')
