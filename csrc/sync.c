/*
 * gipc._sync: shared-memory words and a byte ring for gipc's queues and
 * locks (gipc/synchronize.py, gipc/queues.py).
 *
 * A Block is a page of 64-bit words in a shared mapping of a memory file
 * (memfd_create, or shm_open unlinked at once where there is none), made
 * before the fork and so shared with every child, plus "bells": pipes
 * whose write end is rung when a waiter may proceed.  Optionally it carries
 * a data ring (a second, much larger mapping reserved with MAP_NORESERVE:
 * only the pages in use cost memory; it lies in the same file, after the
 * header).  The memory file's descriptor is kept (close-on-exec), so that
 * a spawn or forkserver child, which inherits no mapping, can be given it
 * with the bells' descriptors and map the same memory (Block._attach).
 * Every operation here is an atomic
 * step that never waits: the uncontended lock, the queue's put and get
 * move no byte through the kernel.  When a step cannot proceed it says so
 * and the Python layer waits on a bell with a gevent watcher.
 *
 * Bell protocol (word 16 + 8 * bell: waiters; word 17 + 8 * bell: armed).
 * A waiter counts itself in, arms the bell, checks its condition, and only
 * then waits for the read end to be readable; after waking it drains the
 * pipe.  Whoever makes a condition true rings: if waiters are counted and
 * it clears "armed", it writes one byte.  So a pipe write happens at most
 * once per sleep of the waiters, not once per operation.  A waiter that
 * leaves rings again if the condition still holds (it may have drained a
 * byte another waiter needed).
 *
 * The ring holds records (an 8-byte length, the payload, padding to 8) at
 * offsets that only grow; positions are offsets modulo the capacity.  A
 * record is committed whole: the writer publishes the new head after the
 * copy, the reader the new tail after its copy.  A process that dies in
 * the middle of either leaves the ring as it was.  The two ends are
 * serialised by spin locks that are held only inside one call here (never
 * across a wait); each holds the holder's pid, so a lock left by a dead
 * process can be recovered.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0  /* the reservation is then charged in full */
#endif

#define HEADER_WORDS 512
#define HEADER_BYTES (HEADER_WORDS * 8)
#define MAX_BELLS 4
#define BELL_WAITERS(b) (16 + 8 * (b))
#define BELL_ARMED(b) (17 + 8 * (b))

/* Ring words: the writer's and the reader's on separate cache lines. */
#define R_HEAD 64
#define R_NPUT 65
#define R_WLOCK 66
#define R_UNFINISHED 67
#define R_TAIL 72
#define R_NGET 73
#define R_RLOCK 74

#define DATA_BELL 0
#define SPACE_BELL 1

/* Consumed ring pages are given back to the kernel by chunks of this. */
#define DISCARD_CHUNK ((uint64_t)1 << 20)
#define SPINS 200

enum { PUT_OK = 0, PUT_NO_SPACE = 1, PUT_BUSY = 2, PUT_FULL = 3,
       PUT_TOO_BIG = 4 };
enum { GET_EMPTY = 1, GET_BUSY = 2 };

typedef struct {
    PyObject_HEAD
    int64_t *words;
    char *data;
    uint64_t capacity;
    int memfd;          /* the memory file of words and ring, or -1 */
    int nbells;
    int rfd[MAX_BELLS];
    int wfd[MAX_BELLS];
} BlockObject;

