"""Locks, semaphores, events, conditions and barriers shared by processes,
with the ``multiprocessing.synchronize`` API and cooperative waits.

Each primitive lives in a page of shared memory (``_sync.Block``, in a
memory file that a spawn or forkserver child is sent) made before the
fork; the uncontended paths are one atomic operation there, with no
system call.  A waiter sleeps on a pipe through a gevent watcher, so the
event loop runs on in every process; ``timeout=`` and ``gevent.Timeout``
end a wait and leave the primitive as it was.

A ``Lock`` or ``RLock`` records its holder's pid.  If the holder dies (or
exits) without releasing it, the next ``acquire()`` to notice releases it
on the dead holder's behalf and raises :class:`OwnerDiedError`: the data
the lock protected may be half-updated.  The lock is then free; acquire
again to go on.  A ``Semaphore`` does not know its holders: a unit held
by a process that died stays taken (as with multiprocessing); use
timeouts.
"""
from __future__ import annotations

from typing import Any
from threading import BrokenBarrierError  # what multiprocessing raises
from typing import Callable, Optional, TypeVar, Union

from gevent import getcurrent, sleep

from . import _ownership
from ._bells import Deadline, process_is_dead, wait_readable, wait_until
from ._shared import SharedObject
from ._sync import Block
from .exceptions import GIPCError

__all__ = ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Event",
           "Condition", "Barrier", "OwnerDiedError", "BrokenBarrierError"]

T = TypeVar("T")

#: Largest semaphore value (as POSIX's SEM_VALUE_MAX on Linux).
SEM_VALUE_MAX = 2 ** 31 - 1

# Lock words: 0 holder pid (0 free); RLock: 2 holding greenlet, 3 depth.
_HOLDER, _GREENLET, _DEPTH = 0, 2, 3


class OwnerDiedError(GIPCError):
    """The process holding a lock died without releasing it.  The lock was
    released on its behalf (it is free now); what it protected may be
    inconsistent."""


class _NotOwnedError(AssertionError, ValueError):
    """Release of an RLock (or a Condition's lock) not held by the caller:
    multiprocessing raises AssertionError, threading a ValueError-like
    error; this is both."""



def _pid() -> int:
    return _ownership.pid


class _LockBase(SharedObject):
    """A mutex in shared memory whose word 0 holds the holder's pid."""

    # Each subclass's own.
    acquire: Callable[..., bool]
    release: Callable[[], None]


    def __init__(self) -> None:
        self._block = Block(1)
        self._register()

    def _holder(self) -> int:
        return self._block.load(_HOLDER)

    def _take(self, pid: int) -> bool:
        return self._block.try_lock(pid)

    def _check_dead_holder(self) -> None:
        """Release the lock if its holder died, and say so."""
        block = self._block
        pid = block.load(_HOLDER)
        if pid and pid != _ownership.pid and process_is_dead(pid):
            # Take it over first: once it is free, a new holder's RLock
            # state must not be reset by a late recoverer.
            if block.cas(_HOLDER, pid, _ownership.pid):
                block.store(_GREENLET, 0)
                block.store(_DEPTH, 0)
                block.unlock()  # and wake a waiter
                raise OwnerDiedError(
                    "process %d died holding %r; the lock was released on "
                    "its behalf, and what it protected may be inconsistent"
                    % (pid, self))

    def _acquire_slow(self, blocking: bool, timeout: float | None) -> bool:
        pid = _ownership.pid
        self._check_dead_holder()
        if self._take(pid):
            return True
        if not blocking:
            return False
        block = self._block

        def attempt() -> bool:
            if self._take(pid):
                return True
            self._check_dead_holder()
            return False

        return wait_until(block, 0, attempt, Deadline(timeout),
                          holder=self._holder,
                          still_ready=lambda: block.load(_HOLDER) == 0)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def close(self) -> None:
        """Release this process's descriptors and mapping of the lock (gipc
        extension; other processes keep theirs).  Unusable here after."""
        self._close_shared()


