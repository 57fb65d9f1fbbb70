"""gipc next to multiprocessing and subprocess: no global side effects, and
everyone's children keep their true exit codes."""
import subprocess
import sys

import gevent
import gevent.subprocess

import gipc
from support import run_script as _run_script
from support import needs_dladdr

JOIN = 10


def test_import_changes_nothing_global():
    result = _run_script("""
        import os, signal, subprocess, sys, threading
        import multiprocessing, multiprocessing.context, multiprocessing.process
        import multiprocessing.popen_fork
        def snapshot():
            return {
                "start_method": multiprocessing.get_start_method(
                    allow_none=True),
                "funcs": [os.fork, os.waitpid, os.wait, os.wait4, os.kill,
                          subprocess.Popen, subprocess.Popen._wait,
                          multiprocessing.Process,
                          multiprocessing.process.BaseProcess.start,
                          multiprocessing.Process._Popen,
                          multiprocessing.popen_fork.Popen,
                          multiprocessing.context._default_context,
                          signal.signal, threading.Thread],
                "handlers": {s: signal.getsignal(s)
                             for s in signal.valid_signals()
                             if s not in (signal.SIGKILL, signal.SIGSTOP)},
                "wakeup": signal.set_wakeup_fd(-1),
                "threads": threading.active_count(),
            }
        before = snapshot()
        import gipc
        after_import = snapshot()
        from gevent import monkey
        assert not monkey.is_anything_patched()
        p = gipc.start_process(os.getpid)
        p.join(10)
        assert p.exitcode == 0
        p.close()
        after_use = snapshot()
        assert not monkey.is_anything_patched()
        assert before["start_method"] is None
        for name, snap in (("import", after_import), ("use", after_use)):
            for key in before:
                if key == "threads" and name == "use":
                    continue  # gevent's hub threadpool may have started
                assert snap[key] == before[key], (name, key)
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_gipc_next_to_multiprocessing_and_subprocess():
    result = _run_script("""
        import multiprocessing, os, subprocess, sys
        import gevent, gipc

        def gipc_child(r):
            r.get()
            sys.exit(3)

        def mp_child():
            sys.exit(5)

        r, w = gipc.pipe()
        early = gipc.start_process(gipc_child, args=(r,))  # still running
        quick = gipc.start_process(sys.exit, args=(4,))
        mp = multiprocessing.Process(target=mp_child)
        mp.start()
        sp = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(7)"])
        quick.join(10)
        mp.join(10)  # its exit raced with quick's: nobody stole the status
        codes = {"quick": quick.exitcode, "mp": mp.exitcode,
                 "sp": sp.wait(10)}
        # The others exit while the gipc child is still running and watched.
        mp2 = multiprocessing.Process(target=mp_child)
        mp2.start()
        mp2.join(10)
        sp2 = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(9)"])
        codes["sp2"] = sp2.wait(10)
        codes["mp2"] = mp2.exitcode
        w.put("go")
        early.join(10)
        codes["early"] = early.exitcode
        os_pid = os.fork()
        if os_pid == 0:
            os._exit(11)
        _, status = os.waitpid(os_pid, 0)
        codes["fork"] = os.waitstatus_to_exitcode(status)
        for p in (early, quick, mp, mp2):
            p.close()
        w.close()
        print(sorted(codes.items()))
        print(multiprocessing.get_start_method(allow_none=True))
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(sorted({
        "quick": 4, "mp": 5, "sp": 7, "sp2": 9, "mp2": 5, "early": 3,
        "fork": 11}.items()))
    # multiprocessing.Process() chose the default itself: gipc did not.
    assert lines[1] == "fork"


def _child_with_its_own_children(writer):
    import multiprocessing
    sp = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(7)"])
    g = gipc.start_process(sys.exit, args=(3,))
    ctx = multiprocessing.get_context("fork")
    mp = ctx.Process(target=sys.exit, args=(5,))
    mp.start()
    # All three exit while this child's hub runs: nothing may reap them
    # behind our back (e.g. libev's SIGCHLD handler of a fresh loop).
    g.join(timeout=JOIN)
    mp.join(JOIN)
    codes = (sp.wait(JOIN), g.exitcode, mp.exitcode)
    gs = gevent.subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.exit(6)"])
    codes += (gs.wait(JOIN),)
    g.close()
    mp.close()
    writer.put(codes)


def test_children_of_a_child_keep_their_exit_codes():
    r, w = gipc.pipe()
    p = gipc.start_process(_child_with_its_own_children, args=(w,))
    assert r.get(timeout=30) == (7, 3, 5, 6)
    p.join(timeout=JOIN)
    assert p.exitcode == 0
    p.close()
    r.close()


def test_subprocess_in_the_parent_keeps_its_exit_code_while_gipc_waits():
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_wait_for, args=(r,))
        sp = subprocess.Popen([sys.executable, "-c",
                               "import sys; sys.exit(12)"])
        joiner = gevent.spawn(p.join)
        assert sp.wait(JOIN) == 12
        w.put("go")
        joiner.join(timeout=JOIN)
        assert joiner.successful()
    assert p.exitcode == 0
    p.close()