static inline int64_t
load(int64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static inline void
store(int64_t *p, int64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

static inline int
cas(int64_t *p, int64_t expected, int64_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void
close_fd(int *fd)
{
    if (*fd >= 0) {
        /* close() is never retried on EINTR on Linux: the fd is gone. */
        (void)close(*fd);
        *fd = -1;
    }
}

static void
block_release(BlockObject *self)
{
    if (self->words != NULL) {
        munmap(self->words, HEADER_BYTES);
        self->words = NULL;
    }
    if (self->data != NULL) {
        munmap(self->data, (size_t)self->capacity);
        self->data = NULL;
    }
    close_fd(&self->memfd);
    for (int i = 0; i < MAX_BELLS; i++) {
        close_fd(&self->rfd[i]);
        close_fd(&self->wfd[i]);
    }
}

static int
check_open(BlockObject *self)
{
    if (self->words == NULL) {
        PyErr_SetString(PyExc_ValueError,
                        "this queue or lock was closed in this process");
        return -1;
    }
    return 0;
}

/* Ring bell b if someone waits on it and nobody rang since it was armed. */
static void
ring(BlockObject *self, int b)
{
    if (load(&self->words[BELL_WAITERS(b)]) <= 0) {
        return;
    }
    if (__atomic_exchange_n(&self->words[BELL_ARMED(b)], 0,
                            __ATOMIC_SEQ_CST) == 0) {
        return;
    }
    ssize_t n;
    do {
        n = write(self->wfd[b], "x", 1);
    } while (n < 0 && errno == EINTR);
    /* EAGAIN: the pipe is full of wake-ups already, which is enough. */
}

static int
make_bell(BlockObject *self, int b)
{
    int fds[2];
#ifdef GIPC_HAVE_PIPE2
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
#else
    /* The GIL is held: no other Python thread forks and execs between
     * pipe() and fcntl(). */
    if (pipe(fds) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        if (fl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) < 0
                || fcntl(fds[i], F_SETFD, FD_CLOEXEC) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            (void)close(fds[0]);
            (void)close(fds[1]);
            return -1;
        }
    }
#endif
    self->rfd[b] = fds[0];
    self->wfd[b] = fds[1];
    return 0;
}

static void *
map_shared(int fd, off_t offset, size_t size, int noreserve)
{
    int flags = MAP_SHARED | (noreserve ? MAP_NORESERVE : 0);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, fd, offset);
    return p == MAP_FAILED ? NULL : p;
}

static int
set_size(int fd, off_t size)
{
    int rc;
    do {
        rc = ftruncate(fd, size);
    } while (rc < 0 && errno == EINTR);
    return rc;
}

/* A new, empty, close-on-exec memory file that only descriptors name;
 * -1 with errno set on failure. */
static int
open_memory_file(void)
{
#ifdef GIPC_HAVE_MEMFD
    return memfd_create("gipc-shared", MFD_CLOEXEC);
#else
    /* A unique name, unlinked at once: nothing is left behind even if
     * this process is killed right after.  shm_open sets FD_CLOEXEC. */
    char name[32];
    struct timespec now;
    (void)clock_gettime(CLOCK_MONOTONIC, &now);
    unsigned long salt = (unsigned long)now.tv_nsec ^ (unsigned long)&now;
    for (int attempt = 0; attempt < 100; attempt++) {
        /* Short: macOS allows 31 bytes. */
        (void)snprintf(name, sizeof(name), "/gipc.%lx.%lx",
                       (unsigned long)getpid() & 0xffffffUL,
                       (salt + (unsigned long)attempt * 7919UL)
                       & 0xffffffffUL);
        int fd;
        do {
            fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        } while (fd < 0 && errno == EINTR);
        if (fd >= 0) {
            (void)shm_unlink(name);
            return fd;
        }
        if (errno != EEXIST) {
            return -1;
        }
    }
    errno = EEXIST;
    return -1;
#endif
}

/* 0 if the memory file `fd` holds at least `need` bytes; else -1 with a
 * ValueError (a mapping past the end of the file would raise SIGBUS where
 * it is touched) or an OSError. */
static int
check_file_size(int fd, uint64_t need)
{
    struct stat st;

    if (fstat(fd, &st) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size < need) {
        PyErr_Format(PyExc_ValueError,
                     "the memory file holds %lld bytes, fewer than the "
                     "%llu to map", (long long)st.st_size,
                     (unsigned long long)need);
        return -1;
    }
    return 0;
}

/* Where the ring starts in the memory file: after the header, on a page
 * boundary (mmap's offsets must be). */
static off_t
ring_offset(void)
{
    long page = sysconf(_SC_PAGESIZE);
    return page > HEADER_BYTES ? (off_t)page : (off_t)HEADER_BYTES;
}

/* Map the header and (if capacity) the ring of self->memfd, received
 * from another process: -1 with an exception set on failure. */
static int
map_block(BlockObject *self, uint64_t capacity)
{
    uint64_t need = capacity > 0 ? (uint64_t)ring_offset() + capacity
                                 : HEADER_BYTES;

    if (check_file_size(self->memfd, need) < 0) {
        return -1;
    }
    self->words = map_shared(self->memfd, 0, HEADER_BYTES, 0);
    if (self->words == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (capacity > 0) {
        self->data = map_shared(self->memfd, ring_offset(),
                                (size_t)capacity, 1);
        if (self->data == NULL) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        self->capacity = capacity;
    }
    return 0;
}

static PyObject *
block_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"bells", "ring_bytes", NULL};
    int nbells = 1;
    long long ring_bytes = 0;
    /* "L", not "K": K takes a negative or huge int modulo 2**64. */
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|iL", kwlist, &nbells,
                                     &ring_bytes)) {
        return NULL;
    }
    if (nbells < 0 || nbells > MAX_BELLS) {
        PyErr_SetString(PyExc_ValueError, "bells must be 0 to 4");
        return NULL;
    }
    if (ring_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "ring_bytes must not be negative");
        return NULL;
    }
    BlockObject *self = (BlockObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->memfd = -1;
    for (int i = 0; i < MAX_BELLS; i++) {
        self->rfd[i] = self->wfd[i] = -1;
    }
    self->memfd = open_memory_file();
    /* With a ring, the file gets its size once, below. */
    if (self->memfd < 0
            || (ring_bytes == 0 && set_size(self->memfd, HEADER_BYTES) < 0)) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto error;
    }
    self->words = map_shared(self->memfd, 0, HEADER_BYTES, 0);
    if (self->words == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto error;
    }
    self->nbells = nbells;
    for (int b = 0; b < nbells; b++) {
        if (make_bell(self, b) < 0) {
            goto error;
        }
    }
    if (ring_bytes > 0) {
        /* Reserve the smallest power of two not below what is asked (at
         * least 64 MiB, at most 1 TiB) or, where the system refuses it,
         * the largest smaller one it grants, down to 64 MiB (a strict
         * overcommit policy charges MAP_NORESERVE mappings in full). */
        uint64_t size = (uint64_t)1 << 26;
        while (size < (uint64_t)ring_bytes && size < ((uint64_t)1 << 40)) {
            size <<= 1;
        }
        off_t offset = ring_offset();
        for (;;) {
            /* The file is sparse: its size costs no memory. */
            if (set_size(self->memfd, offset + (off_t)size) == 0) {
                self->data = map_shared(self->memfd, offset, (size_t)size,
                                        1);
            }
            if (self->data != NULL || size <= ((uint64_t)1 << 26)) {
                break;
            }
            size >>= 1;
        }
        if (self->data == NULL) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto error;
        }
        self->capacity = size;
    }
    return (PyObject *)self;

