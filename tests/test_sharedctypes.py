"""gipc.Value and gipc.Array: shared ctypes memory with a gipc lock."""
import ctypes
import pickle

import pytest

import gipc
from gipc import sharedctypes
from support import end


def test_value_types_and_lock():
    v = gipc.Value("d", 1.5)
    try:
        assert v.value == 1.5
        v.value = 2.5
        assert v.get_obj().value == 2.5
        assert isinstance(v.get_lock(), gipc.RLock)
        with v:
            v.value += 1
        assert v.value == 3.5
        assert "c_double" in repr(v)
    finally:
        v.close()


def test_unknown_typecode_is_a_type_error():
    with pytest.raises(TypeError, match="unknown typecode"):
        gipc.Value("z", 1)
    with pytest.raises(TypeError):
        gipc.Array("?", 3)
    with pytest.raises(TypeError):
        gipc.Value(object)


def test_raw_and_given_locks():
    raw = gipc.Value(ctypes.c_int, 7, lock=False)
    assert isinstance(raw, ctypes.c_int) and raw.value == 7
    lock = gipc.Lock()
    v = gipc.Value("i", lock=lock)
    try:
        assert v.get_lock() is lock and v.value == 0
    finally:
        v.close()
    with pytest.raises(AttributeError):
        gipc.Value("i", lock="nope")


def test_array():
    a = gipc.Array("i", [1, 2, 3])
    z = gipc.Array("b", 4)
    try:
        assert len(a) == 3 and a[1] == 2 and a[:] == [1, 2, 3]
        a[0] = 10
        assert a.get_obj()[0] == 10
        assert list(z.get_obj()) == [0, 0, 0, 0]
    finally:
        a.close()
        z.close()
    with pytest.raises(ValueError):
        gipc.RawArray("i", -1)


def test_char_array_is_a_string():
    s = gipc.Array("c", b"hello")
    try:
        assert isinstance(s, sharedctypes.SynchronizedString)
        assert s.value == b"hello" and s.raw == b"hello"
        s.value = b"hi"
        assert s.value == b"hi"
        s.raw = b"HELLO"
        assert s.value == b"HELLO"
    finally:
        s.close()


def _bump(v, a):
    with v.get_lock():
        v.value += 1
    a[0] = 42


def test_children_see_the_same_memory():
    v, a = gipc.Value("q", 0), gipc.Array("i", 2)
    try:
        ps = [gipc.start_process(_bump, args=(v, a)) for _ in range(3)]
        assert [end(p) for p in ps] == [0, 0, 0]
        assert v.value == 3 and a[0] == 42
    finally:
        v.close()
        a.close()


def test_wrappers_cannot_be_pickled():
    v = gipc.Value("i", 1)
    try:
        with pytest.raises(RuntimeError, match="cannot be pickled"):
            pickle.dumps(v)
    finally:
        v.close()


def _read_value(v):
    try:
        v.value
    except gipc.GIPCError:
        return
    raise SystemExit(3)


def test_value_not_given_is_an_error_in_the_child():
    v = gipc.Value("i", 1)
    try:
        p = gipc.start_process(lambda: _read_value(v))
        assert end(p) == 0
        assert v.value == 1
    finally:
        v.close()
