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
 * child really closes are the ones made for this step (/dev/null and the
 * report pipe, whose numbers no object of the parent's holds) and
 * /proc/self/status, which it opens itself.
 *
 * Which descriptors are open: the child probes numbers with poll(), which
 * flags a closed descriptor with POLLNVAL, a chunk of numbers per call
 * (cheap: no allocation, one system call per few hundred numbers).  Up
 * to which number: on Linux, the size of the descriptor table, read from
 * /proc/self/status (FDSize: every open descriptor is below it, however
 * high the limit), with open() and read() into a buffer on the stack.
 * Elsewhere, or without /proc, up to the descriptor limit.  Listing
 * /proc/self/fd instead (what _posixsubprocess does) costs the kernel a
 * dentry per descriptor listed: some 3 us each, 3 ms for a thousand.
 * Only async-signal-safe calls and no allocation: another thread of the
 * parent may have held the allocator's lock at the fork.
 *
 * Every replacement stays close-on-exec: a program the child later execs
 * must not find the placeholders either.
 */
#include "inherit.h"

#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

/* What a child that failed writes to the report pipe, as two native ints
 * (one write, far below PIPE_BUF, so all of it or nothing; gipc._inherit
 * reads it). */
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
    /* The report pipe is the caller's (in the parent). */
    inherit->report[0] = inherit->report[1] = -1;
}

int
gipc_fds_from_fast(PyObject *fast, Py_ssize_t n, int *fds, const char *what)
{
    Py_ssize_t i;

    for (i = 0; i < n; i++) {
        long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));

        if (fd == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (fd < 0 || fd > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "%s: %ld is not a descriptor",
                         what, fd);
            return -1;
        }
        fds[i] = (int)fd;
    }
    return 0;
}

/* The descriptors to keep, sorted (the child searches them). */
static int
keep_from_sequence(PyObject *seq, GipcInherit *inherit)
{
    PyObject *fast = PySequence_Fast(seq, "keep_fds must be a sequence of "
                                     "descriptors");
    Py_ssize_t n;

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
    if (gipc_fds_from_fast(fast, n, inherit->keep, "keep_fds") < 0) {
        Py_DECREF(fast);
        return -1;
    }
    Py_DECREF(fast);
    inherit->n_keep = n;
    qsort(inherit->keep, (size_t)n, sizeof(int), compare_ints);
    return 0;
}

int
gipc_inherit_prepare(PyObject *keep_fds, PyObject *report,
                     GipcInherit *inherit)
{
    long open_max;

    inherit->keep = NULL;
    inherit->n_keep = 0;
    inherit->devnull = inherit->report[0] = inherit->report[1] = -1;
    if (!PyTuple_Check(report) ||
        !PyArg_ParseTuple(report, "ii", &inherit->report[0],
                          &inherit->report[1])) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "fork(): report must be a "
                            "(read end, write end) tuple with keep_fds");
        }
        goto error;
    }
    if (inherit->report[0] < 0 || inherit->report[1] < 0) {
        PyErr_SetString(PyExc_ValueError, "fork(): report: not descriptors");
        goto error;
    }
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

/* Probe every number below bound with poll(): POLLNVAL marks a closed
 * one.  Returns 0 or an errno (*failed_fd: where, or -1). */
static int
replace_probed(const GipcInherit *inherit, int bound, int also_keep,
               int *failed_fd)
{
    struct pollfd probes[PROBE_CHUNK];
    int base, i, n, r, error;

    for (base = 0; base < bound; base += n) {
        /* No more than the limit per call (poll() refuses more), and no
         * more than the chunk. */
        n = bound - base < PROBE_CHUNK ? bound - base : PROBE_CHUNK;
        if (n > inherit->bound) {
            n = inherit->bound > 0 ? inherit->bound : 1;
        }
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

#ifdef GIPC_HAVE_PROC_FDSIZE
/* The size of this process's descriptor table (every open descriptor is
 * below it, even one above a lowered limit), from the "FDSize:" line of
 * /proc/self/status, or -1 (no /proc, or no such line). */
static int
descriptor_table_size(void)
{
    static const char key[] = "\nFDSize:";
    char text[2048];
    size_t got = 0, k, i;
    ssize_t n;
    long size = -1;
    int fd;

    do {
        fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        return -1;
    }
    /* The line comes early (after the name and the ids): the first 2 KiB
     * hold it. */
    while (got < sizeof(text) - 1) {
        n = read(fd, text + got, sizeof(text) - 1 - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    close_if_open(&fd);
    for (i = 0; i + sizeof(key) - 1 <= got; i++) {
        for (k = 0; k < sizeof(key) - 1 && text[i + k] == key[k]; k++) {
        }
        if (k < sizeof(key) - 1) {
            continue;
        }
        for (i += k; i < got && (text[i] == ' ' || text[i] == '\t'); i++) {
        }
        for (size = 0; i < got && text[i] >= '0' && text[i] <= '9'; i++) {
            size = size * 10 + (text[i] - '0');
            if (size > INT_MAX) {
                return -1;
            }
        }
        return (text[i - 1] >= '0' && text[i - 1] <= '9') ? (int)size : -1;
    }
    return -1;
}
#endif /* GIPC_HAVE_PROC_FDSIZE */

void
gipc_inherit_child(GipcInherit *inherit, int also_keep)
{
    Report report = {0, -1};
    int error, bound = inherit->bound;
    ssize_t n;

    close_if_open(&inherit->report[0]);  /* the parent's end */
#ifdef GIPC_HAVE_PROC_FDSIZE
    {
        int table = descriptor_table_size();

        if (table >= 0) {
            bound = table;
        }
    }
#endif
    error = replace_probed(inherit, bound, also_keep, &report.fd);
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