error:
    block_release(self);
    Py_DECREF(self);
    return NULL;
}

static int
int_arg(PyObject *arg, int *out)
{
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < INT_MIN || v > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "value out of range");
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Block._attach(bells, capacity, fds): the block whose memory file and
 * bells are ``fds`` (as fds() lists them), received from the process that
 * made it.  The new block owns them from then on (also on a failure
 * once the list matched `bells`: those read are closed then). */
static PyObject *
block_attach(PyObject *type, PyObject *const *args, Py_ssize_t nargs)
{
    int fds[1 + 2 * MAX_BELLS];
    int nbells, nfds = 0;
    unsigned long long capacity;
    PyObject *seq = NULL;
    BlockObject *self = NULL;

    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_attach(bells, capacity, fds)");
        return NULL;
    }
    if (int_arg(args[0], &nbells) < 0) {
        return NULL;
    }
    capacity = PyLong_AsUnsignedLongLong(args[1]);
    if (capacity == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    if (nbells < 0 || nbells > MAX_BELLS) {
        PyErr_SetString(PyExc_ValueError, "bad block description");
        return NULL;
    }
    seq = PySequence_Fast(args[2], "fds must be a sequence");
    if (seq == NULL) {
        return NULL;
    }
    if (PySequence_Fast_GET_SIZE(seq) != 1 + 2 * nbells) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError,
                        "fds must hold the memory file and both ends of "
                        "each bell");
        return NULL;
    }
    for (; nfds < 1 + 2 * nbells; nfds++) {
        if (int_arg(PySequence_Fast_GET_ITEM(seq, nfds), &fds[nfds]) < 0) {
            goto error;
        }
        if (fds[nfds] < 0) {
            PyErr_SetString(PyExc_ValueError, "negative descriptor");
            goto error;
        }
        for (int i = 0; i < nfds; i++) {
            if (fds[i] == fds[nfds]) {
                /* Closed twice later: the second close could close a
                 * descriptor opened meanwhile. */
                PyErr_SetString(PyExc_ValueError, "repeated descriptor");
                goto error;
            }
        }
    }
    Py_CLEAR(seq);
    /* The ring's positions are offsets modulo the capacity, and a record
     * header takes 8 bytes. */
    if (capacity != 0 && ((capacity & (capacity - 1)) != 0 || capacity < 8
                          || (unsigned long long)(size_t)capacity != capacity
                          || capacity > ((unsigned long long)1 << 40))) {
        PyErr_SetString(PyExc_ValueError, "bad block description");
        goto error;
    }
    self = (BlockObject *)((PyTypeObject *)type)->tp_alloc(
        (PyTypeObject *)type, 0);
    if (self == NULL) {
        goto error;
    }
    self->memfd = fds[0];
    for (int i = 0; i < MAX_BELLS; i++) {
        self->rfd[i] = i < nbells ? fds[1 + 2 * i] : -1;
        self->wfd[i] = i < nbells ? fds[2 + 2 * i] : -1;
    }
    nfds = 0;  /* owned by self now */
    self->nbells = nbells;
    for (int i = 0; i < 1 + 2 * nbells; i++) {
        int fd = i == 0 ? self->memfd
                 : (i % 2 ? self->rfd[(i - 1) / 2] : self->wfd[(i - 1) / 2]);
        if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            goto error;
        }
    }
    if (map_block(self, (uint64_t)capacity) < 0) {
        goto error;
    }
    return (PyObject *)self;

