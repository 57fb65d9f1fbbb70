/*
 * The fork helper (see fork.h).
 *
 * Why in C: between fork() and the first line of Python in the child, a
 * signal handled by a Python handler of the parent would run parent code in
 * the child.  Blocking every signal around fork() and resetting the
 * dispositions in the child before unblocking closes that window, which no
 * Python-level sequence can.  The parent gets a pidfd for the child taken
 * before any Python code of the parent runs again, so no other reaper can
 * race us between fork() and pidfd_open().
 *
 * Where there are no pidfds (the sentinel path), the parent watches the
 * child through a pipe whose write end only the child holds: made here,
 * close-on-exec, and closed here in every child gipc forks after it, so
 * that neither an exec'd program nor a grandchild keeps it.
 */
#include "fork.h"

#include "inherit.h"
#include "pidfd.h"
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Collect the signal numbers of a sequence into a sigset_t. */
static int
sigset_from_sequence(PyObject *seq, sigset_t *set)
{
    PyObject *fast = PySequence_Fast(seq, "signals must be a sequence");
    Py_ssize_t i, n;

    if (fast == NULL) {
        return -1;
    }
    sigemptyset(set);
    n = PySequence_Fast_GET_SIZE(fast);
    for (i = 0; i < n; i++) {
        long signum = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));

        if (signum == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
        if (signum <= 0 || signum >= NSIG) {
            Py_DECREF(fast);
            PyErr_Format(PyExc_ValueError, "signal number %ld out of range",
                         signum);
            return -1;
        }
        if (signum != SIGKILL && signum != SIGSTOP) {
            sigaddset(set, (int)signum);
        }
    }
    Py_DECREF(fast);
    return 0;
}

/* Descriptors to close in the child: at most this many. */
#define CLOSE_IN_CHILD_MAX 8

/* The sequence of descriptors to close in the child, checked in the
 * parent before the fork (nothing may fail in the child).  Returns the
 * count, or -1 with an error set. */
static int
fds_from_sequence(PyObject *seq, int *fds)
{
    PyObject *fast = PySequence_Fast(seq, "close_in_child must be a "
                                     "sequence of descriptors");
    Py_ssize_t n;

    if (fast == NULL) {
        return -1;
    }
    n = PySequence_Fast_GET_SIZE(fast);
    if (n > CLOSE_IN_CHILD_MAX) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "close_in_child: at most %d "
                     "descriptors", CLOSE_IN_CHILD_MAX);
        return -1;
    }
    if (gipc_fds_from_fast(fast, n, fds, "close_in_child") < 0) {
        Py_DECREF(fast);
        return -1;
    }
    Py_DECREF(fast);
    return (int)n;
}

/* A close-on-exec pipe: pipe2() where there is one, else pipe() and
 * fcntl() (a thread that forks and execs in between may leak it into the
 * program it runs; gipc forks from the main thread only). */
static int
cloexec_pipe(int fds[2])
{
#ifdef GIPC_HAVE_PIPE2
    return pipe2(fds, O_CLOEXEC);
#else
    int saved_errno;

    if (pipe(fds) < 0) {
        return -1;
    }
    if (fcntl(fds[0], F_SETFD, FD_CLOEXEC) == 0 &&
        fcntl(fds[1], F_SETFD, FD_CLOEXEC) == 0) {
        return 0;
    }
    saved_errno = errno;
    (void)close(fds[0]);
    (void)close(fds[1]);
    errno = saved_errno;
    return -1;
#endif
}

/* Async-signal-safe: runs in the child before the interpreter is fixed up. */
static void
reset_signals(const sigset_t *set)
{
    struct sigaction dfl;
    int signum;

    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (signum = 1; signum < NSIG; signum++) {
        if (sigismember(set, signum) == 1) {
            (void)sigaction(signum, &dfl, NULL);
        }
    }
}

/* out[0], out[1] = pid, fd (out is a list of two, checked by the caller). */
static int
store_result(PyObject *out, long pid, int fd)
{
    PyObject *pid_obj = PyLong_FromLong(pid);
    PyObject *fd_obj = PyLong_FromLong(fd);

    if (pid_obj == NULL || fd_obj == NULL) {
        Py_XDECREF(pid_obj);
        Py_XDECREF(fd_obj);
        return -1;
    }
    /* PyList_SetItem steals the new items and releases the old ones. */
    (void)PyList_SetItem(out, 0, pid_obj);
    (void)PyList_SetItem(out, 1, fd_obj);
    return 0;
}

/* Wait for a child already sent SIGKILL (which cannot be blocked or
 * handled, so the wait is short), with the GIL released for other
 * threads meanwhile. */
