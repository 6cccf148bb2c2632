// The zygote: one confined process per tool policy that starts each call's tool.
//
// Why: attaching a seccomp filter costs ~75 µs of kernel time (JIT and action cache) for
// any filter, ~110 µs for a 300-syscall allowlist, plus the Landlock domain and 40-odd
// capability drops. A child forked from a process that already holds them shares them for
// free. The zygote applies the per-policy confinement once; each call's child applies
// only the per-call steps.
//
// Shape: the zygote is created with CLONE_VM|CLONE_FILES from ward's keeper thread (a
// thread that never exits, so PDEATHSIG means "ward died"). Sharing memory means a
// request is a pointer to a ward_spawn_config that ward prepared, exactly as for a direct
// spawn; sharing the fd table means the call's stdio and cgroup fds are already there.
// The zygote never closes an fd (it would close ward's). Each call's child is made with
// CLONE_VM|CLONE_VFORK|CLONE_PARENT: ward is its parent (it reaps it and reads its exit
// status), and the zygote waits only until it has exec'd.
//
// Sharing ward's memory makes the zygote as precious as ward: ward (root) is non-dumpable,
// so no process without CAP_SYS_PTRACE may ptrace it, process_vm_* it or pidfd_getfd from
// it; an unprivileged ward's zygote lives in a user namespace of its own, where its calls
// hold no capability of ward's namespace; and each call gets a Landlock domain nested
// under the zygote's, which a tool cannot leave to reach the zygote, ward or another call
// (see call_main).
#include "spawn_internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_landlock_restrict_self
#define SYS_landlock_restrict_self 446
#endif

struct ward_zygote {
    pid_t pid;
    pid_t ward;  // the process that started it
    int pidfd;
    int req[2], rep[2];
    char *stack, *child_stack;
    const struct ward_spawn_config *cfg;
    int call_fd;
    struct ward_spawn_error start_err;
    // The request in flight, written by ward before it writes to req, read back after rep.
    const struct ward_spawn_config *call;
    struct ward_spawn_error *call_err;
    pid_t call_pid;
    int call_pidfd;
    // A request went to req, so a reply will come to rep (ward's alone: the zygote never reads it).
    int asked;
};

struct call_context {
    struct ward_child_context base;
    int call_fd;
};

// The child of one call: everything of the policy is inherited from the zygote.
WARD_CHILD_SIDE static int call_main(void *arg) {
    struct call_context *ctx = arg;
    const struct ward_spawn_config *cfg = ctx->base.cfg;
    struct ward_spawn_error *err = ctx->base.err;
    // The zygote keeps every signal blocked with default dispositions: the tool gets them unblocked.
    unsigned long empty_mask = 0;
    long rc = sys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&empty_mask, 0, 8);
    if (rc < 0) ward_child_fail(err, WARD_STEP_SIGNALS, rc);
    // Written here, by a vfork child, for this child alone: the kernel copies a score written
    // in one process to every process sharing its memory, except from a vfork child. The
    // zygote itself never writes one (it would be ward's too). The zygote's domain lets
    // this child write under /proc; the tool's own domain, nested below, does not.
    ward_step_oom_score(cfg, err);
    // The tool identity, taken right after the score (a non-dumpable ward's /proc files are
    // root's, so only root writes it), before the per-call steps: the zygote keeps no
    // capability but CAP_SETUID and CAP_SETGID, so as root it could not even enter the
    // workspace, which is the tool identity's. Then those two go as well. (The parent-death
    // signal, which a change of uid clears, is set by the per-call steps after.)
    if (cfg->user_namespace_fd > 0) ward_step_cgroups(cfg, err);
    if (cfg->set_identity) {
        ward_step_identity(cfg, err);
        ward_restore_dumpable(cfg);
        ward_step_capset(err, 0);
    }
    ward_step_per_call(cfg, err);
    // A Landlock domain of the call's own (the tool's ruleset), nested under the zygote's: Landlock lets a
    // process ptrace (and process_vm_*, pidfd_getfd, kcmp, /proc/PID/mem) only processes of
    // its own domain or of domains nested under it, so a tool reaches neither the zygote
    // (which shares ward's memory) nor ward nor another call, whatever its policy allows.
    // From ABI 6 the domain also scopes signals and abstract Unix sockets.
    if ((rc = sys(SYS_landlock_restrict_self, ctx->call_fd, 0)) < 0) ward_child_fail(err, WARD_STEP_LANDLOCK, rc);
    // The call's effect trace, under the zygote's allowlist (which lets a traced tool's
    // zygote add a filter and send its listener).
    ward_step_trace(cfg, err);

    // The gate: everything up to here overlaps the fsync of the call's `running` record;
    // the tool itself starts only once ward says that record is on disk. If ward dies
    // meanwhile, PDEATHSIG (set above) kills this child before it ever execs.
    if (cfg->gate_fd > 0) {
        char go = 0;
        do rc = sys(SYS_read, cfg->gate_fd, (long)&go, 1); while (rc == -EINTR);
        if (rc != 1 || go != 1) ward_child_fail(err, WARD_STEP_GATE, rc < 0 ? rc : -ECANCELED);
    }
    ward_child_fail(err, WARD_STEP_EXECVE, sys(SYS_execve, (long)cfg->path, (long)cfg->argv, (long)cfg->envp));
}