class Lock(_LockBase):
    """A non-recursive lock shared by processes (multiprocessing.Lock):
    any process or greenlet may release it."""


    def acquire(self, block: bool = True,
                timeout: Optional[float] = None) -> bool:
        """Take the lock; wait cooperatively if ``block`` (at most
        ``timeout`` seconds).  Return whether it was taken.

        :raises OwnerDiedError: its holder died holding it (it is free now).
        """
        if self._block.try_lock(_ownership.pid):
            return True
        return self._acquire_slow(block, timeout)

    def release(self) -> None:
        """Free the lock.

        :raises ValueError: it is not held.
        """
        self._block.unlock()

    def locked(self) -> bool:
        """Whether some process holds the lock."""
        return self._block.load(_HOLDER) != 0

    def _is_owned(self) -> Any:
        return self._block.load(_HOLDER) == _ownership.pid

    def _release_save(self) -> Any:
        self.release()
        return None

    def _acquire_restore(self, state: Any) -> None:
        self.acquire()

    def __repr__(self) -> str:
        holder = self._describe_holder()
        return "<gipc.Lock(owner=%s)>" % holder

    def _describe_holder(self) -> Any:
        try:
            pid = self._block.load(_HOLDER)
        except Exception:
            return "unknown"
        return "None" if pid == 0 else str(pid)


class RLock(_LockBase):
    """A recursive lock shared by processes (multiprocessing.RLock): held
    by one greenlet of one process, which may take it again and must
    release it as many times."""


    def acquire(self, block: bool = True,
                timeout: Optional[float] = None) -> bool:
        """Take the lock (again, if this greenlet holds it); wait
        cooperatively if ``block`` (at most ``timeout`` seconds).

        :raises OwnerDiedError: its holder died holding it (it is free now).
        """
        b = self._block
        pid = _ownership.pid
        me = id(getcurrent())
        if b.load(_HOLDER) == pid and b.load(_GREENLET) == me:
            b.add(_DEPTH, 1)
            return True
        if b.try_lock(pid) or self._acquire_slow(block, timeout):
            b.store(_GREENLET, me)
            b.store(_DEPTH, 1)
            return True
        return False

    def release(self) -> None:
        """Release one level; the lock is free once every acquire() of the
        holder is released.

        :raises ValueError: (also an AssertionError, as multiprocessing) the
            caller does not hold it.
        """
        b = self._block
        if not self._is_owned():
            raise _NotOwnedError(
                "attempt to release recursive lock not owned by thread")
        if b.add(_DEPTH, -1) == 0:
            b.store(_GREENLET, 0)
            b.unlock()

    def _is_owned(self) -> Any:
        b = self._block
        return (b.load(_HOLDER) == _ownership.pid
                and b.load(_GREENLET) == id(getcurrent()))

    def _release_save(self) -> Any:
        b = self._block
        depth = b.load(_DEPTH)
        b.store(_DEPTH, 0)
        b.store(_GREENLET, 0)
        b.unlock()
        return depth

    def _acquire_restore(self, depth: Any) -> None:
        self.acquire()
        self._block.store(_DEPTH, depth)

    def __repr__(self) -> str:
        try:
            pid, depth = self._block.load(_HOLDER), self._block.load(_DEPTH)
        except Exception:
            return "<gipc.RLock(unusable)>"
        return "<gipc.RLock(%s, %d)>" % (pid or None, depth)