error:
    Py_XDECREF(seq);
    for (int i = 0; i < nfds; i++) {
        close_fd(&fds[i]);
    }
    if (self != NULL) {
        block_release(self);
        Py_DECREF(self);
    }
    return NULL;
}

static void
block_dealloc(BlockObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    block_release(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
word_index(BlockObject *self, PyObject *arg, Py_ssize_t *index)
{
    if (check_open(self) < 0) {
        return -1;
    }
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (i < 0 || i >= HEADER_WORDS) {
        PyErr_SetString(PyExc_IndexError, "word index out of range");
        return -1;
    }
    *index = i;
    return 0;
}

static int
int64_arg(PyObject *arg, int64_t *out)
{
    long long v = PyLong_AsLongLong(arg);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

static PyObject *
block_load(BlockObject *self, PyObject *arg)
{
    Py_ssize_t i;
    if (word_index(self, arg, &i) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(load(&self->words[i]));
}

static PyObject *
block_store(BlockObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t i;
    int64_t v;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "store(index, value)");
        return NULL;
    }
    if (word_index(self, args[0], &i) < 0 || int64_arg(args[1], &v) < 0) {
        return NULL;
    }
    store(&self->words[i], v);
    Py_RETURN_NONE;
}

static PyObject *
block_add(BlockObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t i;
    int64_t v;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add(index, delta)");
        return NULL;
    }
    if (word_index(self, args[0], &i) < 0 || int64_arg(args[1], &v) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(
        __atomic_add_fetch(&self->words[i], v, __ATOMIC_SEQ_CST));
}

static PyObject *
block_cas(BlockObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t i;
    int64_t old, new;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "cas(index, expected, new)");
        return NULL;
    }
    if (word_index(self, args[0], &i) < 0 || int64_arg(args[1], &old) < 0
            || int64_arg(args[2], &new) < 0) {
        return NULL;
    }
    return PyBool_FromLong(cas(&self->words[i], old, new));
}

