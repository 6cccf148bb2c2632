// Wrappers Swift cannot call directly (see ward_os.h for why each is C). They run in ward
// itself, never in a spawned child: that side is CWardSpawn, raw syscalls only.
#include "ward_os.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <linux/sockios.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/seccomp.h>

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif

// MARK: - Delivery

int ward_unread_bytes(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    int unread = 0;
    if (S_ISFIFO(st.st_mode)) return ioctl(fd, FIONREAD, &unread) == 0 ? unread : -1;
    if (S_ISSOCK(st.st_mode)) return ioctl(fd, SIOCOUTQ, &unread) == 0 ? unread : -1;
    return -1;
}

// MARK: - Memory files

int ward_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

int ward_input_memfd(const char *name) {
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
    if (fd < 0 && errno == EINVAL) fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);  // before 6.3
    return fd;
}

int ward_seal_contents(int fd) { return fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE); }

// MARK: - Confinement, from the parent side

long ward_landlock_create_ruleset(const void *attr, unsigned long size, uint32_t flags) {
    return syscall(SYS_landlock_create_ruleset, attr, size, flags);
}

long ward_landlock_add_path_rule(int ruleset_fd, uint64_t allowed, int parent_fd) {
    struct __attribute__((packed)) { uint64_t allowed_access; int32_t parent_fd; } attr = { allowed, parent_fd };
    return syscall(SYS_landlock_add_rule, ruleset_fd, 1 /* LANDLOCK_RULE_PATH_BENEATH */, &attr, 0);
}

long ward_landlock_add_net_rule(int ruleset_fd, uint64_t allowed, uint64_t port) {
    struct { uint64_t allowed_access; uint64_t port; } attr = { allowed, port };
    return syscall(SYS_landlock_add_rule, ruleset_fd, 2 /* LANDLOCK_RULE_NET_PORT */, &attr, 0);
}

int ward_open_path(const char *path) { return open(path, O_PATH | O_CLOEXEC); }

int ward_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5) {
    return prctl(option, a2, a3, a4, a5);
}

int ward_seccomp_available(void) {
    uint32_t action = SECCOMP_RET_ERRNO;
    return syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) == 0;
}

// MARK: - Peers

long ward_peer_pid(int fd) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    return (long)cred.pid;
}

long ward_peer_uid(int fd) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    return (long)cred.uid;
}

// MARK: - Processes

int ward_pidfd_kill(int pidfd) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, 9 /* SIGKILL */, NULL, 0);
}

// MARK: - Termination signals

#include <pthread.h>
#include <signal.h>

// A pipe rather than a flag: the handler's write is async-signal-safe, and the waiter sleeps
// in read instead of polling. Written by the handler, read by `ward_termination_wait`.
static int termination_pipe[2] = { -1, -1 };

static void termination_caught(int sig) {
    int saved = errno;
    unsigned char byte = (unsigned char)sig;
    (void)!write(termination_pipe[1], &byte, 1);
    errno = saved;
}

void ward_termination_catch(void) {
    if (termination_pipe[0] >= 0) return;
    if (pipe2(termination_pipe, O_CLOEXEC) != 0) return;
    // A handler, never SIG_IGN: an ignored process-directed signal is dropped by the kernel
    // before any thread or signalfd could see it.
    struct sigaction sa = { 0 };
    sa.sa_handler = termination_caught;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    // A process started from a thread that blocks them (a test runner's, a service
    // manager's) inherits that mask: a blocked signal would wait forever for no handler.
    // Threads made from here on inherit this thread's mask.
    sigset_t mine;
    sigemptyset(&mine);
    sigaddset(&mine, SIGINT);
    sigaddset(&mine, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &mine, NULL);
}

int ward_termination_wait(void) {
    unsigned char byte = 0;
    for (;;) {
        ssize_t n = read(termination_pipe[0], &byte, 1);
        if (n == 1) return byte;
        if (n < 0 && errno == EINTR) continue;
        return SIGTERM;  // the pipe is gone: treat as asked to stop
    }
}
