"""Start methods: contexts and the default start method, what a spawn or
forkserver child gets, and the errors raised before any child exists."""
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import warnings

import gevent
import pytest

import gipc
from gipc import _popen, _popen_fork, context
from gipc._spawn import StartError
from start_support import (
    Reporter, put, put_pid, report_conn, report_world, return_value, send)
from support import SCRIPT_CWD, children, end, script_env

JOIN = 10
PICKLING = ("spawn", "forkserver")


@pytest.fixture
def restore_default():
    yield
    gipc.set_start_method(None, force=True)
    assert gipc.get_start_method() == "fork"


# --- contexts ------------------------------------------------------------

def test_contexts_follow_multiprocessing_s_shape():
    assert gipc.get_all_start_methods() == ["fork", "spawn", "forkserver"]
    assert gipc.get_start_method() == "fork"
    assert gipc.get_start_method(allow_none=True) is None
    for method in gipc.get_all_start_methods():
        ctx = gipc.get_context(method)
        assert ctx is gipc.get_context(method)
        assert ctx.get_start_method() == method
        assert issubclass(ctx.Process, gipc.Process)
        assert ctx.Process._start_method == method
        assert ctx.get_context("fork") is gipc.get_context("fork")
        assert ctx.Pipe is gipc.Pipe and ctx.pipe is gipc.pipe
        assert ctx.Queue is gipc.Queue and ctx.Lock is gipc.Lock
        assert ctx.Value is gipc.Value and ctx.Barrier is gipc.Barrier
    default = gipc.get_context()
    assert default.get_start_method() == "fork"
    assert default.Process is gipc.Process
    assert gipc.get_context("fork").Pool is gipc.Pool
    assert gipc.get_context("fork").ProcessPoolExecutor is \
        gipc.ProcessPoolExecutor
    spawn_pool = gipc.get_context("spawn").Pool
    assert spawn_pool.func is gipc.Pool
    assert spawn_pool.keywords == {"context": gipc.get_context("spawn")}
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        gipc.get_context("spawn").nothing
    assert isinstance(gipc.get_context("spawn"), context.BaseContext)


def test_unknown_start_method_is_a_value_error_and_starts_nothing():
    before = children()
    with pytest.raises(ValueError, match="no start method 'vfork'"):
        gipc.get_context("vfork")
    with pytest.raises(ValueError, match="no start method 'vfork'"):
        gipc.set_start_method("vfork")
    r, w = gipc.pipe()
    with r, w:
        with pytest.raises(ValueError, match="no start method 'vfork'"):
            gipc.start_process(put, args=(w, 1), start_method="vfork")
        assert not w.closed
    assert children() == before
    assert gipc.get_start_method() == "fork"


def test_set_start_method_changes_gipc_s_default_only(restore_default):
    mp_before = multiprocessing.get_start_method(allow_none=True)
    gipc.set_start_method("spawn")
    assert gipc.get_start_method() == "spawn"
    assert gipc.get_context().get_start_method() == "spawn"
    assert multiprocessing.get_start_method(allow_none=True) == mp_before
    with pytest.raises(RuntimeError, match="already been set"):
        gipc.set_start_method("forkserver")
    gipc.set_start_method("forkserver", force=True)
    r, w = gipc.pipe()
    with r:
        p = gipc.start_process(put_pid, args=(w,))
        assert p._popen.method == "forkserver"
        assert r.get(timeout=JOIN) == p.pid
        assert end(p) == 0
    # A process whose class names its method keeps it.
    r, w = gipc.pipe()
    with r:
        p = gipc.get_context("fork").Process(target=put_pid, args=(w,))
        p.start()
        assert p._popen.method == "gipc"  # the fork popen
        assert end(p) == 0


@pytest.mark.parametrize("method", gipc.get_all_start_methods())
def test_context_start_process_and_process(method):
    ctx = gipc.get_context(method)
    r, w = ctx.pipe()
    with r:
        p = ctx.start_process(put_pid, args=(w,), name="ctx-child")
        assert isinstance(p, gipc._GProcess) and p.name == "ctx-child"
        assert r.get(timeout=JOIN) == p.pid
        assert end(p) == 0
    a, b = ctx.Pipe()
    with a:
        p = ctx.Process(target=report_conn, args=(b,))
        p.start()
        assert b.closed  # moved to the child
        a.send("hello")
        assert a.recv() == ("got", "hello")
        assert end(p) == 0


