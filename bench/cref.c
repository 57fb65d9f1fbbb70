/*
 * C reference for the gipc benchmark: the same framed transfer as gipc
 * (4-byte big-endian length, then the payload) between a parent and a
 * forked child over a plain pipe, with blocking I/O.  The ceiling on this
 * machine.  Compiled by bench/impl_cref.py with gcc -O2 into bench/out/.
 *
 *   cref msgs  N SIZE DISTINCT REUSE PIPE_SIZE   child sends N frames
 *   cref rtt   N WARMUP SIZE PIPE_SIZE [SPIN_US] ping-pong
 *   cref spawn N                                 fork + _exit + waitpid
 *   cref rss   SIZE PIPE_SIZE                    peak RSS receiving 1 frame
 *
 * Receiver: a 64 KiB buffer per read end, every frame that a read() brought
 * in is parsed before reading again; a payload is copied into a malloc'd
 * message (as a library returning a new object per message would), a large
 * one read straight into it; REUSE=1 reads every payload into one buffer.
 * With SPIN_US > 0 (rtt only), a reader about to block first polls the
 * empty pipe for up to SPIN_US microseconds without sleeping, as gipc's
 * reader does (csrc/spin.c): the reference for gipc's round trip, since a
 * blocked reader's wake-up costs 2 or 70 us on these VMs, run to run.
 * Sender: one writev() of header and payload per frame.  Every message is
 * compared with the expected one in the timed loop (as the Python cases
 * do).  Prints one JSON line on stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BUFCAP (64 * 1024)
#define PERIOD (1024 * 1024 + 17)

static void
die(const char *what)
{
    printf("{\"ok\": false, \"error\": \"%s: %s\"}\n", what,
           errno ? strerror(errno) : "failed");
    fflush(stdout);
    exit(3);
}

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A payload: a pseudo-random block of PERIOD bytes, repeated. */
static char *
make_payload(size_t size, uint64_t seed)
{
    static char *block = NULL;
    static uint64_t block_seed = 0;
    char *p = malloc(size ? size : 1);
    size_t i, off;

    if (p == NULL) {
        die("malloc");
    }
    if (block == NULL || block_seed != seed) {
        uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
        free(block);
        block = malloc(PERIOD);
        if (block == NULL) {
            die("malloc");
        }
        for (i = 0; i < PERIOD; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            block[i] = (char)(x >> 24);
        }
        block_seed = seed;
    }
    for (off = 0; off < size; off += PERIOD) {
        size_t n = size - off < PERIOD ? size - off : PERIOD;
        memcpy(p + off, block, n);
    }
    return p;
}

static void
put_index(char *msg, uint64_t i)
{
    int k;
    for (k = 7; k >= 0; k--) {
        msg[k] = (char)(i & 0xff);
        i >>= 8;
    }
}

/* ---- framed I/O ---- */

typedef struct {
    int fd;
    char buf[BUFCAP];
    size_t start, end;
    long reads;             /* read() calls, reported for information */
    int64_t spin_ns;        /* poll an empty pipe this long before read() */
} reader_t;

/* Poll r->fd without sleeping until it is readable or r->spin_ns passed. */
static void
rd_spin(reader_t *r)
{
    struct pollfd p = {r->fd, POLLIN, 0};
    int64_t until;

    if (r->spin_ns <= 0) {
        return;
    }
    until = now_ns() + r->spin_ns;
    while (poll(&p, 1, 0) == 0 && now_ns() < until) {
    }
}

static void
rd_fill(reader_t *r, size_t need)
{
    if (r->start > 0) {
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
    }
    while (r->end < need) {
        ssize_t n;

        rd_spin(r);
        n = read(r->fd, r->buf + r->end, BUFCAP - r->end);
        r->reads++;
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            die("read");
        }
        if (n == 0) {
            errno = 0;
            die("unexpected EOF");
        }
        r->end += (size_t)n;
    }
}

/* Receive one frame into `into` (capacity `cap`) or, if into is NULL, into
 * a new malloc'd message.  Returns the payload; its length in *len. */
static char *
rd_get(reader_t *r, size_t *len, char *into, size_t cap)
{
    const unsigned char *h;
    size_t n, have;
    char *dst;

    if (r->end - r->start < 4) {
        rd_fill(r, 4);
    }
    h = (const unsigned char *)r->buf + r->start;
    n = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
    if (h[0] & 0x80) {
        errno = 0;
        die("frame too large for the reference");
    }
    r->start += 4;
    if (into != NULL) {
        if (n > cap) {
            errno = 0;
            die("buffer too small");
        }
        dst = into;
    }
    else {
        dst = malloc(n ? n : 1);
        if (dst == NULL) {
            die("malloc");
        }
    }
    if (n <= BUFCAP && r->end - r->start < n) {
        rd_fill(r, n);
    }
    have = r->end - r->start < n ? r->end - r->start : n;
    memcpy(dst, r->buf + r->start, have);
    r->start += have;
    while (have < n) {
        ssize_t k = read(r->fd, dst + have, n - have);
        r->reads++;
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0) {
            die("read");
        }
        if (k == 0) {
            errno = 0;
            die("EOF in the middle of a message");
        }
        have += (size_t)k;
    }
    *len = n;
    return dst;
}