def _wait_for(reader):
    reader.get()


@needs_dladdr
def test_exit_codes_survive_gevents_child_watchers():
    # gevent.subprocess installs libev's SIGCHLD handler, which reaps every
    # child with waitpid(-1).  gipc's children keep their exit codes anyway,
    # whether libev or gipc reaps first, and so do gevent's own.  In a
    # fresh interpreter: the handler stays installed for good.
    result = _run_script("""
        import os, signal, warnings
        import gevent, gevent.subprocess
        import gipc

        warnings.simplefilter("error")

        def child(code):
            if code < 0:
                os.kill(os.getpid(), -code)
            os._exit(code)

        assert gevent.subprocess.call(["sh", "-c", "exit 4"]) == 4
        codes = []
        for code in (7, 0, 3, -signal.SIGKILL, -signal.SIGTERM):
            for loop_runs_first in (False, True):
                p = gipc.start_process(child, args=(code,))
                if loop_runs_first:
                    # Run the loop until libev has reaped the child.
                    with gevent.Timeout(10, AssertionError("not reaped")):
                        while True:
                            try:
                                os.waitid(os.P_PID, p.pid, os.WEXITED |
                                          os.WNOHANG | os.WNOWAIT)
                            except ChildProcessError:
                                break
                            gevent.sleep(0.001)
                p.join(timeout=10)
                codes.append(p.exitcode)
                p.close()
        print(codes)
        assert gevent.subprocess.call(["sh", "-c", "exit 5"]) == 5
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == str(
        [7, 7, 0, 0, 3, 3, -9, -9, -15, -15])


def test_a_foreign_reaper_costs_the_status_with_a_warning():
    # A SIGCHLD handler of the program's own reaps every child: gipc still
    # sees the exit through the pidfd, so join() returns, but the status is
    # gone: exit code 255 and a RuntimeWarning saying why.
    result = _run_script("""
        import os, signal, warnings
        import gevent
        import gipc

        reaped = []

        def reap_all(signum, frame):
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if pid == 0:
                    return
                reaped.append(pid)

        signal.signal(signal.SIGCHLD, reap_all)
        def until_reaped(pid):
            with gevent.Timeout(10, AssertionError("%d not reaped" % pid)):
                while pid not in reaped:
                    gevent.sleep(0.001)

        p = gipc.start_process(os._exit, args=(7,))
        until_reaped(p.pid)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            p.join(timeout=10)
        print(p.exitcode, [str(w.message) for w in caught])
        p.close()
        # gipc left the program's handler in place.
        q = gipc.start_process(os._exit, args=(0,))
        until_reaped(q.pid)
        q.join(timeout=10)
        q.close()
        """)
    assert result.returncode == 0, result.stderr
    code, messages = result.stdout.split(" ", 1)
    assert code == "255"
    assert "collected by another reaper" in messages