# --- what a spawn or forkserver child gets ---------------------------------

@pytest.mark.parametrize("method", PICKLING)
def test_child_world(method):
    r, w = gipc.pipe()
    with r:
        p = gipc.start_process(report_world, args=(w,), start_method=method)
        pid, name = p.pid, p.name
        world = r.get(timeout=JOIN)
        assert end(p) == 0
    assert world["pid"] == pid
    assert world["parent_pid"] == os.getpid()
    assert world["parent_alive"] is True
    assert world["name"] == name
    assert world["threads"] == 1
    assert world["sigint"] is True  # at its default, as in a fork child
    assert world["hub_runs"] is True
    assert world["stdin_devnull"] is True


@pytest.mark.parametrize("method", PICKLING)
def test_process_subclass_attribute_handle_is_shared(method):
    r, w = gipc.pipe()
    with r:
        p = Reporter(w, method)
        p.start()
        assert r.get(timeout=JOIN) == ("child", p.pid, p.pid)
        assert not w.closed
        w.close()
        assert end(p) == 0


@pytest.mark.parametrize("method", PICKLING)
def test_multiprocessing_connection_reaches_the_child(method):
    # multiprocessing's own objects pickle for a child through the popen's
    # duplicate_for_child(), as with multiprocessing's spawn.
    a, b = multiprocessing.Pipe()
    with a, b:
        p = gipc.start_process(send, args=(b, "over mp"),
                               start_method=method)
        assert a.poll(JOIN)
        assert a.recv() == "over mp"
        assert end(p) == 0


@pytest.mark.parametrize("method", PICKLING)
def test_no_thread_warning_when_not_forking_this_process(method, monkeypatch):
    monkeypatch.setattr(_popen_fork, "_warned_threads", False)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, args=(JOIN,))
    thread.start()
    try:
        r, w = gipc.pipe()
        with r, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            p = gipc.start_process(put_pid, args=(w,), start_method=method)
            assert r.get(timeout=JOIN) == p.pid
            assert end(p) == 0
        assert [str(c.message) for c in caught] == []
    finally:
        stop.set()
        thread.join(JOIN)


def test_fork_with_a_thread_warns_and_names_forkserver(monkeypatch):
    monkeypatch.setattr(_popen_fork, "_warned_threads", False)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, args=(JOIN,))
    thread.start()
    try:
        with pytest.warns(RuntimeWarning,
                          match='start_method="forkserver"'):
            p = gipc.start_process(return_value)
        assert end(p) == 0
    finally:
        stop.set()
        thread.join(JOIN)


# --- errors before any child exists ------------------------------------------

def _assert_nothing_started(before, w):
    assert children() == before
    assert not w.closed  # nothing moved
    w.put("still usable")


@pytest.mark.parametrize("method", PICKLING)
def test_unpicklable_target_raises_before_any_child(method):
    before = children()
    r, w = gipc.pipe()
    with r, w:
        with pytest.raises(StartError, match="cannot send the target") as e:
            gipc.start_process(lambda w: None, args=(w,),
                               start_method=method)
        assert isinstance(e.value, pickle.PicklingError)
        assert isinstance(e.value, gipc.GIPCError)
        assert "lambda" in str(e.value)
        _assert_nothing_started(before, w)
        assert r.get(timeout=JOIN) == "still usable"


@pytest.mark.parametrize("method", PICKLING)
def test_unpicklable_argument_is_named(method):
    before = children()
    r, w = gipc.pipe()
    with r, w:
        with pytest.raises(StartError, match="argument 1 .*generator"):
            gipc.start_process(put, args=(w, (i for i in ())),
                               start_method=method)
        with pytest.raises(StartError, match="keyword argument 'value'"):
            gipc.start_process(put, kwargs={"writer": w,
                                            "value": threading.Lock()},
                               start_method=method)
        _assert_nothing_started(before, w)
        assert r.get(timeout=JOIN) == "still usable"