class Semaphore(SharedObject):
    """A counting semaphore shared by processes (multiprocessing.Semaphore).
    """


    _bounded = False

    def __init__(self, value: int = 1) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError("semaphore value must be an integer")
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        if value > SEM_VALUE_MAX:
            raise ValueError("semaphore value must be <= %d" % SEM_VALUE_MAX)
        self._block = Block(1)
        self._block.store(0, value)
        self._block.store(1, value if self._bounded else 0)
        self._register()

    def acquire(self, block: bool = True,
                timeout: Optional[float] = None) -> bool:
        """Take one unit; wait cooperatively if ``block`` (at most
        ``timeout`` seconds).  Return whether it was taken."""
        b = self._block
        if b.sem_try():
            return True
        if not block:
            return False
        return wait_until(b, 0, b.sem_try, Deadline(timeout),
                          still_ready=lambda: b.load(0) > 0)

    def release(self) -> None:
        """Give one unit back.

        :raises ValueError: (BoundedSemaphore) more releases than acquires.
        """
        self._block.sem_post()

    def get_value(self) -> int:
        """The current value."""
        return self._block.load(0)

    def __enter__(self) -> Any:
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def close(self) -> None:
        """Release this process's descriptors and mapping (gipc extension)."""
        self._close_shared()

    def __repr__(self) -> str:
        try:
            value = self._block.load(0)
        except Exception:
            return "<gipc.%s(unusable)>" % type(self).__name__
        if self._bounded:
            return "<gipc.BoundedSemaphore(value=%d, maxvalue=%d)>" % (
                value, self._block.load(1))
        return "<gipc.Semaphore(value=%d)>" % value


class BoundedSemaphore(Semaphore):
    """A semaphore that refuses to grow past its initial value
    (multiprocessing.BoundedSemaphore)."""

    _bounded = True


class Event(SharedObject):
    """A flag shared by processes (multiprocessing.Event).

    While it is set its pipe holds a byte, so every waiter in every process
    wakes at once.
    """


    def __init__(self) -> None:
        self._block = Block(1)
        self._register()

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._block.load(0) == 1

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        b = self._block
        if b.cas(0, 0, 1):
            b.poke(0)

    def clear(self) -> None:
        """Reset the flag."""
        b = self._block
        if b.cas(0, 1, 0):
            b.drain(0)
            if b.load(0) == 1:
                b.poke(0)  # set() again meanwhile: its byte may be drained

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait cooperatively until the flag is set (at most ``timeout``
        seconds); return whether it is set."""
        b = self._block
        if b.load(0) == 1:
            return True
        deadline = Deadline(timeout)
        fd = b.bell_fd(0)
        while True:
            remaining = deadline.remaining()
            if remaining is not None and remaining <= 0:
                return b.load(0) == 1
            wait_readable((fd,), remaining, b)
            if b.load(0) == 1:
                return True
            # A byte left by a set() that a clear() overtook: drain it, and
            # put one back if the flag got set meanwhile.
            b.drain(0)
            if b.load(0) == 1:
                b.poke(0)
                return True

    def close(self) -> None:
        """Release this process's descriptors and mapping (gipc extension)."""
        self._close_shared()

    def __repr__(self) -> str:
        try:
            state = "set" if self.is_set() else "unset"
        except Exception:
            state = "unusable"
        return "<gipc.Event %s>" % state


# Condition words: 0 last ticket; slots from word 64: ticket, state, pid.
_SLOT_BASE = 64
_SLOT_WORDS = 3
_SLOTS = (512 - _SLOT_BASE) // _SLOT_WORDS
_FREE, _WAITING, _NOTIFIED = 0, 1, 2
# How long a waiter woken for another waiter's notification steps aside.
_STEP_ASIDE = 0.001


