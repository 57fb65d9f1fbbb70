/*
 * What a forked child inherits (see inherit.h).
 *
 * Why /dev/null and not close(): the child is a copy of the parent's
 * memory, so Python objects of the parent (a socket object, a file, a
 * logging handler) live on in the child with the descriptor numbers they
 * had.  Were those numbers closed, the next open() in the child could get
 * one of them, and the stale object would then read, write or close an
 * unrelated file.  dup2() of /dev/null keeps every number taken, pointing
 * at a file where writes vanish and reads see EOF, and still drops the
 * child's reference to what the parent had open (a client connection
 * reports EOF, a listening port is free once the parent closes it).
 *
 * Why not close_range(): it closes (CLOSE_RANGE_UNSHARE changes nothing
 * about that), which is exactly what must not happen to a number a stale
 * object may hold; and CLOSE_RANGE_CLOEXEC only matters for exec, while a
 * forked child keeps running the parent's code.  The only descriptors the
 * child really closes are the ones made for this step (/dev/null, the
 * report pipe, the /proc directory): no object of the parent knows them.
 *
 * Which descriptors are open: on Linux, the child lists /proc/self/fd
 * with getdents64() (cheap however high the descriptor limit), with an
 * open()ed directory and a buffer on the stack, because opendir() may
 * allocate and the child may not (another thread of the parent may have
 * held the allocator's lock at the fork).  Elsewhere, or without /proc,
 * it probes every number below the descriptor limit with poll(), which
 * flags a closed descriptor with POLLNVAL, a chunk of numbers per call.
 *
 * Every replacement stays close-on-exec: a program the child later execs
 * must not find the placeholders either.
 */
#include "inherit.h"

#include "fork.h"
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef GIPC_HAVE_GETDENTS64
#include <stddef.h>
#include <sys/syscall.h>
#endif

/* What a child that failed writes to the report pipe (one write, far
 * below PIPE_BUF, so all of it or nothing). */
typedef struct {
    int error;          /* errno */
    int fd;             /* the descriptor it failed on, or -1 */
} Report;

/* Numbers probed per poll() call where there is no /proc. */
#define PROBE_CHUNK 256

static int
compare_ints(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;

    return (x > y) - (x < y);
}

static void
close_if_open(int *fd)
{
    if (*fd >= 0) {
        /* close() is never retried on EINTR: the descriptor is gone. */
        (void)close(*fd);
        *fd = -1;
    }
}

void
gipc_inherit_release(GipcInherit *inherit)
{
    PyMem_Free(inherit->keep);
    inherit->keep = NULL;
    inherit->n_keep = 0;
    close_if_open(&inherit->devnull);
    close_if_open(&inherit->report[0]);
    close_if_open(&inherit->report[1]);
}

/* The descriptors to keep, sorted (the child searches them). */
static int
keep_from_sequence(PyObject *seq, GipcInherit *inherit)
{
    PyObject *fast = PySequence_Fast(seq, "keep_fds must be a sequence of "
                                     "descriptors");
    Py_ssize_t i, n;

    if (fast == NULL) {
        return -1;
    }
    n = PySequence_Fast_GET_SIZE(fast);
    /* One more than needed: PyMem_New(int, 0) may return NULL. */
    inherit->keep = PyMem_New(int, n + 1);
    if (inherit->keep == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < n; i++) {
        long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));

        if (fd == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
        if (fd < 0 || fd > INT_MAX) {
            Py_DECREF(fast);
            PyErr_Format(PyExc_ValueError, "keep_fds: %ld is not a "
                         "descriptor", fd);
            return -1;
        }
        inherit->keep[i] = (int)fd;
    }
    Py_DECREF(fast);
    inherit->n_keep = n;
    qsort(inherit->keep, (size_t)n, sizeof(int), compare_ints);
    return 0;
}

