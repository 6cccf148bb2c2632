// The child side of ward's sandboxed spawn. Its order of operations is its security
// argument, so it reads top to bottom in the order it runs (bubblewrap style).
//
// The child is created with clone(CLONE_VM|CLONE_VFORK): it shares the parent's memory
// and the calling thread sleeps until it has exec'd or exited. The parent is a
// multithreaded Swift process, so the child may run only raw syscalls: no malloc, no
// stdio, no locks, not even errno (it lives in the borrowed thread's TLS): every syscall
// here goes through `sys`, which returns -errno. Everything that allocates (argv, envp,
// the BPF program, the Landlock ruleset, cgroup fds) was prepared by the parent. A failure
// is written into the shared error record as {step, errno}; the parent reads it once
// clone returns.
//
// Two ways to get there:
// - direct: one child applies every step below, then execs the tool;
// - zygote (zygote.c): a long-lived process applies the per-policy steps once (the
//   confinement, ward_step_confine: no_new_privs, capabilities, Landlock, seccomp), and
//   each call's child applies only the per-call steps and inherits the rest (the order:
//   docs/threats.md, "How a call is confined"). Attaching a seccomp filter costs ~75 µs of
//   kernel time whatever its size; a child forked from a filtered process shares the
//   filter for free.
#include "spawn_internal.h"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/securebits.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <errno.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

// Kernel layout of struct sigaction for rt_sigaction (not glibc's).
struct kernel_sigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    unsigned long mask;
};

// Formats "<id> <id> 1\n" for a one-line id map, without stdio.
WARD_CHILD_SIDE static size_t format_id_map(char *buf, uint32_t id) {
    char digits[16];
    size_t n = 0, len = 0;
    do { digits[n++] = (char)('0' + id % 10); id /= 10; } while (id);
    for (int copy = 0; copy < 2; copy++) {
        for (size_t i = 0; i < n; i++) buf[len++] = digits[n - 1 - i];
        buf[len++] = ' ';
    }
    buf[len++] = '1';
    buf[len++] = '\n';
    return len;
}

// 0 or -errno.
WARD_CHILD_SIDE static long write_file(const char *path, const char *data, size_t len) {
    long fd = sys(SYS_openat, AT_FDCWD, (long)path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return fd;
    long n = sys(SYS_write, fd, (long)data, (long)len);
    sys(SYS_close, fd);
    if (n < 0) return n;
    return n == (long)len ? 0 : -EIO;
}

// A write to this process's own /proc files. An unprivileged ward's memory is briefly not
// dumpable while a process sharing it takes the tool identity (the kernel makes memory
// whose owner's uid changes non-dumpable, and its /proc files root's, until
// ward_restore_dumpable): a write refused then is retried with the flag set back.
WARD_CHILD_SIDE static long write_proc_self(const struct ward_spawn_config *cfg, const char *path, const char *data, size_t len) {
    long rc = write_file(path, data, len);
    for (int i = 0; rc == -EACCES && cfg->user_namespace_fd > 0 && i < 100000; i++) {
        sys(SYS_prctl, PR_SET_DUMPABLE, 1);
        rc = write_file(path, data, len);
        if (rc == -EACCES) sys(SYS_sched_yield);
    }
    return rc;
}

WARD_CHILD_SIDE void ward_restore_dumpable(const struct ward_spawn_config *cfg) {
    // Only an unprivileged ward with the tools' user namespace: a root ward stays non-dumpable.
    if (cfg->user_namespace_fd > 0) sys(SYS_prctl, PR_SET_DUMPABLE, 1);
}

WARD_CHILD_SIDE __attribute__((noreturn)) void ward_child_fail(struct ward_spawn_error *err, int step, long rc) {
    err->step = step;
    err->error = (int)-rc;
    sys(SYS_exit_group, 127);
    __builtin_unreachable();
}

#define CHECK(step, expr) do { long rc_ = (expr); if (rc_ < 0) ward_child_fail(err, (step), rc_); } while (0)

// MARK: - Steps

WARD_CHILD_SIDE void ward_step_signals(struct ward_spawn_error *err, int unblock) {
    // The parent blocked every signal around clone so no handler of the supervisor runs in
    // this borrowed address space. Reset every disposition (ward ignores SIGPIPE; a tool
    // must not inherit that); unblock only when the next thing is the tool itself.
    struct kernel_sigaction dfl = { (void *)SIG_DFL, 0, NULL, 0 };
    for (int sig = 1; sig < 65; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        sys(SYS_rt_sigaction, sig, (long)&dfl, 0, 8);
    }
    if (unblock) {
        unsigned long empty_mask = 0;
        CHECK(WARD_STEP_SIGNALS, sys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&empty_mask, 0, 8));
    }
}

