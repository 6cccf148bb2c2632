// The parent side of a call's effect trace: each traced call's tool carries a seccomp filter
// of its own that notifies ward (SECCOMP_RET_USER_NOTIF) of the syscalls that change
// something outside the process (files opened for writing, created, deleted, renamed,
// linked, chmodded; programs executed; sockets connected or bound). ward reads the
// syscall's arguments from the tool's memory while the syscall waits, then lets it go on
// (SECCOMP_USER_NOTIF_FLAG_CONTINUE): the kernel then runs it as if never stopped, under
// every other filter and Landlock. What is read is what the tool *attempted*: another
// thread of the tool may change the path in memory after ward read it and before the
// kernel does (docs/design.md, "Effect traces").
//
// Why C: the ioctls are variadic and the notification structs' layout is the kernel's.
#include "ward_spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/seccomp.h>

#ifndef SECCOMP_USER_NOTIF_FLAG_CONTINUE
#define SECCOMP_USER_NOTIF_FLAG_CONTINUE (1UL << 0)
#endif
#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif
#ifndef SECCOMP_GET_ACTION_AVAIL
#define SECCOMP_GET_ACTION_AVAIL 2
#endif

int ward_trace_available(void) {
    uint32_t action = SECCOMP_RET_USER_NOTIF;
    if (syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) != 0) return 0;
    // CONTINUE (5.5) is what lets a notified syscall run as the tool asked: without it
    // ward would have to run it on the tool's behalf.
    struct seccomp_notif_sizes sizes;
    return syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) == 0 && sizes.seccomp_notif >= sizeof(struct seccomp_notif);
}

int ward_trace_receive_listener(int sock) {
    char byte;
    char control[CMSG_SPACE(sizeof(int))];
    struct iovec iov = { &byte, 1 };
    struct msghdr msg = { 0 };
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t r;
    do r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT); while (r < 0 && errno == EINTR);
    if (r != 1) return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int))) return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    // The tool is woken on the CPU ward answered from: a notified syscall costs a few
    // microseconds instead of a scheduler round trip (6.6+; older kernels ignore the ask).
    ioctl(fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, (unsigned long long)SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP);
    return fd;
}

int ward_trace_next(int listener, int timeout_ms, struct ward_trace_notification *out) {
    struct pollfd fds[1] = { { listener, POLLIN, 0 } };
    int n = poll(fds, 1, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -1;
    if (n == 0) return 0;
    if (!(fds[0].revents & POLLIN)) return -1;
    struct seccomp_notif notif;
    memset(&notif, 0, sizeof notif);
    if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &notif) != 0) {
        // ENOENT: the task died (or its syscall was interrupted) between poll and here.
        return errno == ENOENT || errno == EINTR ? 0 : -1;
    }
    out->id = notif.id;
    out->pid = (int)notif.pid;
    out->nr = notif.data.nr;
    for (int i = 0; i < 6; i++) out->args[i] = notif.data.args[i];
    return 1;
}

int ward_trace_continue(int listener, uint64_t id) {
    struct seccomp_notif_resp resp;
    memset(&resp, 0, sizeof resp);
    resp.id = id;
    resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    int rc;
    do rc = ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp); while (rc != 0 && errno == EINTR);
    return rc == 0 ? 0 : -errno;
}

int ward_trace_id_valid(int listener, uint64_t id) {
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 ? 0 : -errno;
}

long ward_trace_read(int pid, uint64_t address, void *buffer, size_t length) {
    struct iovec local = { buffer, length };
    struct iovec remote = { (void *)(uintptr_t)address, length };
    return (long)process_vm_readv(pid, &local, 1, &remote, 1, 0);
}

long ward_trace_read_string(int pid, uint64_t address, char *buffer, size_t capacity) {
    if (!address || capacity == 0) return -1;
    // Page by page: a string near the end of a mapping must not fail for the unmapped
    // page after it.
    size_t got = 0;
    while (got + 1 < capacity) {
        uint64_t at = address + got;
        size_t chunk = 4096 - (size_t)(at & 4095);
        if (chunk > capacity - 1 - got) chunk = capacity - 1 - got;
        long n = ward_trace_read(pid, at, buffer + got, chunk);
        if (n <= 0) break;
        char *nul = memchr(buffer + got, 0, (size_t)n);
        if (nul) return (long)(nul - buffer);
        got += (size_t)n;
        if ((size_t)n < chunk) break;
    }
    buffer[got] = 0;
    return got ? (long)got : -1;
}

long ward_trace_fd_path(int pid, int fd, char *buffer, size_t capacity) {
    char link[64];
    if (fd == -100 /* AT_FDCWD */) snprintf(link, sizeof link, "/proc/%d/cwd", pid);
    else snprintf(link, sizeof link, "/proc/%d/fd/%d", pid, fd);
    ssize_t n = readlink(link, buffer, capacity - 1);
    if (n < 0) return -1;
    buffer[n] = 0;
    return n;
}

int ward_socketpair_cloexec(int fds[2]) { return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds); }