int
gipc_inherit_prepare(PyObject *keep_fds, GipcInherit *inherit)
{
    long open_max;

    inherit->keep = NULL;
    inherit->n_keep = 0;
    inherit->devnull = inherit->report[0] = inherit->report[1] = -1;
    if (keep_from_sequence(keep_fds, inherit) < 0) {
        goto error;
    }
    /* The soft descriptor limit: no descriptor can be opened at or above
     * it (one opened before the limit was lowered is found on /proc only,
     * and its replacement then fails, reported). */
    open_max = sysconf(_SC_OPEN_MAX);
    inherit->bound = (open_max < 0 || open_max > INT_MAX)
                     ? INT_MAX : (int)open_max;
    do {
        inherit->devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    } while (inherit->devnull < 0 && errno == EINTR);
    if (inherit->devnull < 0) {
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/dev/null");
        goto error;
    }
    if (gipc_cloexec_pipe(inherit->report) < 0) {
        inherit->report[0] = inherit->report[1] = -1;
        PyErr_SetFromErrno(PyExc_OSError);
        goto error;
    }
    return 0;

error:
    gipc_inherit_release(inherit);
    return -1;
}

/* Async-signal-safe from here to gipc_inherit_child()'s end. */

static int
is_kept(const GipcInherit *inherit, int fd, int also_keep)
{
    Py_ssize_t lo = 0, hi = inherit->n_keep;

    if (fd <= 2 || fd == inherit->devnull || fd == inherit->report[1] ||
        fd == also_keep) {
        return 1;
    }
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;

        if (inherit->keep[mid] == fd) {
            return 1;
        }
        if (inherit->keep[mid] < fd) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return 0;
}

/* Point fd at /dev/null, close-on-exec.  Returns 0 or an errno. */
static int
replace_by_devnull(const GipcInherit *inherit, int fd)
{
    int r;

#ifdef GIPC_HAVE_DUP3
    do {
        r = dup3(inherit->devnull, fd, O_CLOEXEC);
    } while (r < 0 && errno == EINTR);
#else
    do {
        r = dup2(inherit->devnull, fd);
    } while (r < 0 && errno == EINTR);
    if (r >= 0) {
        do {
            r = fcntl(fd, F_SETFD, FD_CLOEXEC);
        } while (r < 0 && errno == EINTR);
    }
#endif
    return r < 0 ? errno : 0;
}

/* Probe every number below the bound with poll(): POLLNVAL marks a
 * closed one.  Returns 0 or an errno (*failed_fd: where, or -1). */
static int
replace_probed(const GipcInherit *inherit, int also_keep, int *failed_fd)
{
    struct pollfd probes[PROBE_CHUNK];
    int base, i, n, r, error;

    for (base = 0; base < inherit->bound; base += n) {
        n = inherit->bound - base < PROBE_CHUNK
            ? inherit->bound - base : PROBE_CHUNK;
        for (i = 0; i < n; i++) {
            probes[i].fd = base + i;
            probes[i].events = 0;
            probes[i].revents = 0;
        }
        do {
            r = poll(probes, (nfds_t)n, 0);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
            *failed_fd = -1;
            return errno;
        }
        for (i = 0; i < n; i++) {
            if ((probes[i].revents & POLLNVAL) ||
                is_kept(inherit, base + i, also_keep)) {
                continue;
            }
            error = replace_by_devnull(inherit, base + i);
            if (error != 0) {
                *failed_fd = base + i;
                return error;
            }
        }
    }
    return 0;
}

#ifdef GIPC_HAVE_GETDENTS64
/* The head of the kernel's struct linux_dirent64 (glibc declares no
 * type for it); the name follows. */
struct gipc_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* A /proc/self/fd entry's name as a descriptor, or -1 ("." and ".."). */
static int
parse_fd(const char *name)
{
    long fd = 0;

    if (*name == '\0') {
        return -1;
    }
    for (; *name != '\0'; name++) {
        if (*name < '0' || *name > '9' || fd > (INT_MAX - 9) / 10) {
            return -1;
        }
        fd = fd * 10 + (*name - '0');
    }
    return (int)fd;
}

/* Replace the descriptors /proc/self/fd (open as dir_fd) lists.  A
 * replacement changes no entry (the number stays open), so the listing
 * stays valid while it is read.  Returns 0 or an errno. */
