"""The child side of a fork: a clean gevent world, then the target.

Runs in the child right after the C fork helper returned there (signals are
already back at their defaults at the C level).  Nothing of the parent's
gevent state may run here: the parent's hub is parked for good and a fresh
hub with a fresh loop takes its place.  The child always ends in
``os._exit``; it never returns into the parent's stack.
"""
import gc
import os
import signal
import sys
import traceback

import gevent
import gevent.hub
from gevent._hub_local import get_hub_if_exists

from . import _ownership
from .exceptions import GIPCError
from .signals import _signals_to_reset

# The parent's hub, loop watchers and greenlets, kept referenced for the
# life of the child: if they were collected, greenlet would throw
# GreenletExit into the parent's greenlets and run their code here.
_parked = []


def _replace_hub():
    old_hub = get_hub_if_exists()
    if old_hub is not None:
        _parked.append(old_hub)
        _make_unswitchable(old_hub)
        gevent.hub.set_hub(None)
        loop = old_hub.loop
        if loop is not None:
            # libev has one default loop per process; the new hub would
            # inherit its watchers (and so run parent greenlets) unless it
            # is destroyed.
            loop.destroy()
    # The fresh hub and its (new default) loop, now.  libev's default loop
    # installs a SIGCHLD handler that reaps *every* child with waitpid(-1);
    # gevent undoes that only for the first default loop of a process, so
    # here it would stay and steal the exit statuses of this child's own
    # children (gipc, subprocess, multiprocessing).  gevent's child
    # watchers put it back when they are used (loop.install_sigchld()).
    gevent.get_hub()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _make_unswitchable(old_hub):
    """Make a switch into the parent's hub raise instead of resuming it.

    gevent objects the parent used (an Event or Semaphore it waited on, a
    greenlet it spawned) stay bound to the parent's hub; waiting on one in
    the child switches to that hub, whose run loop would then continue in
    the child (and crash: its loop is destroyed).  The parked hub gets a
    class whose switch() raises a clear error instead."""
    base = type(old_hub)

    def switch(self, *args, **kwargs):
        raise GIPCError(
            "this gevent object (lock, event, queue, greenlet...) belongs to "
            "the parent process's hub and cannot be waited on in a gipc "
            "child; create it in the child")

    try:
        old_hub.__class__ = type("ParkedParentHub", (base,), {
            "switch": switch, "throw": switch, "__module__": __name__})
    except TypeError:
        pass  # an exotic hub class: keep it as it is


def _sync_python_signal_table():
    # The C helper reset the dispositions; make the signal module agree, so
    # that signal.getsignal() tells the truth in the child.
    for signum in _signals_to_reset:
        try:
            if signal.getsignal(signum) not in (signal.SIG_DFL, None):
                signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.set_wakeup_fd(-1)


def _keep_only(moved):
    """Close every gipc handle of the parent that was not passed here; make
    the passed ones ours."""
    for handle in _ownership.get_all_handles():
        _parked.append(handle._take_over())
        if handle not in moved:
            handle.close()
    _ownership.set_all_handles([h for h in _ownership.all_handles
                                if h in moved])


def _drop_parent_children():
    """Close the sentinels of the parent's other children (inherited fds);
    they are not our children."""
    from multiprocessing import process as mp_process
    for child in list(mp_process._children):
        popen = getattr(child, "_popen", None)
        forget = getattr(popen, "_forget_in_child", None)
        if forget is not None:
            forget()


def run(process_obj, moved, parent_sentinel):
    """Bootstrap the child and exit with multiprocessing's exit code."""
    code = 1
    try:
        gc.freeze()
        _replace_hub()
        _sync_python_signal_table()
        _keep_only(moved)
        _drop_parent_children()
        code = process_obj._bootstrap(parent_sentinel=parent_sentinel)
    except BaseException:
        try:
            sys.stderr.write("gipc: child process failed to start:\n")
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except BaseException:
                pass
        os._exit(code)