class Condition(SharedObject):
    """A condition variable shared by processes (multiprocessing.Condition)
    over a gipc ``Lock`` or ``RLock`` (a new RLock by default).

    Each waiter takes a slot in shared memory; ``notify(n)`` marks the n
    oldest and writes a byte per notified waiter; a waiter that gives up
    frees its slot, and one cancelled after being notified passes the
    notification on.  At most 149 waiters at a time.
    """


    def __init__(self, lock: Union["Lock", "RLock", None] = None) -> None:
        if lock is None:
            lock = RLock()
        elif not isinstance(lock, (Lock, RLock)):
            raise TypeError("Condition needs a gipc.Lock or gipc.RLock, not "
                            "%s" % type(lock).__name__)
        self._lock = lock
        self._parts = (lock,)
        self._block = Block(1)
        self._register()

    def acquire(self, block: bool = True,
                timeout: Optional[float] = None) -> bool:
        """Acquire the underlying lock."""
        return self._lock.acquire(block, timeout)

    def release(self) -> None:
        """Release the underlying lock."""
        self._lock.release()

    def __enter__(self) -> Any:
        return self._lock.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self._lock.release()

    def _check_owned(self, what: Any) -> Any:
        if not self._lock._is_owned():
            raise _NotOwnedError("must acquire() condition before using %s"
                                 % what)

    def _slot(self, index: Any) -> Any:
        return _SLOT_BASE + _SLOT_WORDS * index

    def _take_slot(self) -> Any:
        b = self._block
        for index in range(_SLOTS):
            word = self._slot(index)
            if b.load(word + 1) == _FREE:
                b.store(word, b.add(0, 1))
                b.store(word + 2, _ownership.pid)
                b.store(word + 1, _WAITING)
                return word
        raise GIPCError("too many processes wait on this Condition (%d)"
                        % _SLOTS)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Release the lock, wait cooperatively until notified (at most
        ``timeout`` seconds), take the lock again; return whether it was
        notified."""
        self._check_owned("wait()")
        b = self._block
        deadline = Deadline(timeout)
        word = self._take_slot()
        saved = self._lock._release_save()
        interrupted = True
        try:
            fd = b.bell_fd(0)
            while b.load(word + 1) != _NOTIFIED:
                remaining = deadline.remaining()
                if remaining is not None and remaining <= 0:
                    break
                wait_readable((fd,), remaining, b)
                if b.load(word + 1) != _NOTIFIED:
                    # The byte is another waiter's: let it take it (unless
                    # it died before it could).
                    self._forget_dead_notified()
                    sleep(_STEP_ASIDE)
            interrupted = False
        finally:
            try:
                self._lock._acquire_restore(saved)
            finally:
                # A waiter cancelled after its notification passes it on.
                notified = self._leave_slot(word, pass_on=interrupted)
        return notified

    def _leave_slot(self, word: int, pass_on: bool) -> bool:
        b = self._block
        notified = b.load(word + 1) == _NOTIFIED
        b.store(word + 1, _FREE)
        if notified:
            if pass_on and self._mark_oldest(1):
                pass  # the byte now belongs to the waiter notified instead
            else:
                b.take(0)
        return notified

    def _forget_dead_notified(self) -> None:
        """Free the slots of waiters that died after their notification,
        and take their bytes out of the pipe."""
        b = self._block
        for index in range(_SLOTS):
            word = self._slot(index)
            if b.load(word + 1) == _NOTIFIED:
                pid = b.load(word + 2)
                if pid != _ownership.pid and process_is_dead(pid) and \
                        b.cas(word + 1, _NOTIFIED, _FREE):
                    b.take(0)

    def _mark_oldest(self, n: Any) -> Any:
        """Mark the ``n`` oldest waiting slots notified; return how many."""
        b = self._block
        waiting = []
        for index in range(_SLOTS):
            word = self._slot(index)
            if b.load(word + 1) == _WAITING:
                waiting.append((b.load(word), word))
        waiting.sort()
        marked = 0
        for _, word in waiting:
            if marked == n:
                break
            pid = b.load(word + 2)
            if pid != _ownership.pid and process_is_dead(pid):
                b.store(word + 1, _FREE)  # a waiter that died waiting
                continue
            b.store(word + 1, _NOTIFIED)
            marked += 1
        return marked

    def wait_for(self, predicate: Callable[[], T],
                 timeout: Optional[float] = None) -> T:
        """Wait until ``predicate()`` is true (at most ``timeout`` seconds);
        return its last value."""
        result = predicate()
        if result:
            return result
        deadline = Deadline(timeout)
        while not result:
            remaining = deadline.remaining()
            if remaining is not None and remaining <= 0:
                break
            self.wait(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiters (the oldest first)."""
        self._check_owned("notify()")
        for _ in range(self._mark_oldest(n)):
            self._block.poke(0)

    def notify_all(self) -> None:
        """Wake every waiter."""
        self.notify(_SLOTS)

    def close(self) -> None:
        """Release this process's descriptors and mapping, and the lock's
        (gipc extension)."""
        self._close_shared()

    def __repr__(self) -> str:
        try:
            waiting = sum(
                1 for index in range(_SLOTS)
                if self._block.load(self._slot(index) + 1) == _WAITING)
        except Exception:
            return "<gipc.Condition(unusable)>"
        return "<gipc.Condition(%r, %d)>" % (self._lock, waiting)


