"""Forking while other OS threads run: gipc forks (as multiprocessing does)
and warns once per process, naming the threads; gevent's own threadpool
workers never trigger the warning."""
import threading
import warnings

import gevent
import pytest

import gipc
from gipc import _popen_fork


def _noop():
    pass


def _start_and_join():
    p = gipc.start_process(_noop)
    p.join(timeout=10)
    assert p.exitcode == 0
    p.close()


@pytest.fixture
def fresh_warning_state(monkeypatch):
    monkeypatch.setattr(_popen_fork, "_warned_threads", False)


def test_warns_once_naming_a_running_thread(fresh_warning_state):
    release = threading.Event()
    thread = threading.Thread(target=release.wait, args=(10,),
                              name="busy-worker")
    thread.start()
    try:
        with pytest.warns(RuntimeWarning, match="busy-worker"):
            _start_and_join()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _start_and_join()  # once per process: no second warning
    finally:
        release.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_gevent_threadpool_workers_do_not_warn(fresh_warning_state):
    pool = gevent.get_hub().threadpool
    assert pool.spawn(lambda: 42).get(timeout=10) == 42
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _start_and_join()


def _send_done(channel):
    channel.put("target done")


def test_a_replaced_threading_shutdown_runs_in_the_child(monkeypatch):
    # gevent's monkey-patching replaces threading._shutdown with a function
    # that also lets ready greenlets run; the child's bootstrap must call
    # it even when there is no thread to join.
    original = threading._shutdown
    with gipc.pipe() as (r, w):
        def replaced():
            w.put("replaced shutdown ran")
            original()

        monkeypatch.setattr(threading, "_shutdown", replaced)
        # No thread-atexit call (pytest's plugins register one), so that
        # only the replacement can make the child call it.
        monkeypatch.setattr(threading, "_threading_atexits", [])
        p = gipc.start_process(_send_done, args=(w,))
        assert r.get(timeout=10) == "target done"
        assert r.get(timeout=10) == "replaced shutdown ran"
        p.join(timeout=10)
        assert p.exitcode == 0
        p.close()
