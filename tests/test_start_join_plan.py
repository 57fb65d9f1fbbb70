"""What the parent works out for a forked child (gipc/_child.py's ChildPlan,
gipc/_bootstrap.py's Prepared), and what a start keeps of it."""
import gc
import mmap
import os
import weakref

import gevent

import gipc
from gipc import _bootstrap, _child

from support import JOIN


def _wait_for(conn):
    conn.get()


def test_the_childs_steps_are_the_plans_own_state():
    # The child unpacks `steps` instead of reading the slots: a field added
    # to one and not the other would give the child stale state.
    process = gipc.Process(target=print)
    plan = _child.ChildPlan(process)
    assert plan.steps == (
        plan.old_hub, plan.parked_hub_class, plan.hub_class,
        plan.first_hub_init, plan.python_handlers, plan.handles,
        plan.sibling_popens, plan.stdin, plan.prepared, plan.gc_enabled)
    assert plan.steps[0] is gevent.get_hub()


def test_prepared_state_is_a_fresh_counter_children_and_parent():
    prepared = _bootstrap.Prepared(("Parent-7", 4242))
    counter, children, parent = prepared.state
    assert next(counter) == 1
    assert children == set()
    assert (parent.name, parent.pid) == ("Parent-7", 4242)
    assert _bootstrap.Prepared(("Parent-7", 4242)).state[1] is not children


def test_a_start_keeps_no_reference_to_the_parents_other_handles():
    # The plan stays with the process until the child is gone; the handles
    # it listed for the child to close must not live on with it.
    r, w = gipc.pipe()
    other_r, other_w = gipc.pipe()
    refs = [weakref.ref(other_r), weakref.ref(other_w)]
    p = gipc.start_process(_wait_for, args=(r,))
    try:
        other_r.close()
        other_w.close()
        del other_r, other_w
        gc.collect()
        assert [ref() for ref in refs] == [None, None]
    finally:
        w.put("done")
        p.join(JOIN)
        w.close()
    assert p.exitcode == 0


# -- the cyclic GC across the fork ---------------------------------------

def _report_gc(mark, w):
    w.put((mark[0], gc.isenabled()))
    w.close()


def _start_reporting_gc():
    """Start a child that reports whether a collection ran in it before
    its parent's objects were frozen, and whether its GC is on."""
    mark = mmap.mmap(-1, 1)  # shared with the child
    parent = os.getpid()

    def note(phase, info):
        if phase == "start" and os.getpid() != parent and \
                not gc.get_freeze_count():
            mark[0] = 1

    r, w = gipc.pipe()
    gc.callbacks.append(note)
    old = gc.get_threshold()
    # Every allocation of a container starts a collection: one would run
    # in the child's after-fork hooks if the GC were on there.
    gc.set_threshold(1)
    try:
        p = gipc.start_process(_report_gc, args=(mark, w))
    finally:
        gc.set_threshold(*old)
        gc.callbacks.remove(note)
    try:
        return r.get(timeout=JOIN), gc.isenabled()
    finally:
        p.join(JOIN)
        r.close()
        assert p.exitcode == 0


def test_no_collection_runs_in_a_child_before_it_froze_its_parents_objects():
    # A collection there walks the parent's youngest objects, and writes
    # (so copies) every page they live on.
    (collected_early, child_gc_on), parent_gc_on = _start_reporting_gc()
    assert collected_early == 0
    assert child_gc_on and parent_gc_on


def test_a_parent_that_turned_the_gc_off_has_children_without_it():
    gc.disable()
    try:
        (collected_early, child_gc_on), parent_gc_on = _start_reporting_gc()
    finally:
        gc.enable()
    assert collected_early == 0
    assert not child_gc_on and not parent_gc_on