static void
reap_killed(pid_t pid)
{
    pid_t got;

    Py_BEGIN_ALLOW_THREADS
    do {
        got = waitpid(pid, NULL, 0);
    } while (got < 0 && errno == EINTR);
    Py_END_ALLOW_THREADS
}

/*
 * The child's side of gipc_fork(), right after fork() with every signal
 * blocked: put the dispositions back to SIG_DFL, then unblock (a signal
 * can no longer reach a handler of the parent), then CPython's after-fork
 * work, whose hooks may run Python code.
 */
static PyObject *
fork_child(PyObject *out, pid_t parent, const sigset_t *reset,
           const sigset_t *old_mask, GipcInherit *inherit)
{
    int pidfd;

    reset_signals(reset);
    if (inherit != NULL) {
        gipc_inherit_child(inherit, -1);
    }
    (void)pthread_sigmask(SIG_SETMASK, old_mask, NULL);
    /* A pidfd on the parent, for parent_process().is_alive().  If the
     * parent is gone already, the pid may name another process: the
     * parent pid then no longer matches, and -1 says "gone". */
    pidfd = gipc_open_pidfd(parent);
    if (pidfd >= 0 && getppid() != parent) {
        close(pidfd);
        pidfd = -1;
    }
    PyOS_AfterFork_Child();
    if (inherit != NULL) {
        gipc_inherit_release(inherit);
    }
    if (store_result(out, 0, pidfd) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/*
 * The child's side on the sentinel path: as fork_child(), but it keeps
 * the write end of its sentinel pipe (closing the parent's read end) and
 * closes the descriptors the parent listed, before any Python code runs.
 * Under close_fds these are closed first, not replaced by /dev/null: they
 * belong to the fork helper and to gipc's lifeline, and the child never
 * uses their numbers.
 */
static PyObject *
fork_child_sentinel(PyObject *out, const sigset_t *reset,
                    const sigset_t *old_mask, const int *sentinel,
                    const int *close_fds, int n_close,
                    GipcInherit *inherit)
{
    int i;

    reset_signals(reset);
    (void)close(sentinel[0]);
    for (i = 0; i < n_close; i++) {
        (void)close(close_fds[i]);
    }
    if (inherit != NULL) {
        gipc_inherit_child(inherit, sentinel[1]);
    }
    (void)pthread_sigmask(SIG_SETMASK, old_mask, NULL);
    PyOS_AfterFork_Child();
    if (inherit != NULL) {
        gipc_inherit_release(inherit);
    }
    if (store_result(out, 0, sentinel[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/*
 * The parent's side of gipc_fork(), after fork() succeeded and the signal
 * mask is restored.  The result goes into `out` before CPython's
 * after-fork hooks run any Python code (a signal handler among it).
 */
static PyObject *
fork_parent(PyObject *out, pid_t pid)
{
    int saved_errno, pidfd = gipc_open_pidfd(pid);

    if (pidfd < 0 && errno != ENOSYS) {
        saved_errno = errno;
        goto error;
    }
    if (store_result(out, (long)pid, pidfd) < 0) {
        PyErr_Clear();
        saved_errno = ENOMEM;
        goto error;
    }
    if (pidfd < 0) {
        /* No pidfds in this kernel: out says so with -1.  The child could
         * not be watched; do not leave it running. */
        (void)kill(pid, SIGKILL);
        PyOS_AfterFork_Parent();
        reap_killed(pid);
        Py_RETURN_NONE;
    }
    PyOS_AfterFork_Parent();
    Py_RETURN_NONE;

error:
    /* No way to watch the child (out of descriptors, say): do not leave it
     * running unwatched. */
    if (pidfd >= 0) {
        close(pidfd);
    }
    (void)kill(pid, SIGKILL);
    PyOS_AfterFork_Parent();
    reap_killed(pid);
    errno = saved_errno;
    return PyErr_SetFromErrno(PyExc_OSError);
}

/*
 * The parent's side on the sentinel path: the read end of the child's
 * sentinel pipe is the descriptor that watches it.
 */
static PyObject *
fork_parent_sentinel(PyObject *out, pid_t pid, const int *sentinel)
{
    (void)close(sentinel[1]);
    if (store_result(out, (long)pid, sentinel[0]) < 0) {
        PyErr_Clear();
        (void)close(sentinel[0]);
        (void)kill(pid, SIGKILL);
        PyOS_AfterFork_Parent();
        reap_killed(pid);
        errno = ENOMEM;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyOS_AfterFork_Parent();
    Py_RETURN_NONE;
}

/*
 * fork(signals_to_reset, out, close_in_child=None, keep_fds=None,
 *      report=None) -> None
 *
 * The result goes into the list `out` (two items) rather than a return
 * value: a signal that arrives while CPython's after-fork hooks run may
 * have its Python handler raise, at the latest as soon as this call
 * returns; the caller must still be able to find the child then.
 *
 * In the child out becomes [0, parent_pidfd] with the listed signals back at
 * SIG_DFL; parent_pidfd is a pidfd on the parent, or -1 if the parent is
 * already gone or the kernel has no pidfds.  In the parent out becomes
 * [pid, pidfd], pidfd -1 where the kernel has none (the child is then
 * already killed and reaped).  Raises OSError if fork() fails, or if the
 * pidfd cannot be opened for another reason (the child is killed and
 * reaped first), after CPython's after-fork hooks of the parent ran.
 *
 * With close_in_child, a sequence of descriptors (at most 8), the child is
 * watched through a sentinel pipe instead (where there are no pidfds):
 * the parent's out becomes [pid, read end], the child's [0, write end],
 * the only copy of it (close-on-exec), and the listed descriptors are
 * closed in the child before any Python code runs there.
 *
 * With keep_fds, a sequence of descriptors (close_fds=True), and report,
 * the pair (read end, write end) of a close-on-exec pipe, every descriptor
 * of the child but 0, 1, 2, those and the fork helper's own is replaced by
 * /dev/null before any Python code runs there (inherit.c).  The child then
 * closes its ends of the report pipe; if a replacement failed, it writes
 * the errno and the descriptor (two native ints) there instead and exits
 * with GIPC_INHERIT_FAILED_EXIT without running Python code.  The caller
 * waits (cooperatively) for EOF or that report on the read end, and
 * closes both ends in the parent.
 *
 * Signals are blocked across fork() and the child's reset of dispositions
 * only, never across the before- and after-fork hooks: a hook that waits
 * (on a lock, say) must leave the process able to take SIGINT or SIGTERM.
 */
PyObject *
gipc_fork(PyObject *Py_UNUSED(module), PyObject *const *args,
          Py_ssize_t nargs)
{
    sigset_t reset, all, old;
    pid_t pid, parent = getpid();
    int saved_errno, n_close = -1;
    int close_fds[CLOSE_IN_CHILD_MAX];
    int sentinel[2] = {-1, -1};
    GipcInherit inherit_state, *inherit = NULL;
    PyObject *out, *result;

    if (nargs < 2 || nargs > 5) {
        PyErr_Format(PyExc_TypeError,
                     "fork() takes 2 to 5 arguments (%zd given)", nargs);
        return NULL;
    }
    out = args[1];
    if (!PyList_CheckExact(out) || PyList_GET_SIZE(out) != 2) {
        PyErr_SetString(PyExc_TypeError, "fork(): out must be a list of 2");
        return NULL;
    }
    if (sigset_from_sequence(args[0], &reset) < 0) {
        return NULL;
    }
    if (nargs >= 3 && args[2] != Py_None) {
        n_close = fds_from_sequence(args[2], close_fds);
        if (n_close < 0) {
            return NULL;
        }
    }
    if (nargs >= 4 && args[3] != Py_None) {
        if (gipc_inherit_prepare(args[3], nargs == 5 ? args[4] : Py_None,
                                 &inherit_state) < 0) {
            return NULL;
        }
        inherit = &inherit_state;
    }
    if (n_close >= 0 && cloexec_pipe(sentinel) < 0) {
        saved_errno = errno;
        if (inherit != NULL) {
            gipc_inherit_release(inherit);
        }
        errno = saved_errno;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    sigfillset(&all);
    PyOS_BeforeFork();
    saved_errno = pthread_sigmask(SIG_BLOCK, &all, &old);
    if (saved_errno == 0) {
        pid = fork();
        if (pid == 0) {
            if (n_close >= 0) {
                return fork_child_sentinel(out, &reset, &old, sentinel,
                                           close_fds, n_close, inherit);
            }
            return fork_child(out, parent, &reset, &old, inherit);
        }
        saved_errno = errno;
        (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (pid > 0) {
            result = n_close >= 0
                     ? fork_parent_sentinel(out, pid, sentinel)
                     : fork_parent(out, pid);
            if (inherit != NULL) {
                gipc_inherit_release(inherit);
            }
            return result;
        }
    }
    if (n_close >= 0) {
        (void)close(sentinel[0]);
        (void)close(sentinel[1]);
    }
    if (inherit != NULL) {
        gipc_inherit_release(inherit);
    }
    PyOS_AfterFork_Parent();
    errno = saved_errno;
    return PyErr_SetFromErrno(PyExc_OSError);
}
