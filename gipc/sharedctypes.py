"""ctypes objects in memory shared with child processes, as
``multiprocessing.sharedctypes``: ``Value``, ``Array``, ``RawValue`` and
``RawArray``.

The memory is a shared mapping of a memory file (``memfd_create``, or
``shm_open`` unlinked at once) made before the fork, so the parent and
every child see the same bytes; a spawn or forkserver child is given the
file's descriptor and maps it too.  ``Value`` and ``Array`` wrap
the object with a gipc lock (an ``RLock`` unless told otherwise), whose
waits are cooperative; ``get_lock()`` returns it.  The wrappers follow the
sharing rules of gipc's locks (given to a child as a ``Process`` argument
or attribute; not picklable).  The raw objects are plain ctypes objects:
shared with every child they reach, with no checks.
"""
import ctypes
from typing import Any, Iterable, Optional, Tuple, Union

from ._shared import SharedObject
from ._sync import Memory
from .synchronize import Lock, RLock

__all__ = ["RawValue", "RawArray", "Value", "Array", "Synchronized",
           "SynchronizedArray", "SynchronizedString"]

typecode_to_type = {
    "c": ctypes.c_char, "u": ctypes.c_wchar,
    "b": ctypes.c_byte, "B": ctypes.c_ubyte,
    "h": ctypes.c_short, "H": ctypes.c_ushort,
    "i": ctypes.c_int, "I": ctypes.c_uint,
    "l": ctypes.c_long, "L": ctypes.c_ulong,
    "q": ctypes.c_longlong, "Q": ctypes.c_ulonglong,
    "f": ctypes.c_float, "d": ctypes.c_double,
}


def _ctype(typecode_or_type: Any) -> Any:
    if isinstance(typecode_or_type, str):
        try:
            return typecode_to_type[typecode_or_type]
        except KeyError:
            raise TypeError("unknown typecode %r (one of %s, or a ctypes "
                            "type)" % (typecode_or_type,
                                       "".join(typecode_to_type))) from None
    try:
        ctypes.sizeof(typecode_or_type)
    except TypeError:
        raise TypeError("%r is neither a typecode nor a ctypes type"
                        % (typecode_or_type,)) from None
    return typecode_or_type


def _new_shared(type_: Any) -> Any:
    # Memory keeps the mapping alive as long as the object is.
    return type_.from_buffer(Memory(max(ctypes.sizeof(type_), 1)))


_CData: type = ctypes.c_int.__mro__[-2]  # the base of every ctypes type


def _memory_of(obj: Any) -> Optional[Memory]:
    """The Memory a shared ctypes object is made over, or None."""
    if not isinstance(obj, _CData):
        return None
    # from_buffer() keeps a view of the buffer in _objects (an aggregate
    # keeps it in a dict there, under the key of index -1).
    view = getattr(obj, "_objects", None)
    if isinstance(view, dict):
        view = view.get("ffffffff")
    memory = getattr(view, "obj", None)
    return memory if type(memory) is Memory else None


def reduce_for_child(obj: Any) -> Optional[Tuple[Any, Memory]]:
    """How to send the shared ctypes object ``obj`` to a child: its type
    (picklable: an array type as its item type and length) and its
    Memory; None if it is not one (for ``_spawn``)."""
    memory = _memory_of(obj)
    if memory is None:
        return None
    return (_type_recipe(type(obj)), memory)


def _type_recipe(type_: Any) -> Any:
    # ctypes makes array types on the fly: pickle cannot find them by name.
    if issubclass(type_, ctypes.Array):
        return ("array", _type_recipe(type_._type_), type_._length_)
    return type_


def _type_of(recipe: Any) -> Any:
    if isinstance(recipe, tuple):
        return _type_of(recipe[1]) * recipe[2]
    return recipe


def attach(recipe: Any, memory: Memory) -> Any:
    """The shared ctypes object over ``memory`` (received from another
    process) of the type ``recipe`` describes (for ``_spawn``)."""
    return _type_of(recipe).from_buffer(memory)


def RawValue(typecode_or_type: Union[str, type], *args: Any) -> Any:
    """A ctypes object of that type (or typecode) in shared memory,
    initialised with ``args``."""
    obj = _new_shared(_ctype(typecode_or_type))
    obj.__init__(*args)
    return obj