static int
bell_arg(BlockObject *self, PyObject *arg, int *bell)
{
    if (check_open(self) < 0) {
        return -1;
    }
    long b = PyLong_AsLong(arg);
    if (b == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (b < 0 || b >= self->nbells) {
        PyErr_SetString(PyExc_IndexError, "no such bell");
        return -1;
    }
    *bell = (int)b;
    return 0;
}

static PyObject *
block_ring(BlockObject *self, PyObject *arg)
{
    int b;
    if (bell_arg(self, arg, &b) < 0) {
        return NULL;
    }
    ring(self, b);
    Py_RETURN_NONE;
}

static PyObject *
block_drain(BlockObject *self, PyObject *arg)
{
    int b;
    char buf[256];
    if (bell_arg(self, arg, &b) < 0) {
        return NULL;
    }
    for (;;) {
        ssize_t n = read(self->rfd[b], buf, sizeof(buf));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < (ssize_t)sizeof(buf)) {
            break;  /* empty now (EAGAIN), or a short read */
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
block_poke(BlockObject *self, PyObject *arg)
{
    int b;
    ssize_t n;
    if (bell_arg(self, arg, &b) < 0) {
        return NULL;
    }
    do {
        n = write(self->wfd[b], "x", 1);
    } while (n < 0 && errno == EINTR);
    return PyBool_FromLong(n == 1);
}

static PyObject *
block_take(BlockObject *self, PyObject *arg)
{
    int b;
    char c;
    ssize_t n;
    if (bell_arg(self, arg, &b) < 0) {
        return NULL;
    }
    do {
        n = read(self->rfd[b], &c, 1);
    } while (n < 0 && errno == EINTR);
    return PyBool_FromLong(n == 1);
}

static PyObject *
block_bell_fd(BlockObject *self, PyObject *arg)
{
    int b;
    if (bell_arg(self, arg, &b) < 0) {
        return NULL;
    }
    return PyLong_FromLong(self->rfd[b]);
}

/* Every descriptor of the block: its memory file, then both ends of each
 * bell.  A child started with close_fds=True must keep them; a spawn or
 * forkserver child receives them (Block._attach). */
static PyObject *
block_fds(BlockObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *fds = PyList_New(0);

    if (fds == NULL) {
        return NULL;
    }
    if (self->memfd >= 0) {
        PyObject *fd = PyLong_FromLong(self->memfd);
        if (fd == NULL || PyList_Append(fds, fd) < 0) {
            Py_XDECREF(fd);
            Py_DECREF(fds);
            return NULL;
        }
        Py_DECREF(fd);
    }
    for (int b = 0; b < self->nbells; b++) {
        int ends[2] = {self->rfd[b], self->wfd[b]};

        for (int i = 0; i < 2; i++) {
            PyObject *fd;

            if (ends[i] < 0) {
                continue;
            }
            fd = PyLong_FromLong(ends[i]);
            if (fd == NULL || PyList_Append(fds, fd) < 0) {
                Py_XDECREF(fd);
                Py_DECREF(fds);
                return NULL;
            }
            Py_DECREF(fd);
        }
    }
    return fds;
}

/* Lock: word 0 is the holder's pid, 0 when free. */

static PyObject *
block_try_lock(BlockObject *self, PyObject *arg)
{
    int64_t pid;
    if (check_open(self) < 0 || int64_arg(arg, &pid) < 0) {
        return NULL;
    }
    return PyBool_FromLong(cas(&self->words[0], 0, pid));
}

static PyObject *
block_unlock(BlockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0) {
        return NULL;
    }
    int64_t old = __atomic_exchange_n(&self->words[0], 0, __ATOMIC_SEQ_CST);
    if (old == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "semaphore or lock released too many times");
        return NULL;
    }
    if (self->nbells > 0) {
        ring(self, 0);
    }
    Py_RETURN_NONE;
}

/* Semaphore: word 0 is the value, word 1 the bound (0: unbounded). */

static PyObject *
block_sem_try(BlockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0) {
        return NULL;
    }
    int64_t v = load(&self->words[0]);
    while (v > 0) {
        if (__atomic_compare_exchange_n(&self->words[0], &v, v - 1, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            Py_RETURN_TRUE;
        }
    }
    Py_RETURN_FALSE;
}

static PyObject *
block_sem_post(BlockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0) {
        return NULL;
    }
    int64_t bound = load(&self->words[1]);
    int64_t v = load(&self->words[0]);
    for (;;) {
        if (bound > 0 && v >= bound) {
            PyErr_SetString(PyExc_ValueError,
                            "semaphore or lock released too many times");
            return NULL;
        }
        if (__atomic_compare_exchange_n(&self->words[0], &v, v + 1, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            break;
        }
    }
    if (self->nbells > 0) {
        ring(self, 0);
    }
    Py_RETURN_NONE;
}

/* The ring. */

static int
spin_lock(int64_t *word, int64_t pid)
{
    for (int i = 0; i < SPINS; i++) {
        if (load(word) == 0 && cas(word, 0, pid)) {
            return 1;
        }
        cpu_relax();
    }
    return 0;
}

static void
spin_unlock(int64_t *word)
{
    store(word, 0);
}

static void
ring_copy_in(BlockObject *self, uint64_t offset, const char *src, uint64_t n)
{
    uint64_t pos = offset & (self->capacity - 1);
    uint64_t first = self->capacity - pos;
    if (first >= n) {
        memcpy(self->data + pos, src, (size_t)n);
    }
    else {
        memcpy(self->data + pos, src, (size_t)first);
        memcpy(self->data, src + first, (size_t)(n - first));
    }
}

static void
ring_copy_out(BlockObject *self, uint64_t offset, char *dst, uint64_t n)
{
    uint64_t pos = offset & (self->capacity - 1);
    uint64_t first = self->capacity - pos;
    if (first >= n) {
        memcpy(dst, self->data + pos, (size_t)n);
    }
    else {
        memcpy(dst, self->data + pos, (size_t)first);
        memcpy(dst + first, self->data, (size_t)(n - first));
    }
}

static inline uint64_t
record_size(uint64_t payload)
{
    return 8 + ((payload + 7) & ~(uint64_t)7);
}

static int
check_ring(BlockObject *self)
{
    if (check_open(self) < 0) {
        return -1;
    }
    if (self->data == NULL) {
        PyErr_SetString(PyExc_ValueError, "this block has no ring");
        return -1;
    }
    return 0;
}

/* put(data, maxsize, pid, joinable) -> PUT_* */
static PyObject *
block_put(BlockObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "put(data, maxsize, pid, joinable)");
        return NULL;
    }
    int64_t maxsize, pid;
    if (check_ring(self) < 0 || int64_arg(args[1], &maxsize) < 0
            || int64_arg(args[2], &pid) < 0) {
        return NULL;
    }
    int joinable = PyObject_IsTrue(args[3]);
    if (joinable < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int code = PUT_OK;
    uint64_t n = (uint64_t)view.len;
    uint64_t need = record_size(n);
    int64_t *w = self->words;
    if (need > self->capacity) {
        code = PUT_TOO_BIG;
        goto done;
    }
    if (!spin_lock(&w[R_WLOCK], pid)) {
        code = PUT_BUSY;
        goto done;
    }
    if (maxsize > 0 && load(&w[R_NPUT]) - load(&w[R_NGET]) >= maxsize) {
        code = PUT_FULL;
    }
    else {
        uint64_t head = (uint64_t)load(&w[R_HEAD]);
        uint64_t tail = (uint64_t)load(&w[R_TAIL]);
        if (head + need - tail > self->capacity) {
            code = PUT_NO_SPACE;
        }
        else {
            uint64_t len = n;
            ring_copy_in(self, head, (const char *)&len, 8);
            ring_copy_in(self, head + 8, view.buf, n);
            if (joinable) {
                __atomic_add_fetch(&w[R_UNFINISHED], 1, __ATOMIC_SEQ_CST);
            }
            __atomic_add_fetch(&w[R_NPUT], 1, __ATOMIC_SEQ_CST);
            store(&w[R_HEAD], (int64_t)(head + need));
        }
    }
    spin_unlock(&w[R_WLOCK]);
    if (code == PUT_OK) {
        ring(self, DATA_BELL);
    }
    ring(self, SPACE_BELL);  /* writers waiting for the write turn */
done:
    PyBuffer_Release(&view);
    return PyLong_FromLong(code);
}