WARD_CHILD_SIDE static int zygote_main(void *arg) {
    struct ward_zygote *z = arg;
    struct ward_spawn_error *err = &z->start_err;
    // Default dispositions (no handler of ward's may ever run here), everything blocked.
    ward_step_signals(err, 0);
    long rc = sys(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL);
    if (rc < 0) ward_child_fail(err, WARD_STEP_PDEATHSIG, rc);
    // ward died before the line above: no signal will come, and with ward's fd table this
    // zygote would hold its own request pipe open and wait on it forever.
    if (sys(SYS_getppid) != z->ward) ward_child_fail(err, WARD_STEP_PDEATHSIG, -ESRCH);
    // A name of its own, so `ps` (and an operator) tells the zygote and a call's child that
    // has not exec'd yet (it inherits the name) from ward. Cosmetic: a failure is ignored.
    static const char name[] = "ward-zygote";
    sys(SYS_prctl, PR_SET_NAME, (long)name);
    // An unprivileged ward's zygote lives in a user namespace of its own, and so do the
    // calls it starts: the kernel keeps them from ptracing ward, whose uid they share.
    if (z->cfg->user_namespace_fd > 0) {
        // Or the user namespace ward made for its tools (see enter_main in spawn.c): the
        // zygote is its uid 0, and each call's child becomes the tool identity there.
        rc = sys(SYS_setns, z->cfg->user_namespace_fd, CLONE_NEWUSER);
        if (rc < 0) ward_child_fail(err, WARD_STEP_USER_NAMESPACE, rc);
    } else if (z->cfg->new_user_namespace) {
        ward_step_user_namespace(z->cfg, err);
    }
    ward_step_confine(z->cfg, err);
    char byte = 1;
    sys(SYS_write, z->rep[1], (long)&byte, 1);
    for (;;) {
        long n = sys(SYS_read, z->req[0], (long)&byte, 1);
        if (n == -EINTR) continue;
        if (n <= 0) sys(SYS_exit_group, 0);
        struct call_context ctx = { { z->call, z->call_err }, z->call_fd };
        // glibc's clone wrapper touches no TLS in the child; on failure it sets errno in
        // the keeper thread's TLS, which nothing else reads concurrently. The kernel stores
        // the child's pidfd in ward's memory (shared) before the child runs, so ward can
        // still kill the child if this zygote dies before it replies.
        pid_t pid = ward_clone(call_main, z->child_stack + WARD_STACK_SIZE,
                          CLONE_VM | CLONE_VFORK | CLONE_PARENT | CLONE_PIDFD | SIGCHLD, &ctx, &z->call_pidfd);
        if (pid < 0) {
            z->call_err->step = WARD_STEP_CLONE;
            z->call_err->error = errno;
        }
        z->call_pid = pid;
        sys(SYS_write, z->rep[1], (long)&byte, 1);
    }
}

// MARK: - The keeper thread

static pthread_once_t keeper_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t keeper_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t keeper_cond = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t keeper_callers = PTHREAD_MUTEX_INITIALIZER;
static struct ward_zygote *keeper_request;
static int keeper_ready;

static void *keeper_main(void *unused) {
    (void)unused;
    pthread_mutex_lock(&keeper_lock);
    for (;;) {
        while (!keeper_request) pthread_cond_wait(&keeper_cond, &keeper_lock);
        struct ward_zygote *z = keeper_request;
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        int fd = -1;
        int flags = CLONE_VM | CLONE_FILES | CLONE_PIDFD | SIGCHLD;
        if (z->cfg->new_user_namespace) flags |= CLONE_NEWUSER;
        z->pid = ward_clone(zygote_main, z->stack + WARD_STACK_SIZE, flags, z, &fd);
        if (z->pid < 0) {
            z->start_err.step = WARD_STEP_CLONE;
            z->start_err.error = errno;
        }
        z->pidfd = fd;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        keeper_request = NULL;
        keeper_ready = 1;
        pthread_cond_broadcast(&keeper_cond);
    }
    return NULL;
}

static void keeper_start(void) {
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_create(&thread, &attr, keeper_main, NULL);
    pthread_attr_destroy(&attr);
}

