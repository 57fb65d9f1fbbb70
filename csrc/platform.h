/*
 * Which facilities beyond POSIX.1-2008 this build of gipc._core uses.
 *
 * Each Linux-only call in csrc/ is compiled only where its macro below is
 * defined, and has a POSIX fallback otherwise.  GIPC_PORTABLE (setup.py
 * defines it for GIPC_PORTABLE=1) turns every one of them off, so that a
 * Linux build compiles exactly the code paths a macOS build compiles.
 */
#ifndef GIPC_PLATFORM_H
#define GIPC_PLATFORM_H

#if defined(__linux__) && !defined(GIPC_PORTABLE)
#include <fcntl.h>
#include <sys/syscall.h>
/* pidfd_open(2), waitid(P_PIDFD): Linux 5.3 / 5.4 (checked at run time
 * too: the build's headers may be newer than the kernel). */
#ifdef SYS_pidfd_open
#define GIPC_HAVE_PIDFD 1
#endif
/* pipe2(2) with O_CLOEXEC: no window between pipe() and fcntl(). */
#define GIPC_HAVE_PIPE2 1
/* dup3(2) with O_CLOEXEC: a replacement made close-on-exec in one call. */
#define GIPC_HAVE_DUP3 1
/* /proc/self/status tells the size of the descriptor table (FDSize):
 * a child started with close_fds probes the numbers below it only. */
#define GIPC_HAVE_PROC_FDSIZE 1
/* memfd_create(2) (Linux 3.17, glibc 2.27): shared memory behind a
 * descriptor with no name to clean up (else shm_open + shm_unlink). */
#include <sys/mman.h>
#ifdef MFD_CLOEXEC
#define GIPC_HAVE_MEMFD 1
#endif
#endif

/* dladdr(3) (POSIX only since 2024): glibc and macOS have it. */
#if !defined(GIPC_PORTABLE) && (defined(__linux__) || defined(__APPLE__))
#define GIPC_HAVE_DLADDR 1
#endif

#endif /* GIPC_PLATFORM_H */