static void
put_frame(int fd, const char *data, size_t n)
{
    unsigned char hdr[4] = {
        (unsigned char)(n >> 24), (unsigned char)(n >> 16),
        (unsigned char)(n >> 8), (unsigned char)n};
    size_t total = n + 4, off = 0;

    while (off < total) {
        struct iovec iov[2];
        int cnt = 0;
        ssize_t k;
        if (off < 4) {
            iov[cnt].iov_base = hdr + off;
            iov[cnt].iov_len = 4 - off;
            cnt++;
            iov[cnt].iov_base = (void *)data;
            iov[cnt].iov_len = n;
            cnt++;
        }
        else {
            iov[cnt].iov_base = (void *)(data + off - 4);
            iov[cnt].iov_len = total - off;
            cnt++;
        }
        k = writev(fd, iov, cnt);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0) {
            die("writev");
        }
        off += (size_t)k;
    }
}

/* ---- plumbing ---- */

static void
make_pipe(int fds[2], int pipe_size)
{
    if (pipe(fds) < 0) {
        die("pipe");
    }
    if (pipe_size > 0) {
        (void)fcntl(fds[1], F_SETPIPE_SZ, pipe_size);
    }
}

static void
xwrite1(int fd)
{
    char c = 'g';
    while (write(fd, &c, 1) != 1) {
        if (errno != EINTR) {
            die("ctl write");
        }
    }
}

static void
xread1(int fd)
{
    char c;
    ssize_t n;
    while ((n = read(fd, &c, 1)) != 1) {
        if (n == 0 || errno != EINTR) {
            die("ctl read");
        }
    }
}

static void
reap(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            die("waitpid");
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        errno = 0;
        die("child failed");
    }
}

