"""Lifecycle logging on the ``gipc`` logger (DEBUG), as in gipc 1.8, and
none of it in a program that does not use logging."""
import logging
import os
import struct

import gevent
import pytest

import gipc
from support import JOIN, finish, needs_pipe_resize, run_script


class Records(logging.Handler):
    """Keeps the messages of the records it handles."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def having(self, text):
        return [m for m in self.messages if text in m]


@pytest.fixture
def records():
    logger = logging.getLogger("gipc")
    handler = Records()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _child_exits(code):
    raise SystemExit(code)


def test_child_started_and_exited(records):
    child = gipc.start_process(_child_exits, args=(3,), name="logged-child")
    pid = child.pid
    finish(child, 3)
    assert records.having("started logged-child, pid %d" % pid)
    assert records.having("child %d exited with code 3" % pid)


def _drain(reader):
    with reader:
        reader.get()


def test_handles_moved_and_closed(records):
    reader, writer = gipc.pipe()
    child = gipc.start_process(_drain, args=(reader,))
    moved = records.having("moved ")
    assert len(moved) == 1 and "to pid %d" % child.pid in moved[0], moved
    assert records.having("closed <") and "Reader" in records.having(
        "closed <")[0]
    with writer:
        writer.put("done")
    finish(child)
    assert any("Writer" in m for m in records.having("closed <"))


@needs_pipe_resize
def test_a_grown_pipe(records):
    with gipc.pipe(encoder=None, decoder=None) as (reader, writer):
        payload = b"x" * (256 * 1024)  # more than a default 64 KiB pipe
        receiver = gevent.spawn(reader.get)
        writer.put(payload)
        assert receiver.get(timeout=JOIN) == payload
        assert records.having("grew the pipe of descriptor %d"
                              % writer.fileno())


def test_a_broken_stream(records):
    with gipc.pipe(encoder=None, decoder=None) as (reader, writer):
        # A header announcing more than the reader accepts breaks it.
        reader.max_message_size = 16
        os.write(writer.fileno(), struct.pack("!i", 1000))
        with pytest.raises(gipc.GIPCProtocolError):
            reader.get(timeout=JOIN)
        broken = records.having("marked broken")
        assert len(broken) == 1 and "Reader" in broken[0]


def test_nothing_is_logged_below_debug(records):
    logging.getLogger("gipc").setLevel(logging.INFO)
    child = gipc.start_process(_child_exits, args=(0,))
    finish(child)
    with gipc.pipe():
        pass
    assert records.messages == []


def test_a_program_without_logging_never_imports_it():
    done = run_script("""
        import sys
        import gipc

        def child(w):
            w.put(1)

        with gipc.pipe() as (r, w):
            p = gipc.start_process(child, args=(w,))
            assert r.get() == 1
            p.join()
        assert p.exitcode == 0
        print("logging" in sys.modules)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
