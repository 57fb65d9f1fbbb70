"""The pickle of small plain objects written in C (``gipc_plain_pickle`` in
csrc/fastpath.c, used by the fast ``put()`` of a pickling handle and the
fast ``send()`` of a Connection): for every object, the bytes must be
those of ``pickle.dumps(obj, protocol)`` (protocols 4 and 5), whether the C
writer takes the object or leaves it to pickle, and they must load back to
an object of the same shape (the same sharing of objects, the same
cycles).

Whether the C writer took an object is seen in what the call allocates:
pickle's Pickler allocates a 4 KiB output buffer, the C writer only the
result (``_c_way``).
"""
import copyreg
import functools
import math
import pickle
import struct
import tracemalloc
from multiprocessing.reduction import ForkingPickler

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gipc

PROTOCOLS = (4, 5)
#: What pickle's Pickler allocates at least (its output buffer).
PICKLER_BUFFER = 4096


def _put_get(obj, protocol):
    """The bytes a fast put() writes for ``obj``, and whether the C writer
    made them (it allocates only the result)."""
    r, w = gipc.pipe(encoder=functools.partial(pickle.dumps,
                                               protocol=protocol),
                     decoder=None)
    with r, w:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            w.put(obj)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        data = r.get()
    return data, peak < PICKLER_BUFFER and peak < len(data) + 1024


def _same(a, b, pairs=None):
    """``b`` (loaded) is ``a`` (pickled) rebuilt: equal atoms (floats by
    their bits: NaN, -0.0), containers of the same exact types and
    lengths, and every object met twice in ``a`` met as the same object in
    ``b`` (pickle's memo)."""
    if pairs is None:
        pairs = {}
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, (str, bytes, tuple, list, dict)):
        seen = pairs.get(id(a))
        if seen is not None:
            return seen is b
        pairs[id(a)] = b
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(
            _same(x, y, pairs) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            _same(ka, kb, pairs) and _same(va, vb, pairs)
            for (ka, va), (kb, vb) in zip(a.items(), b.items()))
    return a == b


def _check(obj, protocol):
    """The fast put() of ``obj`` writes pickle's bytes, which load back
    to ``obj``; returns whether the C writer made them."""
    expected = pickle.dumps(obj, protocol)
    data, c_way = _put_get(obj, protocol)
    assert data == expected
    assert _same(obj, pickle.loads(data))
    return c_way


# ------------------------------------------------------------ generated

_NANS = [struct.unpack(">d", bits)[0] for bits in (
    b"\x7f\xf8\x00\x00\x00\x00\x00\x00", b"\xff\xf8\x00\x00\x00\x00\x00\x00",
    b"\x7f\xf0\x00\x00\x00\x00\x00\x01", b"\x7f\xff\xff\xff\xff\xff\xff\xff")]
_INT_EDGES = [0, 1, -1, 255, 256, -256, 65535, 65536, 2 ** 31 - 1, -2 ** 31,
              2 ** 31, -2 ** 31 - 1, 2 ** 63, -2 ** 64, 2 ** 200]

_atoms = st.one_of(
    st.none(), st.booleans(),
    st.integers(-2 ** 33, 2 ** 33), st.sampled_from(_INT_EDGES),
    st.integers(),
    st.floats(), st.sampled_from([0.0, -0.0, math.inf, -math.inf] + _NANS),
    st.text(max_size=12),
    st.text(max_size=300),
    st.sampled_from(["\ud800", "a\udfffb", "\ud83d\ude00", "é", "😀"]),
    st.binary(max_size=12), st.binary(max_size=300),
)
_keys = st.one_of(_atoms, st.tuples(_atoms, _atoms))
_trees = st.recursive(
    _atoms,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.lists(children, max_size=6).map(tuple),
        st.dictionaries(_keys, children, max_size=5)),
    max_leaves=24)


def _mutables(obj, into, seen):
    """The lists and dicts in ``obj``, each once."""
    if id(obj) in seen or not isinstance(obj, (list, tuple, dict)):
        return
    seen.add(id(obj))
    if isinstance(obj, (list, dict)):
        into.append(obj)
    for item in (obj.values() if isinstance(obj, dict) else obj):
        _mutables(item, into, seen)


