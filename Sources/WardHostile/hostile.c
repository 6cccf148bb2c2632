// ward-hostile: what a hostile or buggy tool tries, one behaviour per subcommand.
// Each prints "NAME: RESULT" where RESULT is OK (the attempt succeeded: the sandbox failed)
// or the errno name it got; behaviours the sandbox answers by killing the process print
// nothing after "trying". The threat tests run it inside the sandbox and assert the result.
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <linux/capability.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>

static const char *err_name(int e) {
    switch (e) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ESRCH: return "ESRCH";
    case EACCES: return "EACCES";
    case EXDEV: return "EXDEV";
    case EINVAL: return "EINVAL";
    case ENOSYS: return "ENOSYS";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENOTTY: return "ENOTTY";
    case ENXIO: return "ENXIO";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EFBIG: return "EFBIG";
    case EBADF: return "EBADF";
    case EROFS: return "EROFS";
    case ENETUNREACH: return "ENETUNREACH";
    case EEXIST: return "EEXIST";
    case EFAULT: return "EFAULT";
    case EISCONN: return "EISCONN";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    default: {
        static char buf[32];
        snprintf(buf, sizeof buf, "errno%d", e);
        return buf;
    }
    }
}

static int report(const char *name, long rc) {
    printf("%s: %s\n", name, rc < 0 ? err_name(errno) : "OK");
    fflush(stdout);
    return 0;
}

static int do_i386(void) {
    // getpid through the i386 entry point: a filter that checks only nr (20 is i386 getpid,
    // x86_64 getpid is 39) would be fooled; seccomp must see the foreign arch and kill.
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20) : "memory");
    printf("i386: OK (returned %ld)\n", ret);
    return 0;
}

static int connect_tcp(const char *name, const char *port_text) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return report(name, -1);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(port_text)) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return report(name, connect(s, (struct sockaddr *)&a, sizeof a));
}

static int connect_unix(const char *name, const char *path, int abstract) {
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (s < 0) return report(name, -1);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    socklen_t len;
    if (abstract) {
        a.sun_path[0] = 0;
        strncpy(a.sun_path + 1, path, sizeof a.sun_path - 2);
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(path));
    } else {
        strncpy(a.sun_path, path, sizeof a.sun_path - 1);
        len = sizeof a;
    }
    return report(name, connect(s, (struct sockaddr *)&a, len));
}

static int daemonize(const char *token) {
    // Double fork + setsid: the classic escape from a process-group kill.
    pid_t p = fork();
    if (p < 0) return report("daemon", -1);
    if (p > 0) { waitpid(p, NULL, 0); printf("daemon: started\n"); return 0; }
    setsid();
    if (fork() != 0) _exit(0);
    prctl(PR_SET_NAME, "ward-daemon", 0, 0, 0);
    for (int fd = 0; fd < 3; fd++) close(fd);
    execl("/bin/sleep", "sleep", token, (char *)NULL);
    _exit(1);
}

// Other processes. Each takes a pid, or "child": a paused child of this process (the
// call's own, so inside the sandbox the same calls work). Run outside any sandbox against a
// process of the same uid, each succeeds (process_vm_* with EFAULT: the access check
// passed, the address is unmapped on purpose, so a control changes nothing), which is what
// makes a refusal inside the sandbox mean something. -2: not such a behaviour.
static int probe_process(const char *b, pid_t pid) {
    if (!strcmp(b, "ptrace")) return report(b, syscall(SYS_ptrace, 16 /* PTRACE_ATTACH */, pid, 0, 0));
    if (!strcmp(b, "ptrace-seize")) return report(b, syscall(SYS_ptrace, 0x4206 /* PTRACE_SEIZE */, pid, 0, 0));
    if (!strcmp(b, "process_vm_readv")) {
        char buf[8];
        struct iovec l = { buf, 8 }, r = { (void *)0x400000, 8 };
        return report(b, syscall(SYS_process_vm_readv, pid, &l, 1, &r, 1, 0));
    }
    if (!strcmp(b, "process_vm_writev")) {
        char buf[8] = { 0 };
        struct iovec l = { buf, 8 }, r = { (void *)0x400000, 8 };
        return report(b, syscall(SYS_process_vm_writev, pid, &l, 1, &r, 1, 0));
    }
    if (!strcmp(b, "pidfd_getfd")) {
        // A copy of the process's fd 0.
        long pidfd = syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0) return report(b, pidfd);
        return report(b, syscall(SYS_pidfd_getfd, pidfd, 0, 0));
    }
    if (!strcmp(b, "kcmp")) return report(b, syscall(SYS_kcmp, getpid(), pid, 0, 0, 0));
    if (!strcmp(b, "kill")) return report(b, kill(pid, 0));
    if (!strcmp(b, "kill-term")) return report(b, kill(pid, SIGTERM));
    return -2;
}

