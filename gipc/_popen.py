"""How a gipc child is started and watched: the "popen" object.

``multiprocessing.process.BaseProcess`` delegates everything about the OS
process to a popen object (``poll``, ``wait``, ``terminate``, ``kill``,
``close``, ``sentinel``).  This one forks through the C helper and watches
the child through its pidfd on the gevent hub, then reaps exactly that
child through the same pidfd: no SIGCHLD handler, no ``waitpid(-1)``, so
the exit statuses of other children of the program (multiprocessing,
subprocess) are never stolen.  Where libev's SIGCHLD handler reaps every
child (gevent's child watchers), a libev child watcher catches the status.
"""
import os
import signal
import sys
import threading
import warnings

import gevent

from . import _child, _core, _lookups
from ._cooperate import READ, FdWaiter, check_timeout, fd_readable
from .exceptions import GIPCError
from .signals import _signals_to_reset

# A global, not _child.run: the child's first steps run code the parent
# never ran, where each module attribute read writes the pages of the
# module, its dict and the name (see _child).
_run_child = _child.run

# Exit code reported when something else in the program reaped our child
# (see README, "Child processes and other reapers").
UNKNOWN_EXIT_CODE = 255

_warned_threads = False


def _check_can_fork():
    """Raise GIPCError where gipc cannot start a child; warn (once per
    process) if other threads run."""
    if sys.is_finalizing():
        raise GIPCError("cannot start a child process during interpreter "
                        "shutdown")
    if threading.current_thread() is not threading.main_thread():
        raise GIPCError("gipc starts child processes from the main thread "
                        "only (the child's fresh gevent hub needs it)")
    hub = gevent.get_hub()
    if gevent.getcurrent() is hub:
        raise GIPCError("cannot start a child process from the gevent hub "
                        "greenlet (e.g. in a watcher callback); spawn a "
                        "greenlet for it")
    if not _have_pidfds:
        _check_pidfds()
    if not _warned_threads and threading.active_count() > 1:
        _warn_about_threads()


_have_pidfds = None


def _check_pidfds():
    """Refuse before forking on a kernel without pidfds (Linux < 5.3):
    gipc has no other way to watch a child without a SIGCHLD handler."""
    global _have_pidfds
    if _have_pidfds is None:
        fd = _core.pidfd_open(os.getpid())
        _have_pidfds = fd >= 0
        if _have_pidfds:
            os.close(fd)
    if not _have_pidfds:
        raise GIPCError("this kernel has no pidfd_open(); gipc needs Linux "
                        "5.3 or newer")


def _warn_about_threads():
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
            "others stay held there" % ", ".join(others),
            RuntimeWarning, stacklevel=5)


def _parent_sentinel():
    """In the child whose parent was gone before the fork helper could open
    a pidfd on it: a descriptor that is readable already, as the parent's
    pidfd would be (for ``parent_process().is_alive()``)."""
    r, w = os.pipe()
    os.close(w)
    return r