@st.composite
def _plain_objects(draw):
    """A tree of plain objects in which some objects appear more than
    once, and which may contain itself (through a list or a dict)."""
    pool = draw(st.lists(_trees, min_size=1, max_size=4))
    items = draw(st.lists(st.sampled_from(pool) | _trees, max_size=6))
    kind = draw(st.sampled_from([list, tuple, dict, None]))
    if kind is None:
        top = items[0] if items else pool[0]
    elif kind is dict:
        top = {i: item for i, item in enumerate(items)}
    else:
        top = kind(items)
    mutables = []
    _mutables(top, mutables, set())
    if mutables and draw(st.booleans()):
        target = draw(st.sampled_from(mutables))
        back = draw(st.sampled_from(["top", "tuple", "wide tuple"]))
        back = {"top": top, "tuple": (top,),
                "wide tuple": (top, 1, 2, 3)}[back]
        if isinstance(target, list):
            target.append(back)
        else:
            target["back"] = back
    return top


def test_generated_plain_objects_pickle_as_pickle_dumps():
    taken = []

    @settings(max_examples=400, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(obj=_plain_objects(), protocol=st.sampled_from(PROTOCOLS))
    def check(obj, protocol):
        taken.append(_check(obj, protocol))

    check()
    # The test means something only if the C writer takes many of them.
    assert sum(taken) >= len(taken) // 4, (sum(taken), len(taken))


# ------------------------------------------------------------ targeted


def test_the_c_writer_is_seen_taking_an_object_or_not():
    assert _check((12345, 2.5, "three"), 4)
    assert not _check(2 ** 40, 4)


def _tuple_cycles():
    """Tuples that contain themselves through a list or a dict: pickle
    pops the tuple's items and fetches it from its memo (POP or POP_MARK,
    BINGET) once it finds it memoized after saving them."""
    made = []
    for size in (1, 2, 3, 4, 5):
        inner = []
        t = (inner,) + tuple(range(1, size))
        inner.append(t)
        made.append(t)
        d = {}
        t = tuple(range(1, size)) + (d,)
        d["self"] = t
        made.append(t)
    inner = []
    t = ("s", inner)
    inner.append([t, t])  # the tuple met again after it was fetched
    made.append([t, inner])
    return made


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("obj", _tuple_cycles(), ids=repr)
def test_a_tuple_that_contains_itself_pickles_as_pickle_dumps(obj,
                                                              protocol):
    _check(obj, protocol)


@pytest.mark.parametrize("obj", _tuple_cycles(), ids=repr)
def test_a_tuple_that_contains_itself_sends_as_forkingpickler(obj):
    a, b = gipc.Pipe()
    with a, b:
        a.send(obj)
        data = b.recv_bytes()
    assert data == bytes(ForkingPickler.dumps(obj))
    assert _same(obj, pickle.loads(data))


def test_cycles_through_lists_and_dicts_are_taken():
    loop = []
    loop.append(loop)
    d = {}
    d["d"] = d
    for obj in (loop, d, [loop, d, (loop, d)]):
        assert _check(obj, 4)


class _Int(int):
    def __reduce__(self):
        return (int, (int(self) + 1,))


class _Float(float):
    def __reduce__(self):
        return (float, (-float(self),))


class _Str(str):
    def __reduce__(self):
        return (str, (str(self) + "!",))


class _Bytes(bytes):
    def __reduce__(self):
        return (bytes, (bytes(self) + b"!",))


class _Tuple(tuple):
    def __reduce__(self):
        return (tuple, (tuple(self) + (0,),))


class _List(list):
    def __reduce__(self):
        return (list, (list(self) + [0],))


class _Dict(dict):
    def __reduce__(self):
        return (dict, ({**self, "extra": 0},))


_SUBCLASSED = [_Int(5), _Float(2.5), _Str("s"), _Bytes(b"b"), _Tuple((1,)),
               _List([1]), _Dict(a=1)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("obj", _SUBCLASSED, ids=repr)
def test_subclasses_of_plain_types_are_left_to_pickle(obj, protocol):
    for wrapped in (obj, [obj], (1, obj), {"k": obj}, {obj: 1}
                    if isinstance(obj, (int, float, str, bytes, tuple))
                    else {1: obj}):
        expected = pickle.dumps(wrapped, protocol)
        data, c_way = _put_get(wrapped, protocol)
        assert data == expected
        assert not c_way


def test_a_reducer_registered_for_a_subclass_is_used_by_send():
    reducers = ForkingPickler._extra_reducers
    reducers[_Int] = lambda obj: (str, ("reduced",))
    try:
        a, b = gipc.Pipe()
        with a, b:
            a.send([1, _Int(2)])
            assert b.recv() == [1, "reduced"]
    finally:
        del reducers[_Int]
    assert copyreg.dispatch_table.get(_Int) is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("obj", [
    0.0, -0.0, math.inf, -math.inf, 5e-324, -5e-324, 1.7976931348623157e308,
    *_NANS, [math.nan, -math.nan, 0.0, -0.0],
], ids=lambda o: repr(o) if not isinstance(o, float) else o.hex())
def test_floats_are_written_bit_for_bit(obj, protocol):
    assert _check(obj, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("obj", [
    "\ud800", "\udfff", "a\udc80b", "\ud83d\ude00", ["ok", "\ud800"],
    {"\udfff": 1},
], ids=ascii)
def test_lone_surrogates_are_left_to_pickles_surrogatepass(obj, protocol):
    assert not _check(obj, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("value", [
    0, 1, 255, 256, 65535, 65536, 2 ** 31 - 1, -1, -255, -256, -65536,
    -2 ** 31])
def test_ints_of_32_bits_are_taken(value, protocol):
    assert _check(value, protocol)
    assert _check([value, value // 2], protocol)


@pytest.mark.parametrize("value", [2 ** 31, -2 ** 31 - 1, 2 ** 64, -2 ** 100])
def test_larger_ints_are_left_to_pickle(value):
    assert not _check(value, 4)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("obj", [
    None, True, False, 0, 255, 256, "", "abc", b"", b"x", (), [], {},
    ((),), [[]], [{}],
], ids=repr)
def test_small_pickles_have_a_frame_exactly_when_pickle_writes_one(
        obj, protocol):
    # pickle leaves out a frame of fewer than 4 bytes.
    assert _check(obj, protocol)


def test_shared_and_repeated_objects_are_memoized_as_pickle_does():
    s = "shared"
    lst = [1]
    t = (2, 3)
    b = b"bytes"
    objs = [
        (s, s), [s, [s], {s: s}], (lst, lst), [t, t, (t,)], [b, b],
        ("", ""), (b"", b""), [(), ()], [lst, (lst, [lst])],
        ["equal", "".join(["equ", "al"])],  # equal, not the same object
    ]
    for obj in objs:
        assert _check(obj, 4)


def test_dicts_keep_their_order():
    d = {}
    for k in (5, "b", 1.5, None, (1,), b"k"):
        d[k] = str(k)
    assert _check(d, 4)
    del d[1.5]
    d[1.5] = 0
    assert _check(d, 5)


def _nested(depth):
    obj = 1
    for _ in range(depth):
        obj = [obj]
    return obj


def test_bounds_of_the_c_writer():
    # 8 levels of containers, 256 objects, 32 memo entries, 4096 bytes;
    # beyond each, pickle writes the object (the same bytes).
    assert _check(_nested(8), 4)
    assert not _check(_nested(9), 4)
    assert _check(list(range(255)), 4)
    assert not _check(list(range(256)), 4)
    assert _check([str(i) for i in range(31)], 4)
    assert not _check([str(i) for i in range(32)], 4)
    # PROTO, FRAME, BINBYTES and its length, MEMOIZE, STOP: 18 bytes.
    assert len(pickle.dumps(b"x" * 4078, 4)) == 4096
    _check(b"x" * 4078, 4)
    assert not _check(b"x" * 4079, 4)


@pytest.mark.parametrize("obj", [bytearray(b"ab"), [bytearray()],
                                 frozenset([1]), {1}, 1j, range(3)],
                         ids=repr)
def test_other_types_are_left_to_pickle(obj):
    for protocol in PROTOCOLS:
        assert not _check(obj, protocol)