WARD_CHILD_SIDE static void ward_step_pdeathsig(const struct ward_spawn_config *cfg, struct ward_spawn_error *err) {
    // The supervisor dies → the tool dies (the direct child; cgroups or the PID namespace
    // take care of the rest of the tree).
    if (cfg->pdeath_signal) {
        CHECK(WARD_STEP_PDEATHSIG, sys(SYS_prctl, PR_SET_PDEATHSIG, cfg->pdeath_signal));
        // A supervisor that died before the line above sends no signal: this child was
        // already reparented. Left to run, it would wait at its gate forever (it holds the
        // gate's write end too, in its copy of ward's fds) and, with those fds, keep ward's
        // stdout and the watchdog's pipe open, so the watchdog never kills the call's
        // cgroup. (In a new PID namespace the parent is outside it: getppid() is 0.)
        long ppid = sys(SYS_getppid);
        if (cfg->parent_pid > 0 && ppid != cfg->parent_pid && !(cfg->new_pid_namespace && ppid == 0))
            ward_child_fail(err, WARD_STEP_PDEATHSIG, -ESRCH);
    }
}

WARD_CHILD_SIDE void ward_step_cgroups(const struct ward_spawn_config *cfg, struct ward_spawn_error *err) {
    // Join the call's cgroups before anything can fork: every descendant, daemonized or
    // not, stays inside and dies with the call (cgroup.kill / pids.max). As ward's uid, not
    // the tool identity's: cgroup v1 lets the opener of cgroup.procs (ward) move only a
    // process of its own uid. A process that joins before it forks the tool's process
    // (enter_main) takes that process in with it.
    for (int i = 0; i < cfg->cgroup_join_count; i++) {
        long n = sys(SYS_write, cfg->cgroup_join_fds[i], (long)"0", 1);
        if (n != 1) ward_child_fail(err, WARD_STEP_CGROUP, n < 0 ? n : -EIO);
    }
}

