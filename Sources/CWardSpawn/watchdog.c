// The watchdog: when ward dies — even by SIGKILL — every process of every call it was
// running dies too, daemons included, so no effect can land after the ledger stopped
// recording. PR_SET_PDEATHSIG reaches only a tool's direct process; the rest of its tree is
// in the call's cgroup, and this process kills those cgroups.
//
// It is forked at start-up, then blocks reading a pipe whose write end lives only in
// ward's fd table (close-on-exec, so no child inherits it). ward's death closes it: the
// read returns 0. A forked child of a multithreaded process, it runs raw syscalls only.
#include "spawn_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static size_t join(char *out, size_t cap, const char *a, const char *b) {
    size_t n = 0;
    for (const char *p = a; *p && n + 1 < cap; p++) out[n++] = *p;
    if (n + 1 < cap) out[n++] = '/';
    for (const char *p = b; *p && n + 1 < cap; p++) out[n++] = *p;
    out[n] = 0;
    return n;
}

static long write_text(const char *path, const char *text) {
    long fd = sys(SYS_openat, AT_FDCWD, (long)path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return fd;
    long n = sys(SYS_write, fd, (long)text, (long)strlen(text));
    sys(SYS_close, fd);
    return n;
}

// SIGKILLs every pid listed in `procs`; returns how many it saw.
static int kill_listed(const char *procs) {
    long fd = sys(SYS_openat, AT_FDCWD, (long)procs, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[4096];
    int seen = 0;
    long n;
    long pid = 0;
    int digits = 0;
    while ((n = sys(SYS_read, fd, (long)buf, sizeof buf)) > 0) {
        for (long i = 0; i < n; i++) {
            if (buf[i] >= '0' && buf[i] <= '9') { pid = pid * 10 + (buf[i] - '0'); digits = 1; }
            else if (digits) { sys(SYS_kill, pid, SIGKILL); seen++; pid = 0; digits = 0; }
        }
    }
    if (digits) { sys(SYS_kill, pid, SIGKILL); seen++; }
    sys(SYS_close, fd);
    return seen;
}

static void kill_cgroup(const char *dir) {
    char path[4096];
    join(path, sizeof path, dir, "cgroup.kill");
    if (write_text(path, "1") == 1) return;  // cgroup v2: the kernel kills the whole tree
    // cgroup v1: no more forks, then kill what is listed until nothing is.
    join(path, sizeof path, dir, "pids.max");
    write_text(path, "0");
    join(path, sizeof path, dir, "cgroup.procs");
    struct timespec pause = { 0, 1000000 };
    for (int round = 0; round < 1000 && kill_listed(path) > 0; round++) sys(SYS_nanosleep, (long)&pause, 0);
}

static void kill_root(const char *root) {
    long fd = sys(SYS_openat, AT_FDCWD, (long)root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    char buf[8192];
    long n;
    while ((n = sys(SYS_getdents64, fd, (long)buf, sizeof buf)) > 0) {
        for (long off = 0; off < n;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
            if (strncmp(d->d_name, "call-", 5) == 0) {
                char dir[4096];
                join(dir, sizeof dir, root, d->d_name);
                kill_cgroup(dir);
            }
            off += d->d_reclen;
        }
    }
    sys(SYS_close, fd);
}

int ward_watchdog_start(const char *const *roots, int count, pid_t *watchdog) {
    int fds[2];
    if (ward_pipe_cloexec(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        // Out of the terminal's process group (a Ctrl-C is for ward, which shuts down
        // gracefully), every fd but the read end closed — above all the write end.
        sys(SYS_setsid);
        sys(SYS_dup2, fds[0], 3);
        sys(SYS_close_range, 4, ~0U, 0);
        sys(SYS_close_range, 0, 2, 0);
        char byte;
        long n;
        while ((n = sys(SYS_read, 3, (long)&byte, 1)) != 0) {
            if (n < 0 && n != -EINTR) break;
        }
        for (int i = 0; i < count; i++) kill_root(roots[i]);
        sys(SYS_exit_group, 0);
    }
    close(fds[0]);
    *watchdog = pid;
    return fds[1];  // held, close-on-exec, until ward exits or the pool is removed
}
