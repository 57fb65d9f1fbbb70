"""The type lookups a child makes, made in the parent first.

CPython caches the result of looking an attribute up on a type (its
method cache, 4096 entries per interpreter).  A lookup that misses writes
an entry, and a child shares that table with its parent copy-on-write: a
child's misses copy the table's pages (24 of them), the pages of the names
and types involved, each several microseconds on a virtual machine.  Code
that runs only in children (gipc's bootstrap, and CPython's own after-fork
hooks) never runs in the parent, so all its lookups miss there, in every
child: some forty of them, about a fifth of the pages a child copies.

So the parent makes those lookups before each fork
(``_core.warm_type_cache``): in the child they are hits, which write
nothing.  After the first start they are hits in the parent too.  The list
is a hint: a wrong or missing pair costs at most a miss, never a change of
behaviour.  ``python -m bench.child_lookups`` lists the misses left in a
child (it needs perf).
"""
from __future__ import annotations

from typing import Any
import collections
import sys
import threading
import types
import weakref
from multiprocessing import process as mp_process

from . import _bootstrap, _child

# Attributes of modules that the child's bootstrap reads or writes as
# attributes (a module's attribute goes through a lookup on the module type
# first): sys.stdin, stdout and stderr (multiprocessing flushes the
# latter two), and atexit's
# functions.  gipc's own steps go through the modules' dicts instead (see
# _bootstrap._process_vars).  Every pair also takes a slot of the parent's
# cache, where it may push out one of the parent's own: functions are
# bound by name instead (_child).
_MODULE_ATTRIBUTES: tuple[str, ...] = ("stdin", "stdout", "stderr")
if _bootstrap._CHILD_RUNS_ATEXIT:
    # The child's own atexit handlers (Python 3.13 and later).
    _MODULE_ATTRIBUTES += ("_clear", "register", "_run_exitfuncs")

# What multiprocessing's Process.run() and the bootstrap read of the
# process object.
_PROCESS_ATTRIBUTES = ("run", "_start_method", "_target", "_args", "_kwargs")

# Attributes of gipc's own objects, read in the child: all their slots
# (the few read in the parent only cost a slot of the cache each).
_PLAN_ATTRIBUTES = _child.ChildPlan.__slots__
_PREPARED_ATTRIBUTES = _bootstrap.Prepared.__slots__


def _after_fork_hook_lookups() -> Any:
    """What CPython's after-fork hooks of threading and random look up, and
    threading's shutdown (Python 3.10 to 3.13)."""
    main = type(threading.main_thread())
    lock = type(threading.Lock())
    pairs = [
        (type(None), "__class__"), (set, "update"), (set, "remove"),
        (set, "add"), (list, "pop"), (list, "__reversed__"), (dict, "clear"),
        (dict, "update"), (dict, "values"), (collections.deque, "clear"),
        (weakref.WeakSet, "__iter__"), (weakref.WeakSet, "_commit_removals"),
        (weakref.WeakSet, "_iterating"), (weakref.WeakSet, "data"),
        (weakref.WeakValueDictionary, "__len__"),
        (weakref.WeakValueDictionary, "data"),
        (weakref.WeakValueDictionary, "_pending_removals"),
        (main, "_reset_internal_locks"), (main, "_started"), (main, "_ident"),
        (main, "_set_native_id"), (main, "_native_id"),
        (main, "_tstate_lock"), (main, "_after_fork"), (main, "_handle"),
        (threading.Event, "_at_fork_reinit"), (threading.Event, "_cond"),
        (threading.Condition, "_at_fork_reinit"),
        (threading.Condition, "_waiters"), (threading.Condition, "_lock"),
        (lock, "_at_fork_reinit"), (lock, "acquire")]
    handle = getattr(sys.modules.get("_thread"), "_ThreadHandle", None)
    if handle is not None:  # Python 3.13
        pairs += [(handle, name) for name in ("_set_done", "ident", "is_done")]
    guard = getattr(sys.modules.get("_weakrefset"), "_IterationGuard", None)
    if guard is not None:
        pairs += [(guard, name) for name in
                  ("__init__", "weakcontainer", "__enter__", "__exit__")]
    random = sys.modules.get("random")  # its hook reseeds the generator
    if random is not None:
        pairs.append((random.Random, "gauss_next"))
    return pairs


def _flatten(pairs: Any) -> Any:
    flat: list[Any] = []
    for owner, name in pairs:
        flat += (owner, sys.intern(name))
    return tuple(flat)


_cached = [None, None, ()]  # process type, hub type, lookups


def child_lookups(process_type: Any, hub_type: Any) -> Any:
    """The flat tuple (type, name, ...) for ``_core.warm_type_cache``: the
    lookups a child of a ``process_type`` object makes, whose parent's hub
    is a ``hub_type`` (NoneType without one)."""
    cached = _cached
    if cached[0] is process_type and cached[1] is hub_type:
        return cached[2]
    pairs: list[tuple[type, str]] = [
        (types.ModuleType, name) for name in _MODULE_ATTRIBUTES]
    pairs += [(process_type, name) for name in _PROCESS_ATTRIBUTES]
    pairs += [(_child.ChildPlan, name) for name in _PLAN_ATTRIBUTES]
    pairs += [(_bootstrap.Prepared, name) for name in _PREPARED_ATTRIBUTES]
    pairs.append((mp_process._ParentProcess, "_sentinel"))  # type: ignore[attr-defined]
    # The hub's class is replaced (it becomes the parked hub).
    pairs.append((hub_type, "__class__"))
    pairs += _after_fork_hook_lookups()
    cached[:] = [process_type, hub_type, _flatten(pairs)]
    return cached[2]