class Popen:
    """Fork a child for ``process_obj`` and watch it from the hub.  The gipc
    handles in ``kept`` stay open in the child; every other one is closed
    there."""

    method = "gipc"

    def __init__(self, process_obj, kept=()):
        self.returncode = None
        self.sentinel = None
        self._status_watcher = None
        self._plan = None
        _child.flush_std_streams()
        parent = os.getpid()
        # The fork helper fills this list before a signal handler can run,
        # so an interrupted start always knows which child to abandon.
        forked = self._forked = [0, -1]
        try:
            _check_can_fork()
            plan = _child.ChildPlan(process_obj)
            watch_status = _libev_reaps_children()
            _core.warm_type_cache(_lookups.child_lookups(
                type(process_obj), type(plan.old_hub)))
            _core.fork(_signals_to_reset, forked)
            if forked[0] == 0:
                try:
                    _run_child(process_obj, kept, forked[1] if forked[1] >= 0
                               else _parent_sentinel(), plan)
                finally:
                    os._exit(1)  # never return into the parent's stack
            if forked[1] < 0:
                del self._forked  # the fork helper killed and reaped it
                raise GIPCError("this kernel has no pidfd_open(); gipc needs "
                                "Linux 5.3 or newer")
            # Every page the parent writes while the child shares it is
            # copied, so little happens from here until the parent waits.
            # As with multiprocessing, the sentinel stays valid until
            # close() or until this object is collected (__del__, not
            # weakref.finalize, which costs dozens of page writes).
            self.pid, self.sentinel = forked
            if watch_status:
                self._status_watcher = _status_watcher(self.pid)
            # Dropped once the child is gone (freeing writes to the pages of
            # what is freed).  But not the parent's other handles and
            # children: this start must not keep them alive.
            if plan.handles or plan.sibling_popens:
                plan.handles = plan.sibling_popens = ()
            self._plan = plan
        except BaseException:
            if os.getpid() != parent:
                os._exit(1)  # a child never returns into the parent's stack
            self._abandon()
            raise

    def __del__(self):
        self.close()

    def _abandon(self):
        """Kill, reap and forget a child whose start was interrupted (the
        caller gets no process object, so no child may live on)."""
        pid, pidfd = self.__dict__.pop("_forked", None) or (0, -1)
        if pid > 0:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        if pidfd >= 0 and pidfd != self.sentinel:
            _close_quietly(pidfd)
        self.close()

    def poll(self, flag=os.WNOHANG):
        """The exit code if the child has exited (reaping it), else None."""
        if self.returncode is None:
            if flag == 0:
                return self.wait()
            try:
                code = _core.reap(self.pid, -1 if self.sentinel is None
                                  else self.sentinel)
            except ChildProcessError:
                code = self._reaped_elsewhere()
            if code is not None:
                self.returncode = code
                self._drop_status_watcher()
                self._plan = None
        return self.returncode

    def _reaped_elsewhere(self):
        # Someone else collected the status (waitpid(-1) in a SIGCHLD
        # handler).  If that was libev's, behind gevent's child watchers,
        # our child watcher got the status.  Otherwise the pidfd still
        # tells whether the child has gone, but its status is lost.
        watcher = self._status_watcher
        if watcher is not None and watcher.rpid == self.pid:
            return os.waitstatus_to_exitcode(watcher.rstatus)
        if self.sentinel is None or not fd_readable(self.sentinel):
            return None
        warnings.warn(
            "the exit status of gipc child %d was collected by another "
            "reaper (gevent child watchers?); reporting exit code %d"
            % (self.pid, UNKNOWN_EXIT_CODE), RuntimeWarning, stacklevel=3)
        return UNKNOWN_EXIT_CODE

    def wait(self, timeout=None):
        """Wait cooperatively for the child to exit; return its exit code,
        or None if ``timeout`` seconds passed first."""
        if self.returncode is not None:
            return self.returncode
        timeout = check_timeout(timeout)
        if self.poll() is None:
            waiter = FdWaiter(self.sentinel, READ)
            try:
                if not waiter.wait(timeout):
                    return None
            finally:
                waiter.close()
        return self.poll()

    def _send_signal(self, sig):
        if self.returncode is None and self.sentinel is not None:
            try:
                signal.pidfd_send_signal(self.sentinel, sig)
            except ProcessLookupError:
                pass

    def terminate(self):
        """Send SIGTERM unless the child is known to have exited."""
        self._send_signal(signal.SIGTERM)

    def kill(self):
        """Send SIGKILL unless the child is known to have exited."""
        self._send_signal(signal.SIGKILL)

    def close(self, _close=os.close):
        """Release the pidfd."""
        self._plan = None
        self._drop_status_watcher()
        fd, self.sentinel = self.sentinel, None
        if fd is not None:
            try:
                _close(fd)
            except OSError:
                pass

    def _drop_status_watcher(self):
        watcher, self._status_watcher = self._status_watcher, None
        if watcher is not None:
            try:
                watcher.close()
            except Exception:  # at interpreter exit, gevent may be gone
                pass

    def _forget_in_child(self):
        # In a child: this popen and its pidfd belong to the parent, and
        # its child watcher to the parent's loop (parked: not ours to
        # close).
        _child.park(self._status_watcher)
        self._status_watcher = None
        self.close()
        self.returncode = UNKNOWN_EXIT_CODE


def _libev_reaps_children():
    """Whether libev's SIGCHLD handler is installed.

    gevent's child watchers (gevent.subprocess, a monkey-patched
    os.waitpid) install it; it reaps every child with waitpid(-1) and hands
    each status only to the child watchers of that pid.  Asked of the
    kernel (sigaction, then which shared object holds the handler): it is
    installed from C, invisible to the signal module.
    """
    handler_file = _core.sigchld_handler_file()
    if not handler_file:
        return False
    loop = gevent.get_hub().loop
    loop_module = sys.modules.get(type(loop).__module__)
    loop_file = getattr(loop_module, "__file__", None)
    # libev's handler lives in the extension of gevent's loop.
    return loop_file is not None and os.path.dirname(
        os.path.realpath(handler_file)) == os.path.dirname(
        os.path.realpath(loop_file))


def _status_watcher(pid):
    """A libev child watcher for ``pid`` (see :func:`_libev_reaps_children`),
    so that a status reaped by libev is not lost; None where the loop has
    none.

    Started before the hub runs again, so libev cannot reap the child
    first; it never keeps the loop alive and its callback does nothing:
    join() still waits on the pidfd.  Only when libev's handler is the one
    installed: starting a child watcher installs it, which would replace a
    handler of the program's own.
    """
    loop = gevent.get_hub().loop
    if not getattr(loop, "default", False):
        return None  # child watchers work on the default loop only
    try:
        watcher = loop.child(pid, False, ref=False)
        watcher.start(_ignore)
    except (AttributeError, TypeError, ValueError):
        return None  # a loop implementation without child watchers
    return watcher


def _ignore():
    pass


def _close_quietly(fd):
    try:
        os.close(fd)
    except OSError:
        pass
