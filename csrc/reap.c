/*
 * Reaping exactly one child (see reap.h).
 */
#include "reap.h"

#include "pidfd.h"
#include "platform.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

/* A bound on spin_us: a millisecond (the hub waits meanwhile). */
#define REAP_SPIN_US_MAX 1000L

#if defined(GIPC_HAVE_PIDFD) && !defined(P_PIDFD)
#define P_PIDFD 3
#endif

#ifdef GIPC_HAVE_PIDFD
/* Exit code from a waitid() result, as multiprocessing reports it. */
static PyObject *
exit_code_from_siginfo(const siginfo_t *info)
{
    if (info->si_code == CLD_KILLED || info->si_code == CLD_DUMPED) {
        return PyLong_FromLong(-(long)info->si_status);
    }
    return PyLong_FromLong((long)info->si_status);
}
#endif

/* The optional pidfd argument: a descriptor, or -1 for none. */
static int
pidfd_from_object(PyObject *obj, int *pidfd)
{
    long value = PyLong_AsLong(obj);

    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (value > INT_MAX) {
        PyErr_Format(PyExc_OverflowError, "pidfd %ld out of range", value);
        return -1;
    }
    if (value < -1) {
        PyErr_Format(PyExc_ValueError, "pidfd must be a descriptor or -1, "
                     "not %ld", value);
        return -1;
    }
    *pidfd = (int)value;
    return 0;
}

/* Through the pidfd: 1 with *result set (an exit code, None while the
 * child runs, or NULL with an error set), 0 if the kernel has no P_PIDFD
 * (the caller falls back to the pid). */
static int
reap_by_pidfd(int pidfd, PyObject **result)
{
#ifdef GIPC_HAVE_PIDFD
    siginfo_t info;
    int rc;

    memset(&info, 0, sizeof(info));
    do {
        rc = waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info,
                    WEXITED | WNOHANG);
    } while (rc < 0 && errno == EINTR);
    if (rc == 0) {
        *result = info.si_pid == 0 ? Py_NewRef(Py_None)
                                   : exit_code_from_siginfo(&info);
        return 1;
    }
    if (errno == EINVAL) {
        return 0;
    }
    *result = PyErr_SetFromErrno(PyExc_OSError);
    return 1;
#else
    /* No pidfds in this build: never one to reap through. */
    (void)pidfd;
    (void)result;
    return 0;
#endif
}

static int64_t
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* waitpid(pid, WNOHANG), retried for up to spin_us microseconds while the
 * child runs, yielding the CPU between tries (with the GIL released): the
 * child may need this very CPU to finish exiting. */
static pid_t
wait_spinning(pid_t pid, int *status, long spin_us)
{
    pid_t got;
    int64_t until = 0;

    do {
        got = waitpid(pid, status, WNOHANG);
    } while (got < 0 && errno == EINTR);
    if (got != 0 || spin_us <= 0) {
        return got;
    }
    Py_BEGIN_ALLOW_THREADS
    until = now_us() + spin_us;
    do {
        (void)sched_yield();
        got = waitpid(pid, status, WNOHANG);
    } while ((got == 0 && now_us() < until) || (got < 0 && errno == EINTR));
    Py_END_ALLOW_THREADS
    return got;
}

static PyObject *
reap_by_pid(pid_t pid, long spin_us)
{
    pid_t got;
    int status = 0;

    got = wait_spinning(pid, &status, spin_us);
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

/*
 * reap(pid, pidfd=-1, spin_us=0) -> exit code or None
 *
 * Non-blocking wait for exactly this child, through its pidfd where one is
 * given (Linux 5.4+): a pid can be reused once someone else reaped the
 * child, a pidfd cannot.  The exit code follows multiprocessing: the exit
 * status, or -signum for a child killed by a signal.  None while the child
 * runs.  ChildProcessError if it is not our child (or was reaped by
 * someone else).
 *
 * spin_us (by pid only, at most 1000): a child known to be exiting (its
 * sentinel reported EOF, a moment before it becomes a zombie) is waited
 * for that long, yielding the CPU between tries.
 */
PyObject *
gipc_reap(PyObject *Py_UNUSED(module), PyObject *const *args,
          Py_ssize_t nargs)
{
    PyObject *result;
    pid_t pid;
    int pidfd = -1;
    long spin_us = 0;

    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "reap(pid, pidfd=-1, spin_us=0)");
        return NULL;
    }
    if (gipc_pid_from_object(args[0], &pid) < 0) {
        return NULL;
    }
    if (nargs >= 2 && pidfd_from_object(args[1], &pidfd) < 0) {
        return NULL;
    }
    if (nargs == 3) {
        spin_us = PyLong_AsLong(args[2]);
        if (spin_us == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (spin_us < 0 || spin_us > REAP_SPIN_US_MAX) {
            PyErr_Format(PyExc_ValueError, "spin_us must be in 0..%ld, "
                         "not %ld", REAP_SPIN_US_MAX, spin_us);
            return NULL;
        }
    }
    if (pidfd >= 0 && reap_by_pidfd(pidfd, &result)) {
        return result;
    }
    /* No pidfd, or a kernel without P_PIDFD: by pid. */
    return reap_by_pid(pid, spin_us);
}