/* Give the pages of whole consumed chunks back (before the tail passes
 * them: until then no writer may reuse them). */
static void
discard_consumed(BlockObject *self, uint64_t old_tail, uint64_t new_tail)
{
    uint64_t start = old_tail & ~(DISCARD_CHUNK - 1);
    uint64_t end = new_tail & ~(DISCARD_CHUNK - 1);
    if (self->capacity <= DISCARD_CHUNK) {
        return;
    }
    for (uint64_t off = start; off < end; off += DISCARD_CHUNK) {
        uint64_t pos = off & (self->capacity - 1);
#ifdef MADV_REMOVE
        (void)madvise(self->data + pos, (size_t)DISCARD_CHUNK, MADV_REMOVE);
#else
        (void)pos;
#endif
    }
}

/* get(pid) -> bytes, or GET_EMPTY / GET_BUSY */
static PyObject *
block_get(BlockObject *self, PyObject *arg)
{
    int64_t pid;
    if (check_ring(self) < 0 || int64_arg(arg, &pid) < 0) {
        return NULL;
    }
    int64_t *w = self->words;
    if ((uint64_t)load(&w[R_HEAD]) == (uint64_t)load(&w[R_TAIL])) {
        return PyLong_FromLong(GET_EMPTY);
    }
    if (!spin_lock(&w[R_RLOCK], pid)) {
        return PyLong_FromLong(GET_BUSY);
    }
    uint64_t tail = (uint64_t)load(&w[R_TAIL]);
    uint64_t head = (uint64_t)load(&w[R_HEAD]);
    if (head == tail) {
        spin_unlock(&w[R_RLOCK]);
        return PyLong_FromLong(GET_EMPTY);
    }
    uint64_t len, used = head - tail;
    ring_copy_out(self, tail, (char *)&len, 8);
    if (used < 8 || used > self->capacity || len > used - 8) {
        /* Only a store() into the ring's words makes this: refuse rather
         * than copy from beyond the ring. */
        spin_unlock(&w[R_RLOCK]);
        PyErr_SetString(PyExc_ValueError, "the ring's words are corrupt");
        return NULL;
    }
    PyObject *item = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
    if (item == NULL) {
        spin_unlock(&w[R_RLOCK]);
        return NULL;  /* the record stays for the next reader */
    }
    ring_copy_out(self, tail + 8, PyBytes_AS_STRING(item), len);
    uint64_t new_tail = tail + record_size(len);
    discard_consumed(self, tail, new_tail);
    __atomic_add_fetch(&w[R_NGET], 1, __ATOMIC_SEQ_CST);
    store(&w[R_TAIL], (int64_t)new_tail);
    spin_unlock(&w[R_RLOCK]);
    ring(self, SPACE_BELL);
    if (head != new_tail) {
        ring(self, DATA_BELL);  /* another reader may have slept */
    }
    return item;
}

static PyObject *
block_close(BlockObject *self, PyObject *Py_UNUSED(ignored))
{
    block_release(self);
    Py_RETURN_NONE;
}

static PyObject *
block_get_closed(BlockObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->words == NULL);
}

static PyObject *
block_get_nbells(BlockObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->nbells);
}

static PyObject *
block_get_capacity(BlockObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->capacity);
}

