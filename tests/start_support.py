"""Child targets for the tests that run under every start method.

Under "spawn" and "forkserver" a target travels pickled, by reference: it
must be importable in the child.  This module imports nothing but gipc,
so a spawn child that loads it stays cheap (a test module would bring
pytest along).
"""
import os
import struct
import sys

import gipc
from gipc import _ownership


def return_value():
    return 7  # multiprocessing ignores the return value: exit code 0


def exit_with(code):
    sys.exit(code)


def raise_error():
    raise ValueError("boom in the child")


def os_exit(code):
    os._exit(code)


def signal_self(signum):
    os.kill(os.getpid(), signum)


def wait_for_message(reader):
    reader.get()


def with_stderr_to(path, target, *args):
    """Run ``target`` with the child's ``sys.stderr`` writing to ``path``
    through a block-buffered file (so the child's final flush matters)."""
    sys.stderr = open(path, "w", buffering=1 << 16)
    target(*args)


def report_args(writer, *args, **kwargs):
    writer.put((args, kwargs))


def put(writer, value):
    writer.put(value)


def put_pid(writer):
    writer.put(os.getpid())


def put_pid_then_wait(writer, reader):
    """Report the pid, then live until told to exit (so that the parent
    can look at the living child)."""
    writer.put(os.getpid())
    reader.get()


def echo_once(reader, writer):
    writer.put(("echo", reader.get()))


def duplex_echo_once(end):
    end.put(("echo", end.get()))


def duplex_echo(end):
    while True:
        try:
            msg = end.get()
        except EOFError:
            return
        end.put(("echo", msg))


def report_handles(writer):
    # Which gipc handles exist in the child: only the one passed to it.
    writer.put([h is writer for h in _ownership.get_all_handles()])


def report_fd(fd, inode, writer):
    # The parent's reader was not passed: its descriptor is closed here
    # (its number may have been reused for something else since).
    try:
        same = os.fstat(fd).st_ino == inode
    except OSError:
        same = False
    writer.put("open" if same else "closed")


def exit_at_once(w):
    pass


def die_inside_message(w):
    w.put("whole")
    fd = w.fileno()
    os.write(fd, struct.pack(">i", 1000) + b"only part")
    os._exit(0)


def put_to_closed_reader(w, report):
    try:
        w.put("anyone?")
    except BrokenPipeError:
        report.put("BrokenPipeError")
    else:
        report.put("no error")


def sum_numbers(r, w):
    total = 0
    while True:
        try:
            total += sum(r.get())
        except EOFError:
            break
    w.put(total)


def report_world(writer):
    """What a child of any start method reports about its world."""
    import signal
    import threading

    import gevent
    writer.put({
        "pid": os.getpid(),
        "parent_pid": gipc.parent_process().pid,
        "parent_alive": gipc.parent_process().is_alive(),
        "name": gipc.current_process().name,
        "threads": threading.active_count(),
        "sigint": signal.getsignal(signal.SIGINT) is signal.SIG_DFL,
        "hub_runs": gevent.sleep(0) is None,
        "stdin_devnull": sys.stdin.read() == "",
        "main": sys.modules["__main__"].__name__,
    })


def report_conn(conn):
    """A gipc.Connection in a child: receive, answer, report its fds."""
    conn.send(("got", conn.recv()))


class Reporter(gipc.Process):
    """Keeps a gipc pipe handle as an attribute, as multiprocessing code
    keeps a connection: shared with the child, not moved."""

    def __init__(self, writer, start_method=None):
        super().__init__()
        self.writer = writer
        if start_method is not None:
            self._start_method = start_method

    def run(self):
        self.writer.put(("child", os.getpid(), _ownership.pid))


def send(conn, value):
    """Send ``value`` on a multiprocessing-style connection."""
    conn.send(value)


def write_fd(fd, data):
    """Write ``data`` to descriptor number ``fd`` (a ``pass_fds`` one)."""
    os.write(fd, data)


def report_open(fd, inode, writer):
    """Whether descriptor ``fd`` is open here on the file ``inode``."""
    try:
        same = os.fstat(fd).st_ino == inode
    except OSError:
        same = False
    writer.put("open" if same else "closed")