static long
proc_status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t klen = strlen(key);
    long v = -1;

    if (f == NULL) {
        die("open /proc/self/status");
    }
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0) {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- modes ---- */

static int
mode_msgs(long count, size_t size, int distinct, int reuse, int pipe_size)
{
    int data[2], ready[2], go[2];
    pid_t pid;
    char *expected, *into = NULL;
    long i, bad = 0;
    double t0, dt;
    reader_t *rd;

    make_pipe(data, pipe_size);
    make_pipe(ready, 0);
    make_pipe(go, 0);
    pid = fork();
    if (pid < 0) {
        die("fork");
    }
    if (pid == 0) {
        char *msg = make_payload(size, 3);
        close(data[0]);
        xwrite1(ready[1]);
        xread1(go[0]);
        for (i = 0; i < count; i++) {
            if (distinct) {
                put_index(msg, (uint64_t)i);
            }
            put_frame(data[1], msg, size);
        }
        _exit(0);
    }
    close(data[1]);
    close(ready[1]);
    close(go[0]);
    expected = make_payload(size, 3);
    rd = calloc(1, sizeof *rd);
    rd->fd = data[0];
    if (reuse) {
        into = malloc(size ? size : 1);
    }
    xread1(ready[0]);
    xwrite1(go[1]);
    t0 = now();
    for (i = 0; i < count; i++) {
        size_t len;
        char *m = rd_get(rd, &len, into, size);
        if (len != size) {
            bad++;
        }
        else if (distinct) {
            put_index(expected, (uint64_t)i);
            if (memcmp(m, expected, size) != 0) {
                bad++;
            }
        }
        else if (memcmp(m, expected, size) != 0) {
            bad++;
        }
        if (m != into) {
            free(m);
        }
    }
    dt = now() - t0;
    reap(pid);
    if (bad) {
        errno = 0;
        printf("{\"ok\": false, \"error\": \"%ld messages not intact\"}\n",
               bad);
        return 3;
    }
    printf("{\"ok\": true, \"seconds\": %.9f, \"count\": %ld, \"size\": %zu, "
           "\"pipe_size\": %d, \"reads\": %ld}\n", dt, count, size,
           fcntl(data[0], F_GETPIPE_SZ), rd->reads);
    return 0;
}

static int
mode_rtt(long count, long warm, size_t size, int pipe_size, long spin_us)
{
    int a[2], b[2], ready[2], go[2];
    pid_t pid;
    long i, total = count + warm, bad = 0;
    int64_t *times;
    char *msg;
    reader_t *rd = calloc(1, sizeof *rd);

    rd->spin_ns = (int64_t)spin_us * 1000;
    make_pipe(a, pipe_size);
    make_pipe(b, pipe_size);
    make_pipe(ready, 0);
    make_pipe(go, 0);
    pid = fork();
    if (pid < 0) {
        die("fork");
    }
    if (pid == 0) {
        close(a[1]);
        close(b[0]);
        rd->fd = a[0];
        xwrite1(ready[1]);
        xread1(go[0]);
        for (i = 0; i < total; i++) {
            size_t len;
            char *m = rd_get(rd, &len, NULL, 0);
            put_frame(b[1], m, len);
            free(m);
        }
        _exit(0);
    }
    close(a[0]);
    close(b[1]);
    rd->fd = b[0];
    msg = make_payload(size, 4);
    times = malloc(sizeof(int64_t) * (size_t)(count ? count : 1));
    xread1(ready[0]);
    xwrite1(go[1]);
    for (i = 0; i < total; i++) {
        size_t len;
        int64_t t0, t1;
        char *m;
        put_index(msg, (uint64_t)i);
        t0 = now_ns();
        put_frame(a[1], msg, size);
        m = rd_get(rd, &len, NULL, 0);
        t1 = now_ns();
        if (len != size || memcmp(m, msg, size) != 0) {
            bad++;
        }
        free(m);
        if (i >= warm) {
            times[i - warm] = t1 - t0;
        }
    }
    reap(pid);
    if (bad) {
        printf("{\"ok\": false, \"error\": \"%ld echoed messages not intact\"}\n",
               bad);
        return 3;
    }
    qsort(times, (size_t)count, sizeof *times, cmp_i64);
    {
        double med = count % 2 ? (double)times[count / 2]
                               : (times[count / 2 - 1] + times[count / 2]) / 2.0;
        long k = (long)(0.99 * count + 0.5) - 1;   /* nearest rank */
        if (k < 0) {
            k = 0;
        }
        if (k >= count) {
            k = count - 1;
        }
        printf("{\"ok\": true, \"rtt_median_us\": %.3f, \"rtt_p99_us\": %.3f, "
               "\"pipe_size\": %d}\n", med / 1e3, times[k] / 1e3,
               fcntl(a[1], F_GETPIPE_SZ));
    }
    return 0;
}

static int
mode_spawn(long count)
{
    double *times = malloc(sizeof(double) * (size_t)count);
    long i;

    for (i = 0; i < count; i++) {
        double t0 = now();
        pid_t pid = fork();
        if (pid < 0) {
            die("fork");
        }
        if (pid == 0) {
            _exit(0);
        }
        reap(pid);
        times[i] = now() - t0;
    }
    qsort(times, (size_t)count, sizeof *times, cmp_double);
    printf("{\"ok\": true, \"start_join_ms\": %.6f}\n",
           (count % 2 ? times[count / 2]
                      : (times[count / 2 - 1] + times[count / 2]) / 2) * 1e3);
    return 0;
}

static int
mode_rss(size_t size, int pipe_size)
{
    int data[2], ready[2], go[2];
    pid_t pid;
    long before, peak;
    int fd;
    int reset_ok = 0;
    size_t len;
    char *m, *expected;
    reader_t *rd = calloc(1, sizeof *rd);

    make_pipe(data, pipe_size);
    make_pipe(ready, 0);
    make_pipe(go, 0);
    pid = fork();
    if (pid < 0) {
        die("fork");
    }
    if (pid == 0) {
        char *payload = make_payload(size, 7);
        close(data[0]);
        xwrite1(ready[1]);
        xread1(go[0]);
        put_frame(data[1], payload, size);
        _exit(0);
    }
    close(data[1]);
    close(ready[1]);
    close(go[0]);
    rd->fd = data[0];
    xread1(ready[0]);
    fd = open("/proc/self/clear_refs", O_WRONLY);
    if (fd >= 0) {
        reset_ok = write(fd, "5", 1) == 1;
        close(fd);
    }
    before = proc_status_kb("VmRSS");
    xwrite1(go[1]);
    m = rd_get(rd, &len, NULL, 0);
    peak = proc_status_kb("VmHWM");
    reap(pid);
    expected = make_payload(size, 7);
    if (len != size || memcmp(m, expected, size) != 0) {
        printf("{\"ok\": false, \"error\": \"message not intact\"}\n");
        return 3;
    }
    printf("{\"ok\": true, \"extra_rss_mib\": %.3f, \"extra_rss_ratio\": %.4f, "
           "\"_peak_reset\": %s}\n", (peak - before) / 1024.0,
           (peak - before) * 1024.0 / (double)size, reset_ok ? "true" : "false");
    return 0;
}

int
main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 7 && strcmp(argv[1], "msgs") == 0) {
        return mode_msgs(atol(argv[2]), (size_t)atol(argv[3]), atoi(argv[4]),
                         atoi(argv[5]), atoi(argv[6]));
    }
    if ((argc == 6 || argc == 7) && strcmp(argv[1], "rtt") == 0) {
        return mode_rtt(atol(argv[2]), atol(argv[3]), (size_t)atol(argv[4]),
                        atoi(argv[5]), argc == 7 ? atol(argv[6]) : 0);
    }
    if (argc == 3 && strcmp(argv[1], "spawn") == 0) {
        return mode_spawn(atol(argv[2]));
    }
    if (argc == 4 && strcmp(argv[1], "rss") == 0) {
        return mode_rss((size_t)atol(argv[2]), atoi(argv[3]));
    }
    fprintf(stderr, "usage: see the comment at the top of cref.c\n");
    return 2;
}
