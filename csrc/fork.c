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
 */
#include "fork.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int
open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    long fd;

    do {
        fd = syscall(SYS_pidfd_open, pid, 0);
    } while (fd < 0 && errno == EINTR);
    return (int)fd;
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

_Static_assert(sizeof(pid_t) == sizeof(int), "pid_t is an int on Linux");

/* A pid argument: a positive int that fits pid_t.  A bare cast would wrap
 * (2**32 + 1 would name pid 1). */
static int
pid_from_object(PyObject *obj, pid_t *pid)
{
    long value = PyLong_AsLong(obj);

    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (value > INT_MAX || value < INT_MIN) {
        PyErr_Format(PyExc_OverflowError, "pid %ld out of range", value);
        return -1;
    }
    if (value <= 0) {
        PyErr_Format(PyExc_ValueError, "pid must be positive, not %ld",
                     value);
        return -1;
    }
    *pid = (pid_t)value;
    return 0;
}

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
           const sigset_t *old_mask)
{
    int pidfd;

    reset_signals(reset);
    (void)pthread_sigmask(SIG_SETMASK, old_mask, NULL);
    /* A pidfd on the parent, for parent_process().is_alive().  If the
     * parent is gone already, the pid may name another process: the
     * parent pid then no longer matches, and -1 says "gone". */
    pidfd = open_pidfd(parent);
    if (pidfd >= 0 && getppid() != parent) {
        close(pidfd);
        pidfd = -1;
    }
    PyOS_AfterFork_Child();
    if (store_result(out, 0, pidfd) < 0) {
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
    int saved_errno, pidfd = open_pidfd(pid);

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
 * fork(signals_to_reset, out) -> None
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
    int saved_errno;
    PyObject *out;

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "fork() takes exactly 2 arguments (%zd given)", nargs);
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
    sigfillset(&all);
    PyOS_BeforeFork();
    saved_errno = pthread_sigmask(SIG_BLOCK, &all, &old);
    if (saved_errno == 0) {
        pid = fork();
        if (pid == 0) {
            return fork_child(out, parent, &reset, &old);
        }
        saved_errno = errno;
        (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (pid > 0) {
            return fork_parent(out, pid);
        }
    }
    PyOS_AfterFork_Parent();
    errno = saved_errno;
    return PyErr_SetFromErrno(PyExc_OSError);
}

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* Exit code from a waitid() result, as multiprocessing reports it. */
static PyObject *
exit_code_from_siginfo(const siginfo_t *info)
{
    if (info->si_code == CLD_KILLED || info->si_code == CLD_DUMPED) {
        return PyLong_FromLong(-(long)info->si_status);
    }
    return PyLong_FromLong((long)info->si_status);
}

/*
 * reap(pid, pidfd=-1) -> exit code or None
 *
 * Non-blocking wait for exactly this child, through its pidfd where one is
 * given (Linux 5.4+): a pid can be reused once someone else reaped the
 * child, a pidfd cannot.  The exit code follows multiprocessing: the exit
 * status, or -signum for a child killed by a signal.  None while the child
 * runs.  ChildProcessError if it is not our child (or was reaped by
 * someone else).
 */
PyObject *
gipc_reap(PyObject *Py_UNUSED(module), PyObject *const *args,
          Py_ssize_t nargs)
{
    long pidfd = -1;
    siginfo_t info;
    pid_t pid, got;
    int status = 0, rc;

    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "reap(pid, pidfd=-1)");
        return NULL;
    }
    if (pid_from_object(args[0], &pid) < 0) {
        return NULL;
    }
    if (nargs == 2) {
        pidfd = PyLong_AsLong(args[1]);
        if (pidfd == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (pidfd > INT_MAX) {
            PyErr_Format(PyExc_OverflowError, "pidfd %ld out of range",
                         pidfd);
            return NULL;
        }
        if (pidfd < -1) {
            PyErr_Format(PyExc_ValueError, "pidfd must be a descriptor or "
                         "-1, not %ld", pidfd);
            return NULL;
        }
    }
    if (pidfd >= 0) {
        memset(&info, 0, sizeof(info));
        do {
            rc = waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info,
                        WEXITED | WNOHANG);
        } while (rc < 0 && errno == EINTR);
        if (rc == 0) {
            if (info.si_pid == 0) {
                Py_RETURN_NONE;
            }
            return exit_code_from_siginfo(&info);
        }
        if (errno != EINVAL) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        /* A kernel without P_PIDFD: by pid. */
    }
    do {
        got = waitpid(pid, &status, WNOHANG);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (got == 0) {
        Py_RETURN_NONE;
    }
    if (WIFSIGNALED(status)) {
        return PyLong_FromLong(-WTERMSIG(status));
    }
    return PyLong_FromLong(WEXITSTATUS(status));
}