// Waits until `rep` has a byte (→ 1) or the zygote died (→ 0).
static int wait_reply(struct ward_zygote *z) {
    struct pollfd fds[2] = { { z->rep[0], POLLIN, 0 }, { z->pidfd, POLLIN, 0 } };
    for (;;) {
        int n = poll(fds, 2, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return 0;
        if (fds[0].revents & POLLIN) {
            char byte;
            return read(z->rep[0], &byte, 1) == 1;
        }
        if (fds[1].revents) return 0;
    }
}

static void release(struct ward_zygote *z) {
    if (z->req[0] >= 0) { close(z->req[0]); close(z->req[1]); }
    if (z->rep[0] >= 0) { close(z->rep[0]); close(z->rep[1]); }
    if (z->pidfd >= 0) close(z->pidfd);
    ward_stack_free(z->stack);
    ward_stack_free(z->child_stack);
    free(z);
}

struct ward_zygote *ward_zygote_start(const struct ward_spawn_config *cfg, int call_ruleset_fd, struct ward_spawn_error *err) {
    err->step = WARD_STEP_NONE;
    err->error = 0;
    // Without a domain of their own, the calls would share the zygote's: refused.
    if (call_ruleset_fd < 0) { err->step = WARD_STEP_LANDLOCK; err->error = EBADF; return NULL; }
    struct ward_zygote *z = calloc(1, sizeof *z);
    if (!z) { err->step = WARD_STEP_ZYGOTE; err->error = ENOMEM; return NULL; }
    z->pid = -1;
    z->ward = getpid();
    z->pidfd = z->req[0] = z->req[1] = z->rep[0] = z->rep[1] = -1;
    z->cfg = cfg;
    z->call_fd = call_ruleset_fd;
    if (ward_pipe_cloexec(z->req) != 0 || ward_pipe_cloexec(z->rep) != 0 || !(z->stack = ward_stack()) ||
        !(z->child_stack = ward_stack())) {
        err->step = WARD_STEP_ZYGOTE;
        err->error = errno;
        release(z);
        return NULL;
    }
    pthread_once(&keeper_once, keeper_start);
    pthread_mutex_lock(&keeper_callers);
    pthread_mutex_lock(&keeper_lock);
    keeper_ready = 0;
    keeper_request = z;
    pthread_cond_broadcast(&keeper_cond);
    while (!keeper_ready) pthread_cond_wait(&keeper_cond, &keeper_lock);
    pthread_mutex_unlock(&keeper_lock);
    pthread_mutex_unlock(&keeper_callers);
    if (z->pid < 0 || !wait_reply(z)) {
        *err = z->start_err;
        if (err->step == WARD_STEP_NONE) { err->step = WARD_STEP_ZYGOTE; err->error = ECHILD; }
        if (z->pid > 0) { int e, c, s; ward_wait(z->pid, &e, &c, &s); }
        release(z);
        return NULL;
    }
    return z;
}

enum ward_zygote_outcome ward_zygote_spawn_start(struct ward_zygote *z, const struct ward_spawn_config *cfg, struct ward_spawn_error *err, int *pidfd) {
    z->asked = 0;
    // A bad config is the caller's to report like any failed step: asked, and failed.
    if (ward_spawn_begin(cfg, err, pidfd) != 0) return WARD_ZYGOTE_SPAWNED;
    z->call = cfg;
    z->call_err = err;
    z->call_pid = -1;
    z->call_pidfd = -1;
    char byte = 1;
    if (write(z->req[1], &byte, 1) != 1) return WARD_ZYGOTE_UNAVAILABLE;
    z->asked = 1;
    return WARD_ZYGOTE_SPAWNED;
}

enum ward_zygote_outcome ward_zygote_spawn_finish(struct ward_zygote *z, struct ward_spawn_error *err, int *pidfd, pid_t *pid) {
    *pid = -1;
    // Refused by ward_spawn_begin: nothing was asked, no reply will come. (Not told by
    // err->step: a parked child that gives up at its gate, or fails its execve, writes its
    // step there as soon as its gate byte is written, before the zygote replies; that reply
    // must still be read, and the child reaped.)
    if (!z->asked) return WARD_ZYGOTE_SPAWNED;
    z->asked = 0;
    if (!wait_reply(z)) {
        // Gone. Had it cloned the call's child, the kernel would have stored the child's
        // pidfd in ward's memory before the child ran: none means no child ever ran.
        if (z->call_pidfd < 0) return WARD_ZYGOTE_UNAVAILABLE;
        // The child is ward's, so it outlives the zygote, and may have exec'd the tool:
        // killed and reaped here, so a tool that started does not run on unrecorded.
        siginfo_t info;
        sys(SYS_pidfd_send_signal, z->call_pidfd, SIGKILL, 0, 0);
        while (waitid(P_PIDFD, z->call_pidfd, &info, WEXITED) < 0 && errno == EINTR) {}
        close(z->call_pidfd);
        z->call_pidfd = -1;
        return WARD_ZYGOTE_LOST;
    }
    // No child: the clone failed (err says why, as a failed step).
    if (z->call_pid >= 0) *pid = ward_spawn_end(z->call_pid, z->call_pidfd, err, pidfd);
    return WARD_ZYGOTE_SPAWNED;
}

int ward_zygote_alive(const struct ward_zygote *z) {
    struct pollfd p = { z->pidfd, POLLIN, 0 };
    return poll(&p, 1, 0) == 0;
}

pid_t ward_zygote_pid(const struct ward_zygote *z) { return z->pid; }

void ward_zygote_stop(struct ward_zygote *z) {
    if (!z) return;
    if (z->pid > 0) {
        kill(z->pid, SIGKILL);
        int exited, code, sig;
        ward_wait(z->pid, &exited, &code, &sig);
    }
    release(z);
}