# Barrier words: 0 arrived count, 1 state, 2 generation.
_FILLING, _DRAINING, _RESETTING, _BROKEN = 0, 1, 2, 3


class Barrier(SharedObject):
    """A barrier for ``parties`` processes (multiprocessing.Barrier, the
    ``threading.Barrier`` API): each ``wait()`` blocks cooperatively until
    ``parties`` have called it."""


    def __init__(self, parties: int,
                 action: Optional[Callable[[], object]] = None,
                 timeout: Optional[float] = None) -> None:
        if not isinstance(parties, int) or parties < 1:
            raise ValueError("parties must be > 0")
        self._cond = Condition(Lock())
        self._parts = (self._cond,)
        self._block = Block(0)
        self._action = action
        self._timeout = timeout
        self._parties = parties
        self._register()

    def _state(self) -> int:
        return self._block.load(1)

    def wait(self, timeout: Optional[float] = None) -> int:
        """Wait until every party arrived; return this party's arrival
        index (0 to parties - 1).

        :raises threading.BrokenBarrierError: the barrier broke (a wait
            timed out, abort() or reset()).
        """
        if timeout is None:
            timeout = self._timeout
        deadline = Deadline(timeout)
        b = self._block
        with self._cond:
            self._enter(deadline)
            index = b.load(0)
            b.store(0, index + 1)
            try:
                if index + 1 == self._parties:
                    self._release()
                else:
                    self._wait(deadline.remaining())
                return index
            finally:
                b.add(0, -1)
                self._exit()

    def _enter(self, deadline: Any) -> Any:
        # Bounded too (unlike threading's): a party that died while the
        # barrier drained would hold every later wait() here.
        if not self._cond.wait_for(
                lambda: self._state() not in (_DRAINING, _RESETTING),
                deadline.remaining()):
            self._break()
            raise BrokenBarrierError
        if self._state() == _BROKEN:
            raise BrokenBarrierError

    def _release(self) -> Any:
        try:
            if self._action is not None:
                self._action()
            self._block.store(1, _DRAINING)
            self._cond.notify_all()
        except BaseException:
            self._break()
            raise

    def _wait(self, timeout: Any) -> Any:
        if not self._cond.wait_for(lambda: self._state() != _FILLING,
                                   timeout):
            self._break()
            raise BrokenBarrierError
        if self._state() in (_BROKEN, _RESETTING):
            raise BrokenBarrierError

    def _exit(self) -> None:
        if self._block.load(0) == 0 and \
                self._state() in (_RESETTING, _DRAINING):
            self._block.store(1, _FILLING)
            self._cond.notify_all()

    def _break(self) -> None:
        self._block.store(1, _BROKEN)
        self._cond.notify_all()

    def reset(self) -> None:
        """Return the barrier to its initial state; parties waiting get
        BrokenBarrierError."""
        with self._cond:
            if self._block.load(0) > 0:
                if self._state() == _FILLING:
                    self._block.store(1, _RESETTING)
                elif self._state() == _BROKEN:
                    self._block.store(1, _RESETTING)
            else:
                self._block.store(1, _FILLING)
            self._cond.notify_all()

    def abort(self) -> None:
        """Break the barrier: waiting and future wait() calls raise
        BrokenBarrierError until reset()."""
        with self._cond:
            self._break()

    @property
    def parties(self) -> int:
        """Parties needed to pass the barrier."""
        return self._parties

    @property
    def n_waiting(self) -> int:
        """Parties currently waiting."""
        if self._state() == _FILLING:
            return self._block.load(0)
        return 0

    @property
    def broken(self) -> bool:
        """Whether the barrier is broken."""
        return self._state() == _BROKEN

    def close(self) -> None:
        """Release this process's descriptors and mapping (gipc extension)."""
        self._close_shared()

    def __repr__(self) -> str:
        return "<gipc.Barrier(parties=%d)>" % self._parties