/* pidfd_open(pid) -> fd, or -1 where the kernel has no pidfds. */
PyObject *
gipc_pidfd_open(PyObject *Py_UNUSED(module), PyObject *arg)
{
    pid_t pid;
    int fd;

    if (pid_from_object(arg, &pid) < 0) {
        return NULL;
    }
    fd = open_pidfd(pid);
    if (fd < 0 && errno != ENOSYS) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(fd);
}

/*
 * sigchld_handler_file() -> str or None
 *
 * The file of the shared object whose function handles SIGCHLD, "" if
 * unknown, None if SIGCHLD has no handler.  gevent's child watchers
 * install libev's handler from C, invisible to the signal module; this is
 * how gipc tells that one from a handler of the program's own.
 */
PyObject *
gipc_sigchld_handler_file(PyObject *Py_UNUSED(module),
                          PyObject *Py_UNUSED(ignored))
{
    struct sigaction current;
    Dl_info info;
    void *handler;

    if (sigaction(SIGCHLD, NULL, &current) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (current.sa_flags & SA_SIGINFO) {
        handler = (void *)current.sa_sigaction;
    }
    else if (current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN) {
        Py_RETURN_NONE;
    }
    else {
        handler = (void *)current.sa_handler;
    }
    if (dladdr(handler, &info) == 0 || info.dli_fname == NULL) {
        return PyUnicode_FromString("");
    }
    return PyUnicode_DecodeFSDefault(info.dli_fname);
}

/*
 * One lookup of `name` on `type` through CPython's type lookup cache.
 *
 * No public C API has that effect: attribute access on the type object
 * (PyObject_GetAttr) also looks the name up on the metatype, which fills
 * other cache entries (and may push out the parent's own), and it runs
 * descriptors.  CPython's _PyType_Lookup() is exactly the lookup attribute
 * access makes; it is private but exported, unchanged in what gipc uses
 * (a borrowed reference or NULL, never an exception set), in every
 * version up to 3.14.  Newer versions are not known to keep it: there the
 * warming does nothing, which costs a child only the page copies it
 * would have saved (the lookups are a hint, see gipc/_lookups.py).
 */
#if PY_VERSION_HEX < 0x030F0000
#define GIPC_WARMS_TYPE_CACHE 1
#else
#define GIPC_WARMS_TYPE_CACHE 0
#endif

static void
warm_lookup(PyTypeObject *type, PyObject *name)
{
#if GIPC_WARMS_TYPE_CACHE
    (void)_PyType_Lookup(type, name);
#else
    (void)type;
    (void)name;
#endif
}

/*
 * warm_type_cache(lookups) -> None
 *
 * lookups is a flat tuple (type, name, type, name, ...).  Looks each name
 * up on each type, as attribute access does, so that CPython's type
 * lookup cache holds the answers before a fork.  A child's lookup that
 * misses that cache writes to it, and the cache is shared copy-on-write
 * with the parent: every child would copy its pages (see
 * gipc/_lookups.py).  A lookup raises nothing and normally runs no Python
 * code (a class dict with keys that are not str could); only a malformed
 * argument raises TypeError.
 */
PyObject *
gipc_warm_type_cache(PyObject *Py_UNUSED(module), PyObject *lookups)
{
    Py_ssize_t i, n;

    if (!PyTuple_Check(lookups) || PyTuple_GET_SIZE(lookups) % 2 != 0) {
        PyErr_SetString(PyExc_TypeError, "warm_type_cache() takes a tuple "
                        "(type, name, type, name, ...)");
        return NULL;
    }
    n = PyTuple_GET_SIZE(lookups);
    for (i = 0; i < n; i += 2) {
        PyObject *type = PyTuple_GET_ITEM(lookups, i);
        PyObject *name = PyTuple_GET_ITEM(lookups, i + 1);

        if (!PyType_Check(type) || !PyUnicode_CheckExact(name)) {
            PyErr_Format(PyExc_TypeError, "warm_type_cache(): item %zd is "
                         "not a (type, str) pair", i / 2);
            return NULL;
        }
        warm_lookup((PyTypeObject *)type, name);
    }
    Py_RETURN_NONE;
}