WARD_CHILD_SIDE void ward_step_per_call(const struct ward_spawn_config *cfg, struct ward_spawn_error *err) {
    ward_step_pdeathsig(cfg, err);

    // New session, no controlling terminal: TIOCSTI / TIOCLINUX have no terminal of the
    // user's to inject into (CVE-2017-5226), and job-control signals do not reach us.
    CHECK(WARD_STEP_SETSID, sys(SYS_setsid));

    // The call's cgroups, joined here unless the tools' user namespace is used, where they
    // were joined before the tool identity was taken (see ward_step_cgroups).
    if (cfg->user_namespace_fd <= 0) ward_step_cgroups(cfg, err);

    // A private network namespace starts with loopback down; bring it up so tools allowed
    // "loopback" can talk to themselves (and to nothing of the host's).
    if (cfg->new_net_namespace) {
        long s = sys(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (s < 0) ward_child_fail(err, WARD_STEP_LOOPBACK, s);
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        ifr.ifr_name[0] = 'l';
        ifr.ifr_name[1] = 'o';
        ifr.ifr_flags = IFF_UP | IFF_RUNNING;
        CHECK(WARD_STEP_LOOPBACK, sys(SYS_ioctl, s, SIOCSIFFLAGS, (long)&ifr));
        sys(SYS_close, s);
    }

    // stdio: stdin is a memfd holding the arguments JSON, stdout/stderr are pipes the parent
    // drains up to the output limit. dup2 clears close-on-exec on the copies.
    CHECK(WARD_STEP_STDIO, sys(SYS_dup2, cfg->stdin_fd, 0));
    CHECK(WARD_STEP_STDIO, sys(SYS_dup2, cfg->stdout_fd, 1));
    CHECK(WARD_STEP_STDIO, sys(SYS_dup2, cfg->stderr_fd, 2));

    if (cfg->cwd) CHECK(WARD_STEP_CHDIR, sys(SYS_chdir, (long)cfg->cwd));

    // Resource limits with hard limits the tool cannot raise back (file size, CPU seconds,
    // open files, processes, address space where no memory cgroup exists).
    for (int i = 0; i < cfg->rlimit_count; i++) {
        struct { uint64_t cur, max; } lim = { cfg->rlimits[i].soft, cfg->rlimits[i].hard };
        CHECK(WARD_STEP_RLIMIT, sys(SYS_prlimit64, 0, cfg->rlimits[i].resource, (long)&lim, 0));
    }

    // Every other fd (ledger, sockets, other calls' pipes, the Landlock ruleset) is closed
    // at execve, never inherited (runc CVE-2024-21626 leaked one). Marking rather than
    // closing keeps the ruleset fd usable for the Landlock step.
    if (sys(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
        struct { uint64_t cur, max; } nofile;
        CHECK(WARD_STEP_CLOSE_FDS, sys(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, (long)&nofile));
        for (uint64_t fd = 3; fd < nofile.cur && fd < (1u << 20); fd++) sys(SYS_fcntl, (long)fd, F_SETFD, FD_CLOEXEC);
    }
}

WARD_CHILD_SIDE void ward_step_oom_score(const struct ward_spawn_config *cfg, struct ward_spawn_error *err) {
    // Under global memory pressure the OOM killer takes the tool, not the supervisor (a
    // memory cgroup per call bounds the call, but the limits of all calls may exceed the
    // machine's memory). Inherited by the tool's children. Only ever written by the vfork
    // child: the kernel copies a score written by any other process that shares ward's
    // memory (the zygote) to ward itself, and a vfork child's score is its own.
    long rc = write_proc_self(cfg, "/proc/self/oom_score_adj", "1000", 4);
    if (rc < 0 && rc != -ENOENT) ward_child_fail(err, WARD_STEP_OOM_SCORE, rc);
}

WARD_CHILD_SIDE void ward_step_identity(const struct ward_spawn_config *cfg, struct ward_spawn_error *err) {
    // A root ward's tools run as an unprivileged identity: as uid 0 a tool could read the
    // root-only files in its read roots, plant setuid-root binaries for other users, and
    // change the limits of every root process. Groups first (root's supplementary groups
    // go), then gid, then uid (after which neither could change). The capabilities kept
    // through the change by SECBIT_NO_SETUID_FIXUP are emptied next (ward_step_capset).
    if (!cfg->set_identity) return;
    uint32_t groups[1] = { cfg->tool_gid };
    CHECK(WARD_STEP_IDENTITY, sys(SYS_setgroups, 1, (long)groups));
    CHECK(WARD_STEP_IDENTITY, sys(SYS_setresgid, cfg->tool_gid, cfg->tool_gid, cfg->tool_gid));
    CHECK(WARD_STEP_IDENTITY, sys(SYS_setresuid, cfg->tool_uid, cfg->tool_uid, cfg->tool_uid));
}

WARD_CHILD_SIDE void ward_step_capset(struct ward_spawn_error *err, int keep_setid) {
    struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    if (keep_setid) data[0].effective = data[0].permitted = (1u << CAP_SETUID) | (1u << CAP_SETGID);
    CHECK(WARD_STEP_CAPSET, sys(SYS_capset, (long)&hdr, (long)data));
}

WARD_CHILD_SIDE void ward_step_confine(const struct ward_spawn_config *cfg, struct ward_spawn_error *err) {
    // no_new_privs: setuid/setcap binaries (sudo, su, ping) confer nothing, and seccomp may
    // be loaded without CAP_SYS_ADMIN.
    CHECK(WARD_STEP_NO_NEW_PRIVS, sys(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));

    // Capabilities. Started as root (or inside our own user namespace), lock the securebits
    // so uid 0 never regains capabilities through execve or setuid, and empty the bounding
    // set; then clear ambient and empty the effective, permitted and inheritable sets.
    if (cfg->drop_bounding_set) {
        unsigned long bits = SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                             SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED |
                             SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
        CHECK(WARD_STEP_SECUREBITS, sys(SYS_prctl, PR_SET_SECUREBITS, (long)bits));
        for (int cap = 0; cap <= cfg->cap_last; cap++) CHECK(WARD_STEP_CAPBSET, sys(SYS_prctl, PR_CAPBSET_DROP, cap));
    }

    // A zygote keeps what its calls' children need to take the tool identity themselves; a
    // direct spawn that joined the tools' user namespace took it there (enter_main). The
    // kernel clears the parent-death signal when the uid changes: set again.
    if (!cfg->keep_setid_caps && cfg->set_identity && cfg->user_namespace_fd <= 0) {
        ward_step_identity(cfg, err);
        ward_step_pdeathsig(cfg, err);
    }
    CHECK(WARD_STEP_AMBIENT, sys(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0));
    ward_step_capset(err, cfg->keep_setid_caps);

    // Landlock: only the policy's read and write roots are reachable; TCP and the
    // abstract-socket and signal scopes as the ruleset (sized to the kernel's ABI) says.
    if (cfg->landlock_ruleset_fd >= 0) CHECK(WARD_STEP_LANDLOCK, sys(SYS_landlock_restrict_self, cfg->landlock_ruleset_fd, 0));

    // seccomp last, so the steps above needed no syscalls the tool is denied.
    if (cfg->bpf) {
        struct sock_fprog prog = { cfg->bpf_len, (struct sock_filter *)cfg->bpf };
        CHECK(WARD_STEP_SECCOMP, sys(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, (long)&prog));
    }
}

WARD_CHILD_SIDE void ward_step_trace(const struct ward_spawn_config *cfg, struct ward_spawn_error *err) {
    // The call's effect trace: a filter of the call's own whose listener goes to ward, so
    // that ward sees what this tool and everything it starts (filters are inherited)
    // attempt to change. Installed after no_new_privs, which lets an unprivileged process
    // add a filter; stacked over the allowlist, which still refuses first (the kernel
    // takes the strictest action of all filters: a refused syscall is never notified).
    if (!cfg->trace_bpf) return;
    struct sock_fprog prog = { cfg->trace_bpf_len, (struct sock_filter *)cfg->trace_bpf };
    long listener = sys(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, (long)&prog);
    if (listener < 0) ward_child_fail(err, WARD_STEP_TRACE, listener);
    char byte = 1;
    char control[CMSG_SPACE(sizeof(int))];
    memset(control, 0, sizeof control);
    struct iovec iov = { &byte, 1 };
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    int fd = (int)listener;
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    long rc = sys(SYS_sendmsg, cfg->trace_fd, (long)&msg, MSG_NOSIGNAL);
    // Its copy goes: once the tree is gone, ward's is the listener's last, and it hangs up.
    sys(SYS_close, listener);
    if (rc != 1) ward_child_fail(err, WARD_STEP_TRACE, rc < 0 ? rc : -EIO);
}

// An unprivileged ward's tools run in a user namespace of their own (made by clone with
// CLONE_NEWUSER): whatever their policy allows, the kernel then refuses them ptrace,
// process_vm_* and pidfd_getfd of ward, which would need CAP_SYS_PTRACE in ward's user
// namespace, and it gives the PID and network namespaces without root. Map only our own
// uid and gid (the one mapping an unprivileged process may write) and give up setgroups,
// so the tool cannot drop a group that denies it access.
WARD_CHILD_SIDE void ward_step_user_namespace(const struct ward_spawn_config *cfg, struct ward_spawn_error *err) {
    char map[48];
    CHECK(WARD_STEP_USER_NAMESPACE, write_proc_self(cfg, "/proc/self/setgroups", "deny", 4));
    CHECK(WARD_STEP_USER_NAMESPACE, write_proc_self(cfg, "/proc/self/uid_map", map, format_id_map(map, cfg->outer_uid)));
    CHECK(WARD_STEP_USER_NAMESPACE, write_proc_self(cfg, "/proc/self/gid_map", map, format_id_map(map, cfg->outer_gid)));
}

WARD_CHILD_SIDE static int child_main(void *arg) {
    struct ward_child_context *ctx = arg;
    const struct ward_spawn_config *cfg = ctx->cfg;
    struct ward_spawn_error *err = ctx->err;

    ward_step_signals(err, 1);
    if (cfg->new_user_namespace) ward_step_user_namespace(cfg, err);
    ward_step_oom_score(cfg, err);
    ward_step_per_call(cfg, err);
    ward_step_confine(cfg, err);
    ward_step_trace(cfg, err);
    ward_child_fail(err, WARD_STEP_EXECVE, sys(SYS_execve, (long)cfg->path, (long)cfg->argv, (long)cfg->envp));
}

// An unprivileged ward with subordinate ids runs its tools in the user namespace it made
// once (ward_user_namespace_create), where their files belong to a subordinate uid of its
// user, not to the operator: a `.git/config` a tool writes is then not one the operator's
// git trusts. ward (many threads) cannot join it itself, so a first vfork child joins,
// joins the call's cgroups, takes the tool identity there (tool_uid/tool_gid), and clones
// the call's child with the configured flags plus CLONE_PARENT: ward is its parent (reaps
// it, its PDEATHSIG) and gets its pidfd (the fd table is shared). That child makes a user
// namespace of its own below, as an unprivileged ward's calls always do, mapping only the
// tool identity (ward_step_user_namespace), so the tool holds no capability in the shared
// one and its process count (RLIMIT_NPROC) is the call's own.
struct enter_context {
    struct ward_child_context child;
    int flags;
    char *stack;
    pid_t pid;
    int pidfd;
};

WARD_CHILD_SIDE static int enter_main(void *arg) {
    struct enter_context *ctx = arg;
    const struct ward_spawn_config *cfg = ctx->child.cfg;
    struct ward_spawn_error *err = ctx->child.err;
    CHECK(WARD_STEP_USER_NAMESPACE, sys(SYS_setns, cfg->user_namespace_fd, CLONE_NEWUSER));
    ward_step_cgroups(cfg, err);
    ward_step_identity(cfg, err);
    ward_restore_dumpable(cfg);
    // glibc's clone sets errno, in the (suspended) spawning thread's TLS, only on failure.
    ctx->pid = ward_clone(child_main, ctx->stack, ctx->flags | CLONE_PARENT, &ctx->child, &ctx->pidfd);
    if (ctx->pid < 0) {
        err->step = WARD_STEP_CLONE;
        err->error = errno;
    }
    sys(SYS_exit, 0);
    return 0;
}

// One child stack per spawning thread, allocated on first use and kept: saves an
// mmap/munmap pair on every call. The child runs only the steps above, so 64 KiB is plenty.
// Pool threads come and go: a thread-specific key unmaps a thread's stack when it exits.
static __thread char *spawn_stack;
static pthread_key_t spawn_stack_key;
static pthread_once_t spawn_stack_key_once = PTHREAD_ONCE_INIT;

char *ward_stack(void) {
    void *stack = mmap(NULL, WARD_STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return NULL;
    // A guard page above the part a child joining a user namespace runs on (enter_main):
    // a child that overflows the rest faults instead of overwriting that child's frame.
    if (mprotect((char *)stack + WARD_ENTER_STACK_SIZE, WARD_GUARD_SIZE, PROT_NONE) != 0) {
        munmap(stack, WARD_STACK_SIZE);
        return NULL;
    }
    return stack;
}

void ward_stack_free(char *stack) {
    if (stack) munmap(stack, WARD_STACK_SIZE);
}

const void *ward_thread_stack(void) { return spawn_stack; }

static void free_thread_stack(void *stack) { ward_stack_free(stack); }
static void make_spawn_stack_key(void) { pthread_key_create(&spawn_stack_key, free_thread_stack); }

// This thread's child stack, mapped on first use; NULL with errno when it cannot be.
static char *thread_stack(void) {
    if (spawn_stack) return spawn_stack;
    pthread_once(&spawn_stack_key_once, make_spawn_stack_key);
    char *stack = ward_stack();
    if (!stack) return NULL;
    if (pthread_setspecific(spawn_stack_key, stack) != 0) {
        ward_stack_free(stack);
        errno = ENOMEM;
        return NULL;
    }
    return spawn_stack = stack;
}

int ward_spawn_begin(const struct ward_spawn_config *cfg, struct ward_spawn_error *err, int *pidfd) {
    err->step = WARD_STEP_NONE;
    err->error = 0;
    *pidfd = -1;
    if (cfg->stdin_fd <= 2 || cfg->stdout_fd <= 2 || cfg->stderr_fd <= 2) {
        err->step = WARD_STEP_STDIO;
        err->error = EINVAL;
        return -1;
    }
    return 0;
}

pid_t ward_spawn_end(pid_t pid, int fd, struct ward_spawn_error *err, int *pidfd) {
    if (err->step != WARD_STEP_NONE) {
        int exited, code, sig;
        ward_wait(pid, &exited, &code, &sig);
        close(fd);
        return -1;
    }
    *pidfd = fd;
    return pid;
}

pid_t ward_spawn(const struct ward_spawn_config *cfg, struct ward_spawn_error *err, int *pidfd) {
    if (ward_spawn_begin(cfg, err, pidfd) != 0) return -1;
    if (!thread_stack()) {
        err->step = WARD_STEP_CLONE;
        err->error = errno;
        return -1;
    }
    int flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD;
    if (cfg->new_user_namespace) flags |= CLONE_NEWUSER;
    if (cfg->new_pid_namespace) flags |= CLONE_NEWPID;
    if (cfg->new_net_namespace) flags |= CLONE_NEWNET;

    struct ward_child_context ctx = { cfg, err };
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int fd = -1;
    pid_t pid;
    if (cfg->user_namespace_fd > 0) {
        struct enter_context enter = { ctx, flags, spawn_stack + WARD_STACK_SIZE, -1, -1 };
        pid_t entering = ward_clone(enter_main, spawn_stack + WARD_ENTER_STACK_SIZE, CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD, &enter);
        int clone_errno = errno;
        if (entering > 0) {
            int exited, code, sig;
            ward_wait(entering, &exited, &code, &sig);
            if (enter.pid < 0 && enter.pidfd >= 0) {
                // Killed after its clone, before it could say the pid: the call's child is
                // known only by the pidfd the kernel wrote. It never starts untracked.
                sys(SYS_pidfd_send_signal, enter.pidfd, SIGKILL, 0, 0);
                siginfo_t info;
                waitid(P_PIDFD, (id_t)enter.pidfd, &info, WEXITED);
                close(enter.pidfd);
            }
            if (enter.pid < 0 && err->step == WARD_STEP_NONE) {
                err->step = WARD_STEP_CLONE;
                err->error = EINTR;
            }
        } else {
            err->step = WARD_STEP_CLONE;
            err->error = clone_errno;
        }
        pid = enter.pid;
        fd = enter.pidfd;
    } else {
        pid = ward_clone(child_main, spawn_stack + WARD_STACK_SIZE, flags, &ctx, &fd);
        if (pid < 0) {
            err->step = WARD_STEP_CLONE;
            err->error = errno;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) return -1;
    return ward_spawn_end(pid, fd, err, pidfd);
}

struct agent_context {
    pid_t ward;
    const char *path;
    char *const *argv;
    char *const *envp;
    struct ward_spawn_error *err;
};

WARD_CHILD_SIDE static int agent_main(void *arg) {
    struct agent_context *ctx = arg;
    struct ward_spawn_error *err = ctx->err;
    ward_step_signals(err, 1);
    // ward dies (even by SIGKILL) → the agent dies: nothing acts on a run nobody supervises.
    CHECK(WARD_STEP_PDEATHSIG, sys(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL));
    // ward died before the line above: no signal will come (see ward_step_per_call).
    if (sys(SYS_getppid) != ctx->ward) ward_child_fail(err, WARD_STEP_PDEATHSIG, -ESRCH);
    // Its own process group, so a shutdown can signal the agent and what it started.
    CHECK(WARD_STEP_SETSID, sys(SYS_setpgid, 0, 0));
    ward_child_fail(err, WARD_STEP_EXECVE, sys(SYS_execve, (long)ctx->path, (long)ctx->argv, (long)ctx->envp));
}

pid_t ward_spawn_agent(const char *path, char *const *argv, char *const *envp, struct ward_spawn_error *err) {
    err->step = WARD_STEP_NONE;
    err->error = 0;
    if (!thread_stack()) {
        err->step = WARD_STEP_CLONE;
        err->error = errno;
        return -1;
    }
    struct agent_context ctx = { getpid(), path, argv, envp, err };
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pid_t pid = ward_clone(agent_main, spawn_stack + WARD_STACK_SIZE, CLONE_VM | CLONE_VFORK | SIGCHLD, &ctx);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        err->step = WARD_STEP_CLONE;
        err->error = clone_errno;
        return -1;
    }
    if (err->step != WARD_STEP_NONE) {
        int exited, code, sig;
        ward_wait(pid, &exited, &code, &sig);
        return -1;
    }
    return pid;
}

const char *ward_step_name(int step) {
    switch (step) {
    case WARD_STEP_CLONE: return "clone";
    case WARD_STEP_SIGNALS: return "signal reset";
    case WARD_STEP_USER_NAMESPACE: return "user namespace id map";
    case WARD_STEP_SETSID: return "setsid";
    case WARD_STEP_CGROUP: return "cgroup join";
    case WARD_STEP_LOOPBACK: return "loopback up";
    case WARD_STEP_STDIO: return "dup2 of stdio";
    case WARD_STEP_CHDIR: return "chdir to the workspace";
    case WARD_STEP_RLIMIT: return "setrlimit";
    case WARD_STEP_OOM_SCORE: return "oom_score_adj";
    case WARD_STEP_CLOSE_FDS: return "close_range";
    case WARD_STEP_NO_NEW_PRIVS: return "prctl(PR_SET_NO_NEW_PRIVS)";
    case WARD_STEP_SECUREBITS: return "prctl(PR_SET_SECUREBITS)";
    case WARD_STEP_CAPBSET: return "prctl(PR_CAPBSET_DROP)";
    case WARD_STEP_AMBIENT: return "prctl(PR_CAP_AMBIENT_CLEAR_ALL)";
    case WARD_STEP_CAPSET: return "capset";
    case WARD_STEP_LANDLOCK: return "landlock_restrict_self";
    case WARD_STEP_SECCOMP: return "seccomp(SECCOMP_SET_MODE_FILTER)";
    case WARD_STEP_EXECVE: return "execve";
    case WARD_STEP_PDEATHSIG: return "prctl(PR_SET_PDEATHSIG)";
    case WARD_STEP_ZYGOTE: return "zygote";
    case WARD_STEP_GATE: return "start gate";
    case WARD_STEP_IDENTITY: return "setresuid to the tool identity";
    case WARD_STEP_TRACE: return "effect trace filter";
    default: return "spawn";
    }
}

// MARK: - Wrappers the spawn shares with Swift (zygote.c and watchdog.c use them too)

int ward_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int ward_wait(pid_t pid, int *exited, int *code, int *signal) {
    int status = 0;
    pid_t r;
    do { r = waitpid(pid, &status, __WALL); } while (r < 0 && errno == EINTR);
    if (r < 0) return -1;
    *exited = WIFEXITED(status);
    *code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
    *signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    return 0;
}
