"""What every gipc "popen" does once its child exists, whatever the start
method: watch the child, reap it, report its exit status, signal it.

``multiprocessing.process.BaseProcess`` delegates everything about the OS
process to a popen object (``poll``, ``wait``, ``terminate``, ``kill``,
``close``, ``sentinel``).  gipc's popens watch their child through its
pidfd on the gevent hub, then reap exactly that child through the same
pidfd: no SIGCHLD handler, no ``waitpid(-1)``, so the exit statuses of
other children of the program (multiprocessing, subprocess) are never
stolen.  Where libev's SIGCHLD handler reaps every child (gevent's child
watchers), a libev child watcher catches the status.

A start method's popen (``_popen_fork``) starts the child and hands it
over with :meth:`BasePopen._watch`.
"""
import os
import signal
import sys
import warnings

import gevent

from . import _child, _core, _log
from ._cooperate import READ, FdWaiter, check_timeout, fd_readable
from .exceptions import GIPCError

# Exit code reported when something else in the program reaped our child
# (see README, "Child processes and other reapers").
UNKNOWN_EXIT_CODE = 255

#: Whether the kernel has pidfds: None until :func:`check_pidfds` asked.
have_pidfds = None


def check_pidfds():
    """Refuse before starting a child on a kernel without pidfds (Linux <
    5.3): gipc has no other way to watch a child without a SIGCHLD
    handler."""
    global have_pidfds
    if have_pidfds is None:
        fd = _core.pidfd_open(os.getpid())
        have_pidfds = fd >= 0
        if have_pidfds:
            os.close(fd)
    if not have_pidfds:
        raise _no_pidfds()


def _no_pidfds():
    return GIPCError("this kernel has no pidfd_open(); gipc needs Linux 5.3 "
                     "or newer")


class BasePopen:
    """The parent's side of one child: its pid, its pidfd (``sentinel``),
    and once it is reaped, its exit code (``returncode``).

    A subclass starts the child in ``__init__``: it sets ``_forked`` to
    ``[0, -1]`` before the child can exist (its start fills in ``[pid,
    pidfd]``, so that :meth:`_abandon` finds a child whose start was
    interrupted), calls :meth:`_watch` once the child runs, and
    :meth:`_abandon` if the start fails.
    """

    method = "gipc"
    returncode = None
    sentinel = None
    _status_watcher = None
    # What the start made for the child (its plan), freed once the child
    # is gone: freeing it while the child shares its pages would copy them.
    _plan = None

    def _watch(self, started, watch_status):
        """Take over the child the start made: ``started`` is the
        ``_forked`` list, ``[pid, pidfd]``.  With ``watch_status``, start a
        libev child watcher for it (see :func:`libev_reaps_children`)."""
        pid, pidfd = started
        if pidfd < 0:
            del self._forked  # the start killed and reaped it
            raise _no_pidfds()
        # As with multiprocessing, the sentinel stays valid until close()
        # or until this object is collected (__del__, not
        # weakref.finalize, which costs dozens of page writes).
        self.pid, self.sentinel = started
        if watch_status:
            self._status_watcher = _status_watcher(pid)

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
                _log.debug("child %d exited with code %d", self.pid, code)
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


def libev_reaps_children():
    """Whether libev's SIGCHLD handler is installed.

    gevent's child watchers (gevent.subprocess, a monkey-patched
    os.waitpid) install it; it reaps every child with waitpid(-1) and hands
    each status only to the child watchers of that pid.  Asked of the
    kernel (sigaction, then which shared object holds the handler): it is
    installed from C, invisible to the signal module.  Asked before a
    start, so that the child watcher starts before the hub runs again.
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
    """A libev child watcher for ``pid`` (see :func:`libev_reaps_children`),
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