def test_local_function_target_raises():
    def local():
        pass
    before = children()
    with pytest.raises(StartError, match="cannot send the target"):
        gipc.start_process(local, start_method="spawn")
    assert children() == before


def test_target_from_a_main_the_child_cannot_import(tmp_path):
    # python -c: __main__ has no file, so a spawn child could not find the
    # target there; the parent says so before starting anything.
    code = textwrap.dedent("""
        import gipc
        def target():
            pass
        try:
            gipc.start_process(target, start_method="spawn")
        except gipc.GIPCError as exc:
            print("refused:", exc)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        timeout=60, cwd=SCRIPT_CWD, env=script_env())
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout
    assert "defined in __main__" in out.stdout


def test_target_in_a_main_script_runs_and_the_main_block_does_not(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent("""
        import gipc
        print("top level ran as", __name__, flush=True)

        def target(w):
            w.put("from " + __name__)

        if __name__ == "__main__":
            for method in ("spawn", "forkserver"):
                r, w = gipc.pipe()
                p = gipc.start_process(target, args=(w,),
                                       start_method=method)
                print(method, r.get(timeout=10), flush=True)
                p.join(10)
                print("exit", p.exitcode, flush=True)
                r.close()
    """))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True,
        timeout=60, cwd=str(tmp_path),
        env=script_env())
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines.count("top level ran as __main__") == 1
    assert "spawn from __mp_main__" in lines
    assert "forkserver from __mp_main__" in lines
    assert lines.count("exit 0") == 2
    # The child ran the script's top level as __mp_main__, not its block.
    assert "top level ran as __mp_main__" in lines


@pytest.mark.parametrize("method", ["fork", *PICKLING])
def test_handle_hidden_in_a_container_raises_before_any_child(method):
    before = children()
    r, w = gipc.pipe()
    with r, w:
        with pytest.raises(gipc.GIPCError, match="inside a list argument"):
            gipc.start_process(put, args=([w], 1), start_method=method)
        _assert_nothing_started(before, w)
        assert r.get(timeout=JOIN) == "still usable"


class _Holder:
    """An argument holding a handle as an attribute."""

    def __init__(self, handle):
        self.handle = handle


@pytest.mark.parametrize("method", PICKLING)
def test_handle_hidden_in_an_object_raises_under_pickling_methods(method):
    # Under fork such a handle is closed in the child; a pickling start
    # method cannot send it at all, and says which handle.
    before = children()
    r, w = gipc.pipe()
    with r, w:
        with pytest.raises(StartError, match="not passed to the child "
                                             "directly"):
            gipc.start_process(put, args=(_Holder(w), 1),
                               start_method=method)
        _assert_nothing_started(before, w)
        assert r.get(timeout=JOIN) == "still usable"


@pytest.mark.parametrize("method", PICKLING)
def test_shared_object_hidden_in_an_object_is_refused_clearly(method, shared):
    # Under fork such a queue is disowned in the child.
    queue = shared(gipc.Queue)
    before = children()
    with pytest.raises(StartError, match="not passed to the child "
                                         "directly"):
        gipc.start_process(put, args=(_Holder(queue), 1),
                           start_method=method)
    assert children() == before
    queue.put("still usable")
    assert queue.get(timeout=JOIN) == "still usable"


@pytest.mark.parametrize("method", PICKLING)
def test_start_from_the_hub_raises(method):
    outcome = []

    def in_hub():
        try:
            gipc.start_process(return_value, start_method=method)
        except gipc.GIPCError as exc:
            outcome.append(str(exc))

    gevent.get_hub().loop.run_callback(in_hub)
    gevent.sleep(0)
    gevent.sleep(0)
    assert outcome and "hub" in outcome[0]


def test_popen_classes_load_on_first_use():
    code = ("import sys, gipc; "
            "print('gipc._popen_spawn' in sys.modules, "
            "'gipc._forkserver' in sys.modules)")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        timeout=60, cwd=SCRIPT_CWD, env=script_env())
    assert out.stdout.split() == ["False", "False"], out.stderr
    assert _popen.popen_class("spawn").method == "spawn"


def test_a_start_while_the_child_imports_main_is_refused(tmp_path):
    # A script that starts a child at its top level: the spawn child runs
    # that top level again (as __mp_main__) and must not start children
    # of its own there, without end; it fails with a clear error instead.
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent("""
        import gipc
        def noop():
            pass
        p = gipc.start_process(noop, start_method="spawn")
        p.join(10)
        print("exit", p.exitcode, flush=True)
    """))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True,
        timeout=60, cwd=str(tmp_path),
        env=script_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["exit 1"]
    assert "if __name__ == \"__main__\":" in out.stderr
    assert out.stderr.count("RuntimeError: a child process was started") == 1


def test_spawn_helper_rejects_bad_input_clearly():
    from gipc import _spawnc
    with pytest.raises(TypeError, match="3 arguments"):
        _spawnc.spawn(b"/bin/true", [b"true"])
    with pytest.raises(TypeError, match="path must be bytes"):
        _spawnc.spawn("/bin/true", [b"true"], [])
    with pytest.raises(TypeError, match="argv must be a list of bytes"):
        _spawnc.spawn(b"/bin/true", ["true"], [])
    with pytest.raises(TypeError, match="envp must be a list of bytes"):
        _spawnc.spawn(b"/bin/true", [b"true"], [1])
    with pytest.raises(ValueError, match="argv must not be empty"):
        _spawnc.spawn(b"/bin/true", [], [])
    with pytest.raises(FileNotFoundError):
        _spawnc.spawn(b"/nonexistent/gipc-test", [b"x"], [])


def test_spawn_helper_resets_signals_and_mask(tmp_path):
    import signal
    from gipc import _spawnc
    out = tmp_path / "status"
    old = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    try:
        pid = _spawnc.spawn(
            b"/bin/sh", [b"sh", b"-c", b"grep -E '^Sig(Blk|Ign)' "
                         b"/proc/self/status > " + bytes(out)], [])
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR1])
        signal.signal(signal.SIGUSR2, old)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    masks = dict(line.split(":") for line in out.read_text().splitlines())
    assert int(masks["SigBlk"], 16) == 0
    # Only what the shell itself ignores may be ignored; not SIGUSR2.
    assert not int(masks["SigIgn"], 16) & (1 << (signal.SIGUSR2 - 1))


@pytest.mark.parametrize("method", PICKLING)
def test_pass_fds_are_open_under_their_numbers(method):
    # What gipc.Process records for pass_fds (its _pass_fds attribute)
    # reaches a spawn or forkserver child under the same numbers.
    from start_support import write_fd
    r, w = os.pipe()
    try:
        p = gipc.Process(target=write_fd, args=(w, b"through pass_fds"))
        p._start_method = method
        p._pass_fds = (w,)
        p.start()
        assert end(p) == 0
        os.close(w)
        w = -1
        assert os.read(r, 100) == b"through pass_fds"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_pools_fork_whatever_the_default(restore_default):
    gipc.set_start_method("spawn")
    with gipc.Pool(1) as pool:
        assert pool.apply(os.getpid) != os.getpid()
        pool.close()
        pool.join()


@pytest.mark.parametrize("method", PICKLING)
def test_an_inheritable_descriptor_not_passed_is_closed(method):
    # Not close-on-exec, so an exec'd or forked child would keep it; a
    # spawn or forkserver child closes everything it was not given.
    from start_support import report_open
    r_fd, w_fd = os.pipe()
    os.set_inheritable(w_fd, True)
    inode = os.fstat(w_fd).st_ino
    try:
        r, w = gipc.pipe()
        with r:
            p = gipc.start_process(report_open, args=(w_fd, inode, w),
                                   start_method=method)
            assert r.get(timeout=JOIN) == "closed"
            assert end(p) == 0
    finally:
        os.close(r_fd)
        os.close(w_fd)