static PyMethodDef block_methods[] = {
    {"load", (PyCFunction)block_load, METH_O,
     PyDoc_STR("load(i) -> int: word i.")},
    {"store", (PyCFunction)(void (*)(void))block_store, METH_FASTCALL,
     PyDoc_STR("store(i, v): set word i.")},
    {"add", (PyCFunction)(void (*)(void))block_add, METH_FASTCALL,
     PyDoc_STR("add(i, d) -> int: add d to word i, return the new value.")},
    {"cas", (PyCFunction)(void (*)(void))block_cas, METH_FASTCALL,
     PyDoc_STR("cas(i, old, new) -> bool: compare and swap word i.")},
    {"ring", (PyCFunction)block_ring, METH_O,
     PyDoc_STR("ring(b): wake the waiters of bell b, if any sleep.")},
    {"drain", (PyCFunction)block_drain, METH_O,
     PyDoc_STR("drain(b): empty bell b's pipe.")},
    {"poke", (PyCFunction)block_poke, METH_O,
     PyDoc_STR("poke(b) -> bool: write one byte to bell b unconditionally.")},
    {"take", (PyCFunction)block_take, METH_O,
     PyDoc_STR("take(b) -> bool: read one byte of bell b, if any.")},
    {"bell_fd", (PyCFunction)block_bell_fd, METH_O,
     PyDoc_STR("bell_fd(b) -> int: the read end of bell b.")},
    {"fds", (PyCFunction)block_fds, METH_NOARGS,
     PyDoc_STR("fds() -> list: every descriptor of the bells here.")},
    {"try_lock", (PyCFunction)block_try_lock, METH_O,
     PyDoc_STR("try_lock(pid) -> bool: take the lock (word 0) for pid.")},
    {"unlock", (PyCFunction)block_unlock, METH_NOARGS,
     PyDoc_STR("unlock(): free the lock and ring bell 0; ValueError if "
               "it was free.")},
    {"sem_try", (PyCFunction)block_sem_try, METH_NOARGS,
     PyDoc_STR("sem_try() -> bool: take one unit of the semaphore.")},
    {"sem_post", (PyCFunction)block_sem_post, METH_NOARGS,
     PyDoc_STR("sem_post(): give one unit back and ring bell 0; "
               "ValueError beyond the bound (word 1).")},
    {"put", (PyCFunction)(void (*)(void))block_put, METH_FASTCALL,
     PyDoc_STR("put(data, maxsize, pid, joinable) -> code (0 done, 1 no "
               "room, 2 busy, 3 maxsize reached, 4 larger than the ring).")},
    {"get", (PyCFunction)block_get, METH_O,
     PyDoc_STR("get(pid) -> bytes, or 1 (empty) or 2 (busy).")},
    {"_attach", (PyCFunction)(void (*)(void))block_attach,
     METH_FASTCALL | METH_CLASS,
     PyDoc_STR("_attach(bells, capacity, fds) -> Block: map the block "
               "whose descriptors (as fds() lists them) this process "
               "received; it owns them from now on.")},
    {"close", (PyCFunction)block_close, METH_NOARGS,
     PyDoc_STR("close(): unmap the memory and close the bells here.")},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef block_getset[] = {
    {"closed", (getter)block_get_closed, NULL,
     PyDoc_STR("True once close() was called."), NULL},
    {"capacity", (getter)block_get_capacity, NULL,
     PyDoc_STR("Bytes of the ring (0: none)."), NULL},
    {"bells", (getter)block_get_nbells, NULL,
     PyDoc_STR("How many bells the block has."), NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot block_slots[] = {
    {Py_tp_new, block_new},
    {Py_tp_dealloc, block_dealloc},
    {Py_tp_methods, block_methods},
    {Py_tp_getset, block_getset},
    {Py_tp_doc, (void *)PyDoc_STR(
        "Block(bells=1, ring_bytes=0): shared words, bells and a ring.")},
    {0, NULL}
};

static PyType_Spec block_spec = {
    .name = "gipc._sync.Block",
    .basicsize = sizeof(BlockObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = block_slots,
};

/* Memory: bytes in a shared mapping of a memory file, with the buffer
 * protocol (for gipc.sharedctypes: ctypes objects from_buffer() it).
 * Unlike mmap.mmap, it keeps the descriptor it was given rather than a
 * duplicate, and says which (a spawn child is sent it). */
typedef struct {
    PyObject_HEAD
    char *addr;
    Py_ssize_t size;
    int fd;
} MemoryObject;

static MemoryObject *
memory_map(PyTypeObject *type, int fd, Py_ssize_t size)
{
    MemoryObject *self = (MemoryObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        close_fd(&fd);
        return NULL;
    }
    self->fd = fd;
    self->size = size;
    self->addr = map_shared(fd, 0, (size_t)size, 0);
    if (self->addr == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(self);
        return NULL;
    }
    return self;
}

static int
size_arg(PyObject *arg, Py_ssize_t *size)
{
    *size = PyLong_AsSsize_t(arg);
    if (*size == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (*size <= 0) {
        PyErr_SetString(PyExc_ValueError, "size must be > 0");
        return -1;
    }
    return 0;
}

static PyObject *
memory_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"size", NULL};
    PyObject *size_obj;
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O", kwlist, &size_obj)
            || size_arg(size_obj, &size) < 0) {
        return NULL;
    }
    int fd = open_memory_file();
    if (fd < 0 || set_size(fd, (off_t)size) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        if (fd >= 0) {
            close_fd(&fd);
        }
        return NULL;
    }
    return (PyObject *)memory_map(type, fd, size);
}

/* Memory._attach(fd, size): map a memory file received from another
 * process; the new object owns fd (also on failure). */
static PyObject *
memory_attach(PyObject *type, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    Py_ssize_t size;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_attach(fd, size)");
        return NULL;
    }
    if (int_arg(args[0], &fd) < 0) {
        return NULL;
    }
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "negative descriptor");
        return NULL;
    }
    if (size_arg(args[1], &size) < 0
            || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0
            || check_file_size(fd, (uint64_t)size) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetFromErrno(PyExc_OSError);
        }
        close_fd(&fd);
        return NULL;
    }
    return (PyObject *)memory_map((PyTypeObject *)type, fd, size);
}