static int
replace_listed(const GipcInherit *inherit, int dir_fd, int also_keep,
               int *failed_fd)
{
    /* long: the entries are 8-byte aligned in the buffer. */
    long buffer[1024];
    const char *bytes = (const char *)buffer;
    long n, at;
    int fd, error;

    for (;;) {
        do {
            n = syscall(SYS_getdents64, dir_fd, buffer, sizeof(buffer));
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            *failed_fd = -1;
            return errno;
        }
        if (n == 0) {
            return 0;
        }
        for (at = 0; at < n;) {
            const struct gipc_dirent64 *entry =
                (const struct gipc_dirent64 *)(bytes + at);
            unsigned short length;

            memcpy(&length, bytes + at +
                   offsetof(struct gipc_dirent64, d_reclen), sizeof(length));
            if (length == 0) {
                *failed_fd = -1;
                return EIO;  /* never from a sane kernel: do not spin */
            }
            at += length;
            fd = parse_fd(entry->d_name);
            if (fd < 0 || fd == dir_fd || is_kept(inherit, fd, also_keep)) {
                continue;
            }
            error = replace_by_devnull(inherit, fd);
            if (error != 0) {
                *failed_fd = fd;
                return error;
            }
        }
    }
}
#endif /* GIPC_HAVE_GETDENTS64 */

void
gipc_inherit_child(GipcInherit *inherit, int also_keep)
{
    Report report = {0, -1};
    int error;
    ssize_t n;

    close_if_open(&inherit->report[0]);  /* the parent's end */
#ifdef GIPC_HAVE_GETDENTS64
    {
        int dir_fd;

        do {
            dir_fd = open("/proc/self/fd",
                          O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        } while (dir_fd < 0 && errno == EINTR);
        if (dir_fd >= 0) {
            error = replace_listed(inherit, dir_fd, also_keep, &report.fd);
            close_if_open(&dir_fd);
        }
        else {
            /* No /proc mounted (a chroot), or the table is full. */
            error = replace_probed(inherit, also_keep, &report.fd);
        }
    }
#else
    error = replace_probed(inherit, also_keep, &report.fd);
#endif
    if (error != 0) {
        report.error = error;
        do {
            n = write(inherit->report[1], &report, sizeof(report));
        } while (n < 0 && errno == EINTR);
        _exit(GIPC_INHERIT_FAILED_EXIT);
    }
    close_if_open(&inherit->devnull);
    close_if_open(&inherit->report[1]);  /* EOF: the parent's go-ahead */
}

int
gipc_inherit_wait(GipcInherit *inherit)
{
    Report report;
    PyObject *message, *exc;
    size_t got = 0;
    ssize_t n = 0;
    int read_errno = 0;

    close_if_open(&inherit->report[1]);
    /* The child needs only a few system calls: the wait is short, and the
     * GIL is free for other threads meanwhile. */
    Py_BEGIN_ALLOW_THREADS
    while (got < sizeof(report)) {
        n = read(inherit->report[0], (char *)&report + got,
                 sizeof(report) - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            read_errno = errno;
            break;
        }
        got += (size_t)n;
    }
    Py_END_ALLOW_THREADS
    close_if_open(&inherit->report[0]);
    if (got == 0 && n == 0) {
        return 0;  /* EOF at once: the child closed its end, all set */
    }
    if (n < 0) {
        errno = read_errno;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (got < sizeof(report)) {
        PyErr_SetString(PyExc_OSError, "close_fds: the child's report on "
                        "its descriptors was cut short");
        return -1;
    }
    if (report.fd >= 0) {
        message = PyUnicode_FromFormat(
            "close_fds: the child could not replace descriptor %d by "
            "/dev/null (%s); it did not run", report.fd,
            strerror(report.error));
    }
    else {
        message = PyUnicode_FromFormat(
            "close_fds: the child could not list its descriptors (%s); it "
            "did not run", strerror(report.error));
    }
    /* OSError(errno, message): the errno stays readable in Python. */
    exc = PyObject_CallFunction(PyExc_OSError, "iN", report.error, message);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return -1;
}
