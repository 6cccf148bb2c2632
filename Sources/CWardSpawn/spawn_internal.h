// Shared by spawn.c and zygote.c; not part of the module's public header.
#ifndef WARD_SPAWN_INTERNAL_H
#define WARD_SPAWN_INTERNAL_H
#include "ward_spawn.h"
#include <stddef.h>

/// A raw x86_64 syscall returning -errno: it touches no errno, no TLS, no libc state,
/// which code running on a borrowed thread's TLS (the vfork child, the zygote) must not.
__attribute__((always_inline)) static inline long ward_sys(long nr, long a, long b, long c, long d, long e, long f) {
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#define WARD_SYS7(n, a, b, c, d, e, f, ...) ward_sys((long)(n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))
#define sys(...) WARD_SYS7(__VA_ARGS__, 0, 0, 0, 0, 0, 0, 0)

#define WARD_STACK_SIZE (64 * 1024)
/// The bottom of a spawn stack that a child joining a user namespace runs on (enter_main);
/// the call's child it clones runs on the rest.
#define WARD_ENTER_STACK_SIZE (8 * 1024)
/// A page no child may touch, above the enter part of a spawn stack.
#define WARD_GUARD_SIZE 4096

/// Code that runs between clone and execve (the vfork child, the zygote) borrows another
/// thread's stack and TLS, where a sanitizer runtime's per-thread state is not its own: it is
/// never instrumented (Scripts/test --sanitize builds everything else with ASan or TSan).
#define WARD_CHILD_SIDE __attribute__((disable_sanitizer_instrumentation))

/// glibc's clone. ThreadSanitizer intercepts clone and treats every one as a fork, rebuilding
/// its state in the child; with CLONE_VM that state is the parent's, which it corrupts. Under
/// TSan the call goes to glibc directly, found once at load time.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#include <dlfcn.h>
typedef int (*ward_clone_fn)(int (*)(void *), void *, int, void *, ...);
static ward_clone_fn ward_glibc_clone;
__attribute__((constructor)) static void ward_find_glibc_clone(void) {
    ward_glibc_clone = (ward_clone_fn)dlsym(RTLD_NEXT, "clone");
}
#define ward_clone ward_glibc_clone
#endif
#endif
#ifndef ward_clone
#define ward_clone clone
#endif

struct ward_child_context {
    const struct ward_spawn_config *cfg;
    struct ward_spawn_error *err;
};

/// Records {step, -rc} and exits the child with 127.
WARD_CHILD_SIDE __attribute__((noreturn)) void ward_child_fail(struct ward_spawn_error *err, int step, long rc);
/// Resets every signal disposition; unblocks the mask when `unblock`.
void ward_step_signals(struct ward_spawn_error *err, int unblock);
/// Maps ward's own uid and gid in the user namespace clone just made (setgroups denied).
void ward_step_user_namespace(const struct ward_spawn_config *cfg, struct ward_spawn_error *err);
/// Joins the call's cgroups (ward_step_per_call does, unless cfg->user_namespace_fd > 0).
void ward_step_cgroups(const struct ward_spawn_config *cfg, struct ward_spawn_error *err);
/// The per-call steps: pdeathsig, session, cgroups, loopback, stdio, cwd, rlimits, fds.
void ward_step_per_call(const struct ward_spawn_config *cfg, struct ward_spawn_error *err);
/// oom_score_adj = 1000: the tool, not the supervisor, is the OOM killer's choice. Only in a
/// vfork child (a score written elsewhere in ward's memory would be ward's too).
void ward_step_oom_score(const struct ward_spawn_config *cfg, struct ward_spawn_error *err);
/// Makes ward's memory dumpable again after a process sharing it took the tool identity
/// (only for an unprivileged ward's tools' user namespace; see write_proc_self).
void ward_restore_dumpable(const struct ward_spawn_config *cfg);
/// Becomes cfg->tool_uid/tool_gid with no supplementary groups (when cfg->set_identity).
void ward_step_identity(const struct ward_spawn_config *cfg, struct ward_spawn_error *err);
/// Empties every capability set but, with `keep_setid`, CAP_SETUID and CAP_SETGID.
void ward_step_capset(struct ward_spawn_error *err, int keep_setid);
/// The per-policy confinement: no_new_privs, capabilities, Landlock, seccomp.
void ward_step_confine(const struct ward_spawn_config *cfg, struct ward_spawn_error *err);
/// Installs the call's effect-trace filter and sends its listener to ward (cfg->trace_bpf).
void ward_step_trace(const struct ward_spawn_config *cfg, struct ward_spawn_error *err);
/// Resets *err and *pidfd and checks the config; 0, or -1 with *err set.
int ward_spawn_begin(const struct ward_spawn_config *cfg, struct ward_spawn_error *err, int *pidfd);
/// After clone returned `pid`: reaps a child that reported a failed step (→ -1), or hands
/// out its pidfd (→ pid).
pid_t ward_spawn_end(pid_t pid, int fd, struct ward_spawn_error *err, int *pidfd);
/// A fresh child stack of WARD_STACK_SIZE bytes, or NULL.
char *ward_stack(void);
/// Unmaps a stack from ward_stack (NULL: nothing).
void ward_stack_free(char *stack);
#endif
