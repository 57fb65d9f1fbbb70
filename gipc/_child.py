"""The child side of a fork: a clean gevent world, then the target.

Runs in the child right after the C fork helper returned there (signals are
already back at their defaults at the C level).  Nothing of the parent's
gevent state may run here: the parent's hub is parked for good and a fresh
hub with a fresh loop takes its place.  The child always ends in
``os._exit``; it never returns into the parent's stack.
"""
import gc
import os
import _signal
import stat
import sys
import traceback
from multiprocessing import process as mp_process
from multiprocessing import util as mp_util

import gevent
import gevent.hub
from gevent._hub_local import (
    get_hub_class, get_hub_if_exists, get_loop, set_loop)

from . import _ownership
from .exceptions import GIPCError
from .signals import _signals_to_reset

# The parent's hub, loop watchers and greenlets, kept referenced for the
# life of the child: if they were collected, greenlet would throw
# GreenletExit into the parent's greenlets and run their code here.
_parked = []


class ChildPlan:
    """What the child needs, worked out in the parent before the fork.

    Every page a child writes costs a copy-on-write fault there (a few
    microseconds each on a virtual machine), and so does every page the
    parent writes while the child shares it; so work that can be done in the
    parent before the fork is done there: the class that parks the parent's
    hub, the signals whose Python handler must go, and the /dev/null file
    that becomes the child's stdin.
    """

    __slots__ = ("parked_hub_class", "python_handlers", "stdin")

    def __init__(self):
        hub = get_hub_if_exists()
        self.parked_hub_class = (
            None if hub is None else _parked_class(type(hub)))
        # _signal.getsignal: signal.getsignal wraps every answer in an enum,
        # a cost that adds up for 60 signals on every start.
        self.python_handlers = [
            signum for signum in _signals_to_reset
            if _signal.getsignal(signum) not in (_signal.SIG_DFL, None)]
        self.stdin = None if sys.stdin is None else shared_devnull()


_devnull = None      # the text file given to children as sys.stdin
_devnull_fd = -1     # its descriptor, owned by this module, never closed
_devnull_rdev = None


def shared_devnull():
    """The text file on /dev/null that children get as ``sys.stdin``.

    multiprocessing opens one in every child; gipc opens one per process
    and keeps it (one descriptor for the life of the program), because
    building a file object costs dozens of page faults on each side of a
    fork.  As multiprocessing's, the file does not own its descriptor
    (``closefd=False``), so closing ``sys.stdin`` in a child closes nothing.
    It is checked on every use: a closed file object is rebuilt, and if the
    program closed the descriptor (whose number may now name another file),
    a new one is opened.
    """
    global _devnull, _devnull_fd
    if not _is_devnull(_devnull_fd):
        _devnull_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        _devnull = None
    if _devnull is None or _devnull.closed:
        _devnull = open(_devnull_fd, encoding="utf-8", closefd=False)
    return _devnull


def _is_devnull(fd):
    global _devnull_rdev
    if fd < 0:
        return False
    try:
        status = os.fstat(fd)
        if _devnull_rdev is None:
            _devnull_rdev = os.stat(os.devnull).st_rdev
    except OSError:
        return False
    return stat.S_ISCHR(status.st_mode) and status.st_rdev == _devnull_rdev


_parked_classes = {}


def _parked_class(base):
    """A subclass of the hub class ``base`` whose switch() raises.

    gevent objects the parent used (an Event or Semaphore it waited on, a
    greenlet it spawned) stay bound to the parent's hub; waiting on one in
    the child switches to that hub, whose run loop would then continue in
    the child (and crash: its loop is destroyed).  The parked hub gets this
    class, so such a switch raises a clear error instead."""
    cls = _parked_classes.get(base)
    if cls is None:
        def switch(self, *args, **kwargs):
            raise GIPCError(
                "this gevent object (lock, event, queue, greenlet...) belongs "
                "to the parent process's hub and cannot be waited on in a "
                "gipc child; create it in the child")

        cls = _parked_classes[base] = type("ParkedParentHub", (base,), {
            "switch": switch, "throw": switch, "__module__": __name__})
    return cls


def _park_hub(parked_hub_class):
    """Take the parent's hub out of service; a fresh one comes on first use.

    The fresh hub is made lazily (a child that never touches gevent does not
    pay for it), by gevent itself: with no hub set, get_hub() creates one.
    Before that happens, the parent's default loop must be destroyed (libev
    has one default loop per process, and the new hub would inherit its
    watchers and so run parent greenlets), and right after it, libev's
    SIGCHLD handler must go: it reaps *every* child with waitpid(-1), and
    gevent removes it only for the first default loop of a process.  A
    one-shot __init__ on the hub class does both.
    """
    old_hub = get_hub_if_exists()
    if old_hub is not None:
        _parked.append(old_hub)
        if parked_hub_class is not None:
            try:
                old_hub.__class__ = parked_hub_class
            except TypeError:
                pass  # an exotic hub class: keep it as it is
        gevent.hub.set_hub(None)
    # A loop gevent kept aside for the next hub of this thread would be the
    # parent's too: park it as well.
    _parked.append(get_loop())
    set_loop(None)
    hub_class = get_hub_class()
    own_init = hub_class.__dict__.get("__init__")
    init = hub_class.__init__

    def first_hub_init(self, *args, **kwargs):
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

    hub_class.__init__ = first_hub_init


def _sync_python_signal_table(python_handlers):
    # The C helper reset the dispositions; make the signal module agree, so
    # that signal.getsignal() tells the truth in the child.
    for signum in python_handlers:
        try:
            _signal.signal(signum, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    _signal.set_wakeup_fd(-1)


def _keep_only(moved):
    """Close every gipc handle of the parent that was not passed here; make
    the passed ones ours."""
    for handle in _ownership.get_all_handles():
        _parked.append(handle._take_over())
        if handle not in moved:
            handle.close()  # which also takes it off the registry


def _quiet_stdin(devnull):
    """Give the child a /dev/null ``sys.stdin`` as multiprocessing's
    bootstrap does (file descriptor 0 stays as it is, as there), with the
    file the parent opened, and make the bootstrap's own (costlier) version
    a no-op for its one call."""
    if devnull is None:
        return
    # Never closed: multiprocessing's version closes it, but a standard
    # stream does not own fd 0, so that only marks the object closed.
    _parked.append(sys.stdin)
    sys.stdin = devnull
    original = mp_util._close_stdin

    def close_stdin_done():
        mp_util._close_stdin = original

    mp_util._close_stdin = close_stdin_done


def _drop_parent_children():
    """Close the sentinels of the parent's other children (inherited fds);
    they are not our children."""
    for child in list(mp_process._children):
        popen = getattr(child, "_popen", None)
        forget = getattr(popen, "_forget_in_child", None)
        if forget is not None:
            forget()


def flush_std_streams():
    """Flush sys.stdout and sys.stderr, ignoring streams that cannot be
    (closed, replaced by objects without flush())."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except (AttributeError, ValueError, OSError):
                pass


def run(process_obj, moved, parent_sentinel, plan):
    """Bootstrap the child and exit with multiprocessing's exit code."""
    code = 1
    try:
        gc.freeze()
        _park_hub(plan.parked_hub_class)
        _sync_python_signal_table(plan.python_handlers)
        _keep_only(moved)
        _drop_parent_children()
        _quiet_stdin(plan.stdin)
        code = process_obj._bootstrap(parent_sentinel=parent_sentinel)
    except BaseException:
        try:
            sys.stderr.write("gipc: child process failed to start:\n")
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        try:
            flush_std_streams()
        finally:
            os._exit(code)