// Copies /bin/echo into `fd` and runs it from /proc/self/fd: a success prints "NAME: OK".
static int copy_and_exec(const char *name, int fd, int make_executable) {
    int src = open("/bin/echo", O_RDONLY);
    char buf[65536], line[64];
    ssize_t n;
    while ((n = read(src, buf, sizeof buf)) > 0)
        if (write(fd, buf, (size_t)n) != n) return report(name, -1);
    if (make_executable) fchmod(fd, 0755);  // refused on a sealed memfd (F_SEAL_EXEC); exec tells
    snprintf(line, sizeof line, "%s: OK (fileless exec ran)", name);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    char *args[] = { "echo", line, NULL }, *env[] = { NULL };
    return report(name, execve(path, args, env));
}

static int memfd_exec(const char *name, unsigned flags, int make_executable) {
    int fd = (int)syscall(SYS_memfd_create, "x", flags);
    if (fd < 0) return report(name, -1);
    return copy_and_exec(name, fd, make_executable);
}

// race-open: one thread opens files by a path in shared memory while another rewrites that
// path, so the path ward reads when the open is notified may not be the one the kernel then
// opens (the limit of a trace of attempts).
static char race_path[32];
static volatile int race_done;
static void *race_flip(void *unused) {
    (void)unused;
    while (!race_done) race_path[5] = race_path[5] == 'a' ? 'b' : 'a';
    return NULL;
}
static int race_open(int count) {
    pthread_t flipper;
    snprintf(race_path, sizeof race_path, "race-a-0");
    if (pthread_create(&flipper, NULL, race_flip, NULL) != 0) return report("race-open", -1);
    for (int i = 0; i < count; i++) {
        snprintf(race_path + 7, sizeof race_path - 7, "%d", i);
        int fd = open(race_path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd >= 0) close(fd);
    }
    race_done = 1;
    pthread_join(flipper, NULL);
    return report("race-open", 0);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: ward-hostile BEHAVIOUR [ARG]\n"); return 2; }
    const char *b = argv[1];
    const char *arg = argc > 2 ? argv[2] : "";
    char c = 'x';

    if (!strcmp(b, "race-open")) return race_open(atoi(arg));
    // Other syscall ABIs.
    if (!strcmp(b, "i386")) { printf("trying\n"); fflush(stdout); return do_i386(); }
    if (!strcmp(b, "x32")) { printf("trying\n"); fflush(stdout); return report(b, syscall(39 | 0x40000000)); }
    // Terminal injection.
    if (!strcmp(b, "tiocsti")) return report(b, ioctl(0, TIOCSTI, &c));
    if (!strcmp(b, "tiocsti-high")) return report(b, syscall(SYS_ioctl, 0, (0x123UL << 32) | TIOCSTI, &c));
    if (!strcmp(b, "tioclinux")) { char sel = 2; return report(b, ioctl(0, TIOCLINUX, &sel)); }
    if (!strcmp(b, "tioclinux-high")) { char sel = 2; return report(b, syscall(SYS_ioctl, 0, (0x1UL << 40) | TIOCLINUX, &sel)); }
    if (!strcmp(b, "ioctl-other")) { int n; long rc = ioctl(1, FIONREAD, &n); return report(b, rc); }
    if (!strcmp(b, "open-tty")) return report(b, open("/dev/tty", O_RDWR));
    // Namespaces.
    if (!strcmp(b, "unshare-user")) return report(b, unshare(CLONE_NEWUSER));
    if (!strcmp(b, "unshare-net")) return report(b, unshare(CLONE_NEWNET));
    if (!strcmp(b, "unshare-mount")) return report(b, unshare(CLONE_NEWNS));
    if (!strcmp(b, "unshare-pid")) return report(b, unshare(CLONE_NEWPID));
    if (!strcmp(b, "clone-newuser")) {
        long rc = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
        if (rc == 0) _exit(0);
        return report(b, rc);
    }
    if (!strcmp(b, "clone3")) {
        struct clone_args ca;
        memset(&ca, 0, sizeof ca);
        ca.flags = CLONE_NEWUSER;
        ca.exit_signal = SIGCHLD;
        long rc = syscall(SYS_clone3, &ca, sizeof ca);
        if (rc == 0) _exit(0);
        return report(b, rc);
    }
    if (!strcmp(b, "setns")) return report(b, syscall(SYS_setns, 0, 0));
    if (!strcmp(b, "fork")) { pid_t p = fork(); if (p == 0) _exit(0); if (p > 0) waitpid(p, NULL, 0); return report(b, p); }
    // Mounts.
    if (!strcmp(b, "mount")) return report(b, mount("none", "/tmp", "tmpfs", 0, NULL));
    if (!strcmp(b, "fsopen")) return report(b, syscall(SYS_fsopen, "tmpfs", 0));
    if (!strcmp(b, "open_tree")) return report(b, syscall(SYS_open_tree, AT_FDCWD, "/", 0));
    if (!strcmp(b, "move_mount")) return report(b, syscall(SYS_move_mount, -1, "", AT_FDCWD, "/tmp", 0));
    if (!strcmp(b, "umount")) return report(b, umount2("/proc", MNT_DETACH));
    if (!strcmp(b, "chroot")) return report(b, chroot("."));
    if (!strcmp(b, "pivot_root")) return report(b, syscall(SYS_pivot_root, ".", "."));
    if (!strcmp(b, "pidfd_getfd") && !*arg) return report(b, syscall(SYS_pidfd_getfd, 0, 0, 0));  // the syscall itself
    if (*arg && (!strcmp(arg, "child") || atoi(arg) > 0)) {
        pid_t pid = atoi(arg);
        if (!strcmp(arg, "child") && (pid = fork()) == 0) for (;;) pause();
        int rc = probe_process(b, pid);
        if (!strcmp(arg, "child") && pid > 0) { kill(pid, SIGKILL); waitpid(pid, NULL, 0); }
        if (rc != -2) return rc;
    }
    if (!strcmp(b, "proc-environ")) { char p[64]; snprintf(p, sizeof p, "/proc/%s/environ", arg); return report(b, open(p, O_RDONLY)); }
    if (!strcmp(b, "proc-cmdline")) { char p[64]; snprintf(p, sizeof p, "/proc/%s/cmdline", arg); return report(b, open(p, O_RDONLY)); }
    if (!strcmp(b, "proc-self-mem")) return report(b, open("/proc/self/mem", O_RDWR));
    // Kernel attack surface.
    if (!strcmp(b, "bpf")) return report(b, syscall(SYS_bpf, 0, 0, 0));
    if (!strcmp(b, "perf_event_open")) return report(b, syscall(SYS_perf_event_open, 0, 0, -1, -1, 0));
    if (!strcmp(b, "userfaultfd")) return report(b, syscall(SYS_userfaultfd, 0));
    if (!strcmp(b, "keyctl")) return report(b, syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
    if (!strcmp(b, "add_key")) return report(b, syscall(SYS_add_key, "user", "k", "v", 1, -3));
    if (!strcmp(b, "request_key")) return report(b, syscall(SYS_request_key, "user", "k", 0, 0));
    if (!strcmp(b, "io_uring_setup")) { char params[120] = { 0 }; return report(b, syscall(SYS_io_uring_setup, 1, params)); }
    if (!strcmp(b, "open_by_handle_at")) { char h[64] = { 0 }; return report(b, syscall(SYS_open_by_handle_at, AT_FDCWD, h, 0)); }
    if (!strcmp(b, "init_module")) return report(b, syscall(SYS_init_module, NULL, 0, ""));
    if (!strcmp(b, "finit_module")) return report(b, syscall(SYS_finit_module, 0, "", 0));
    if (!strcmp(b, "kexec_load")) return report(b, syscall(SYS_kexec_load, 0, 0, NULL, 0));
    if (!strcmp(b, "reboot")) return report(b, syscall(SYS_reboot, 0xfee1dead, 672274793, 0x4321fedc, NULL));
    if (!strcmp(b, "swapon")) return report(b, syscall(SYS_swapon, "/nonexistent", 0));
    if (!strcmp(b, "iopl")) return report(b, syscall(SYS_iopl, 3));
    if (!strcmp(b, "ioperm")) return report(b, syscall(SYS_ioperm, 0x80, 1, 1));
    if (!strcmp(b, "clock_settime")) { struct timespec ts = { 0, 0 }; return report(b, syscall(SYS_clock_settime, CLOCK_REALTIME, &ts)); }
    if (!strcmp(b, "acct")) return report(b, syscall(SYS_acct, NULL));
    if (!strcmp(b, "syslog")) return report(b, syscall(SYS_syslog, 10, NULL, 0));
    if (!strcmp(b, "quotactl")) return report(b, syscall(SYS_quotactl, 0, "/", 0, NULL));
    if (!strcmp(b, "vhangup")) return report(b, syscall(SYS_vhangup));
    if (!strcmp(b, "memfd-exec")) {
        int fd = (int)syscall(SYS_memfd_create, "x", 0);
        if (fd < 0) return report("memfd-exec", -1);
        // Run echo from the memfd: a success reports itself.
        int src = open("/bin/echo", O_RDONLY);
        char buf[65536];
        ssize_t n;
        while ((n = read(src, buf, sizeof buf)) > 0) write(fd, buf, n);
        char *args[] = { "echo", "memfd-exec: OK (fileless exec ran)", NULL }, *env[] = { NULL };
        return report(b, syscall(SYS_execveat, fd, "", args, env, AT_EMPTY_PATH));
    }
    if (!strcmp(b, "memfd-proc-exec")) return memfd_exec(b, 0, 0);
    if (!strcmp(b, "memfd-sealed-exec")) return memfd_exec(b, 0x8 /* MFD_NOEXEC_SEAL */, 1);
    if (!strcmp(b, "stdin-exec")) {
        // ward's stdin memfd is read-write: write a program into it and run it from /proc.
        if (ftruncate(0, 0) < 0) return report(b, -1);
        return copy_and_exec(b, 0, 0);
    }
    // Acting on another process (pid in arg; 0 = itself): each sets a value to what the
    // target already has, so a success changes nothing but proves the door was open.
    if (!strcmp(b, "prlimit")) {
        struct rlimit lim;
        if (syscall(SYS_prlimit64, atoi(arg), RLIMIT_NOFILE, NULL, &lim) < 0) return report(b, -1);
        return report(b, syscall(SYS_prlimit64, atoi(arg), RLIMIT_NOFILE, &lim, NULL));
    }
    if (!strcmp(b, "setpriority")) {
        errno = 0;
        int nice = getpriority(PRIO_PROCESS, atoi(arg));
        if (nice == -1 && errno) return report(b, -1);
        return report(b, setpriority(PRIO_PROCESS, atoi(arg), nice));
    }
    if (!strcmp(b, "setpriority-user")) return report(b, setpriority(PRIO_USER, 0, 19));
    if (!strcmp(b, "sched_setaffinity")) {
        cpu_set_t set;
        if (sched_getaffinity(atoi(arg), sizeof set, &set) < 0) return report(b, -1);
        return report(b, sched_setaffinity(atoi(arg), sizeof set, &set));
    }
    if (!strcmp(b, "ioprio_set")) {
        long prio = syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, atoi(arg));
        if (prio < 0) return report(b, -1);
        return report(b, syscall(SYS_ioprio_set, 1, atoi(arg), prio));
    }
    if (!strcmp(b, "pidfd_open")) return report(b, syscall(SYS_pidfd_open, atoi(arg) ? atoi(arg) : getpid(), 0));
    // prctl options no tool needs, and one every runtime uses.
    if (!strcmp(b, "prctl-user-dispatch")) return report(b, prctl(59 /* PR_SET_SYSCALL_USER_DISPATCH */, 0 /* OFF */, 0, 0, 0));
    if (!strcmp(b, "prctl-keepcaps")) return report(b, prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0));
    if (!strcmp(b, "prctl-name")) return report(b, prctl(PR_SET_NAME, "hostile", 0, 0, 0));
    if (!strcmp(b, "unshare-none")) return report(b, unshare(0));
    // Socket calls on the only sockets a network = "none" tool can make: a socketpair's ends.
    if (!strcmp(b, "socket-calls")) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) return report("socket-calls", -1);
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "ward-hostile-%d", (int)getpid());
        socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(a.sun_path + 1));
        int one = 1;
        socklen_t len = sizeof one;
        report("bind", bind(sv[0], (struct sockaddr *)&a, alen));
        report("listen", listen(sv[0], 1));
        report("connect", connect(sv[1], (struct sockaddr *)&a, alen));
        report("accept", accept(sv[0], NULL, NULL));
        report("setsockopt", setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one));
        report("getsockopt", getsockopt(sv[0], SOL_SOCKET, SO_TYPE, &one, &len));
        return report("send", send(sv[0], "x", 1, 0) == 1 && recv(sv[1], &c, 1, 0) == 1 ? 0 : -1);
    }
    // A datagram pair's end sends to a host datagram socket by path (Landlock does not check).
    if (!strcmp(b, "dgram-sendto")) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0) return report(b, -1);
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        strncpy(a.sun_path, arg, sizeof a.sun_path - 1);
        return report(b, sendto(sv[0], "x", 1, 0, (struct sockaddr *)&a, sizeof a));
    }
    // personality tricks.
    if (!strcmp(b, "personality-rie")) return report(b, personality(READ_IMPLIES_EXEC));
    if (!strcmp(b, "personality-norandom")) return report(b, personality(ADDR_NO_RANDOMIZE));
    if (!strcmp(b, "personality-query")) return report(b, personality(0xffffffff));
    // Sockets.
    if (!strcmp(b, "socket-raw")) return report(b, socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    if (!strcmp(b, "socket-packet")) return report(b, socket(AF_PACKET, SOCK_RAW, 0));
    if (!strcmp(b, "socket-netlink")) return report(b, socket(AF_NETLINK, SOCK_RAW, 0));
    if (!strcmp(b, "socket-vsock")) return report(b, socket(40 /* AF_VSOCK */, SOCK_STREAM, 0));
    if (!strcmp(b, "socket-inet")) return report(b, socket(AF_INET, SOCK_STREAM, 0));
    if (!strcmp(b, "socket-udp")) return report(b, socket(AF_INET, SOCK_DGRAM, 0));
    if (!strcmp(b, "socket-unix")) return report(b, socket(AF_UNIX, SOCK_STREAM, 0));
    if (!strcmp(b, "socketpair")) { int sv[2]; return report(b, socketpair(AF_UNIX, SOCK_STREAM, 0, sv)); }
    if (!strcmp(b, "connect-tcp")) return connect_tcp(b, arg);
    if (!strcmp(b, "connect-abstract")) return connect_unix(b, arg, 1);
    if (!strcmp(b, "connect-unix")) return connect_unix(b, arg, 0);
    // Files.
    if (!strcmp(b, "write")) return report(b, open(arg, O_WRONLY | O_CREAT | O_TRUNC, 0644));
    if (!strcmp(b, "read")) return report(b, open(arg, O_RDONLY));
    if (!strcmp(b, "symlink-escape")) {
        // A link inside the writable workspace pointing outside it, then a write through it.
        unlink("escape-link");
        if (symlink(arg, "escape-link") < 0) return report("symlink-escape", -1);
        return report(b, open("escape-link/owned", O_WRONLY | O_CREAT, 0644));
    }
    if (!strcmp(b, "hardlink")) { unlink("linked"); return report(b, link(arg, "linked")); }
    if (!strcmp(b, "rename-out")) { int fd = open("moving", O_WRONLY | O_CREAT, 0644); close(fd); return report(b, rename("moving", arg)); }
    if (!strcmp(b, "mknod-char")) { unlink("null2"); return report(b, mknod("null2", S_IFCHR | 0666, makedev(1, 3))); }
    if (!strcmp(b, "mknod-block")) { unlink("blk"); return report(b, mknod("blk", S_IFBLK | 0666, makedev(7, 0))); }
    if (!strcmp(b, "mkfifo")) { unlink("fifo"); return report(b, mknod("fifo", S_IFIFO | 0644, 0)); }
    // Privilege.
    if (!strcmp(b, "caps")) {
        struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
        struct __user_cap_data_struct d[2];
        if (syscall(SYS_capget, &h, d) < 0) return report(b, -1);
        int bset = 0;
        for (int cap = 0; cap <= 40; cap++) if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1) bset++;
        printf("caps: eff=%x%08x prm=%x%08x inh=%x%08x bounding=%d nnp=%d euid=%d\n", d[1].effective, d[0].effective,
               d[1].permitted, d[0].permitted, d[1].inheritable, d[0].inheritable, bset,
               prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), (int)geteuid());
        return 0;
    }
    if (!strcmp(b, "capset")) {
        struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
        struct __user_cap_data_struct d[2];
        memset(d, 0xff, sizeof d);
        return report(b, syscall(SYS_capset, &h, d));
    }
    if (!strcmp(b, "setuid0")) return report(b, setuid(0) < 0 || geteuid() != 0 ? -1 : 0);
    if (!strcmp(b, "euid")) { printf("euid: %d\n", (int)geteuid()); return 0; }
    if (!strcmp(b, "fds")) {
        printf("fds:");
        for (int fd = 0; fd < 4096; fd++) if (fcntl(fd, F_GETFD) >= 0) printf(" %d", fd);
        printf("\n");
        return 0;
    }
    if (!strcmp(b, "env")) {
        extern char **environ;
        for (char **e = environ; *e; e++) printf("env: %s\n", *e);
        return 0;
    }
    if (!strcmp(b, "session")) { printf("session: sid=%d pgid=%d pid=%d\n", (int)getsid(0), (int)getpgrp(), (int)getpid()); return 0; }
    // Resources.
    if (!strcmp(b, "forkbomb")) {
        int made = 0;
        for (int i = 0; i < 100000; i++) {
            pid_t p = fork();
            if (p == 0) { pause(); _exit(0); }
            if (p < 0) break;
            made++;
        }
        printf("forkbomb: made %d\n", made);
        fflush(stdout);
        pause();
        return 0;
    }
    if (!strcmp(b, "memhog")) {
        size_t total = 0;
        for (;;) {
            char *p = malloc(16 << 20);
            if (!p) { printf("memhog: ENOMEM after %zu MiB\n", total >> 20); return 0; }
            memset(p, 1, 16 << 20);
            total += 16 << 20;
        }
    }
    if (!strcmp(b, "cpuloop")) { for (volatile unsigned long i = 0;; i++) {} }
    if (!strcmp(b, "bigfile")) {
        int fd = open("big.bin", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        static char buf[1 << 20];
        memset(buf, 'x', sizeof buf);
        for (int i = 0; i < 4096; i++) if (write(fd, buf, sizeof buf) < 0) return report(b, -1);
        return report(b, 0);
    }
    if (!strcmp(b, "flood")) { static char buf[65536]; memset(buf, 'y', sizeof buf); for (;;) if (write(1, buf, sizeof buf) < 0) return 1; }
    if (!strcmp(b, "daemon")) return daemonize(arg);
    if (!strcmp(b, "sleep")) { sleep(atoi(arg)); return 0; }
    fprintf(stderr, "ward-hostile: unknown behaviour %s\n", b);
    return 2;
}
