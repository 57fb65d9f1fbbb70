/*
 * pidfds (see pidfd.h): a descriptor that names one process for good,
 * where a pid can be reused once the process is reaped.
 */
#include "pidfd.h"

#include "platform.h"

#include <errno.h>
#include <limits.h>
#include <unistd.h>

int
gipc_open_pidfd(pid_t pid)
{
#ifdef GIPC_HAVE_PIDFD
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

_Static_assert(sizeof(pid_t) == sizeof(int),
               "pid_t is an int on Linux and macOS");

int
gipc_pid_from_object(PyObject *obj, pid_t *pid)
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

/* pidfd_open(pid) -> fd, or -1 where the kernel has no pidfds. */
PyObject *
gipc_pidfd_open(PyObject *Py_UNUSED(module), PyObject *arg)
{
    pid_t pid;
    int fd;

    if (gipc_pid_from_object(arg, &pid) < 0) {
        return NULL;
    }
    fd = gipc_open_pidfd(pid);
    if (fd < 0 && errno != ENOSYS) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(fd);
}
