"""The demo's path end to end: a child, messages both ways."""
import gipc


def _square(channel):
    channel.put(channel.get() ** 2)


def test_child_squares_a_number():
    with gipc.pipe(duplex=True) as (parent_end, child_end):
        child = gipc.start_process(_square, args=(child_end,))
        parent_end.put(12)
        assert parent_end.get(timeout=10) == 144
        child.join(timeout=10)
    assert child.exitcode == 0
    child.close()