static void
memory_dealloc(MemoryObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->addr != NULL) {
        munmap(self->addr, (size_t)self->size);
    }
    close_fd(&self->fd);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
memory_getbuffer(MemoryObject *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, self->addr,
                             self->size, 0, flags);
}

static void
memory_releasebuffer(MemoryObject *Py_UNUSED(self),
                     Py_buffer *Py_UNUSED(view))
{
}

static PyObject *
memory_close_fd(MemoryObject *self, PyObject *Py_UNUSED(ignored))
{
    close_fd(&self->fd);
    Py_RETURN_NONE;
}

static PyObject *
memory_get_fd(MemoryObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->fd);
}

static PyObject *
memory_get_size(MemoryObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->size);
}

static PyMethodDef memory_methods[] = {
    {"_attach", (PyCFunction)(void (*)(void))memory_attach,
     METH_FASTCALL | METH_CLASS,
     PyDoc_STR("_attach(fd, size) -> Memory: map the memory file fd "
               "received from another process; it owns fd from now on.")},
    {"close_fd", (PyCFunction)memory_close_fd, METH_NOARGS,
     PyDoc_STR("close_fd(): close the descriptor (the mapping stays).")},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef memory_getset[] = {
    {"fd", (getter)memory_get_fd, NULL,
     PyDoc_STR("The memory file's descriptor (-1 once closed)."), NULL},
    {"size", (getter)memory_get_size, NULL,
     PyDoc_STR("Bytes mapped."), NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot memory_slots[] = {
    {Py_tp_new, memory_new},
    {Py_tp_dealloc, memory_dealloc},
    {Py_tp_methods, memory_methods},
    {Py_tp_getset, memory_getset},
    {Py_bf_getbuffer, memory_getbuffer},
    {Py_bf_releasebuffer, memory_releasebuffer},
    {Py_tp_doc, (void *)PyDoc_STR(
        "Memory(size): size zeroed bytes shared with every child.")},
    {0, NULL}
};

static PyType_Spec memory_spec = {
    .name = "gipc._sync.Memory",
    .basicsize = sizeof(MemoryObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = memory_slots,
};

static int
add_type(PyObject *module, PyType_Spec *spec, const char *name)
{
    PyObject *type = PyType_FromModuleAndSpec(module, spec, NULL);
    if (type == NULL) {
        return -1;
    }
    int rc = PyModule_AddObjectRef(module, name, type);
    Py_DECREF(type);
    return rc;
}

static int
sync_exec(PyObject *module)
{
    if (add_type(module, &block_spec, "Block") < 0
            || add_type(module, &memory_spec, "Memory") < 0) {
        return -1;
    }
    if (PyModule_AddIntConstant(module, "HEADER_WORDS", HEADER_WORDS) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot sync_slots[] = {
    {Py_mod_exec, sync_exec},
    {0, NULL}
};

static struct PyModuleDef sync_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gipc._sync",
    .m_doc = "Shared-memory words, bells and a byte ring for gipc's "
             "queues and locks.",
    .m_size = 0,
    .m_slots = sync_slots,
};

PyMODINIT_FUNC
PyInit__sync(void)
{
    return PyModuleDef_Init(&sync_module);
}