def RawArray(typecode_or_type: Union[str, type],
             size_or_initializer: Union[int, Iterable[Any]]) -> Any:
    """A ctypes array in shared memory: ``size_or_initializer`` zeroed
    items, or a copy of that sequence."""
    type_ = _ctype(typecode_or_type)
    if isinstance(size_or_initializer, int):
        if size_or_initializer < 0:
            raise ValueError("array size must be >= 0")
        return _new_shared(type_ * size_or_initializer)
    items = list(size_or_initializer)
    obj = _new_shared(type_ * len(items))
    obj.__init__(*items)
    return obj


def _lock_for(lock: object) -> Union[Lock, RLock]:
    if lock is True or lock is None:
        return RLock()
    if not isinstance(lock, (Lock, RLock)):
        raise AttributeError("%r has no method 'acquire'" % (lock,)
                             if not hasattr(lock, "acquire") else
                             "lock must be a gipc.Lock or gipc.RLock, not %r"
                             % (lock,))
    return lock


def Value(typecode_or_type: Union[str, type], *args: Any,
          lock: Union[bool, Lock, RLock, None] = True) -> Any:
    """A shared ctypes object wrapped with a gipc lock (``lock=True``: a new
    RLock; or a given gipc Lock/RLock); ``lock=False``: the raw object."""
    obj = RawValue(typecode_or_type, *args)
    if lock is False:
        return obj
    return Synchronized(obj, _lock_for(lock))


def Array(typecode_or_type: Union[str, type],
          size_or_initializer: Union[int, Iterable[Any]], *,
          lock: Union[bool, Lock, RLock, None] = True) -> Any:
    """A shared ctypes array wrapped with a gipc lock (as :func:`Value`)."""
    obj = RawArray(typecode_or_type, size_or_initializer)
    if lock is False:
        return obj
    guard = _lock_for(lock)
    if isinstance(obj, ctypes.Array) and obj._type_ is ctypes.c_char:
        return SynchronizedString(obj, guard)
    return SynchronizedArray(obj, guard)


class SynchronizedBase(SharedObject):
    """A shared ctypes object and the gipc lock that guards it."""

    def __init__(self, obj: Any, lock: Union[Lock, RLock]) -> None:
        self._obj = obj
        self._lock = lock
        self._parts = (lock,)
        self.acquire = lock.acquire
        self.release = lock.release
        self._register()

    def __enter__(self) -> Any:
        return self._lock.__enter__()

    def __exit__(self, *exc_info: Any) -> Any:
        return self._lock.__exit__(*exc_info)

    def get_obj(self) -> Any:
        """The raw ctypes object."""
        return self._obj

    def get_lock(self) -> Union[Lock, RLock]:
        """The gipc lock that guards it."""
        return self._lock

    def close(self) -> None:
        """Release this process's descriptors: the lock's, and the memory
        file's (the memory itself stays mapped while the object lives; it
        can no longer be sent to a spawn or forkserver child) (gipc
        extension)."""
        self._close_shared()

    def _release_shared(self, error: Any, message: Any,
                        wake: Any = True) -> None:
        # Closed, or not given to this (fork) child: the memory file goes
        # too, as a queue's or a lock's does.
        memory = _memory_of(self._obj)
        if memory is not None:
            memory.close_fd()
        super()._release_shared(error, message, wake)

    def __repr__(self) -> str:
        return "<%s wrapper for %s>" % (type(self).__name__, self._obj)


def _locked(name: str, doc: str) -> property:
    """A property reading and setting ``self._obj.<name>`` under the
    wrapper's lock."""

    def get(self: "SynchronizedBase") -> Any:
        with self._lock:
            return getattr(self._obj, name)

    def set_(self: "SynchronizedBase", new: Any) -> None:
        with self._lock:
            setattr(self._obj, name, new)

    return property(get, set_, doc=doc)


class Synchronized(SynchronizedBase):
    """A shared value; reading or setting ``value`` takes the lock."""

    value = _locked("value", "The shared value (read and set under the lock).")


class SynchronizedArray(SynchronizedBase):
    """A shared array; every item access takes the lock."""

    def __len__(self) -> int:
        return len(self._obj)

    def __getitem__(self, index: Any) -> Any:
        with self._lock:
            return self._obj[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        with self._lock:
            self._obj[index] = value


class SynchronizedString(SynchronizedArray):
    """A shared char array with ``value`` and ``raw``."""

    value = _locked("value", "The string up to its first NUL (under the "
                    "lock).")
    raw = _locked("raw", "All the array's bytes (under the lock).")
