#ifndef WARD_SPAWN_H
#define WARD_SPAWN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The steps the child runs between clone and execve, in order. A failed step is reported
/// back to the parent as {step, errno}; `ward_step_name` turns it into words.
enum ward_step {
    WARD_STEP_NONE = 0,
    WARD_STEP_CLONE,
    WARD_STEP_SIGNALS,
    WARD_STEP_USER_NAMESPACE,
    WARD_STEP_SETSID,
    WARD_STEP_CGROUP,
    WARD_STEP_LOOPBACK,
    WARD_STEP_STDIO,
    WARD_STEP_CHDIR,
    WARD_STEP_RLIMIT,
    WARD_STEP_OOM_SCORE,
    WARD_STEP_CLOSE_FDS,
    WARD_STEP_NO_NEW_PRIVS,
    WARD_STEP_SECUREBITS,
    WARD_STEP_CAPBSET,
    WARD_STEP_AMBIENT,
    WARD_STEP_CAPSET,
    WARD_STEP_LANDLOCK,
    WARD_STEP_SECCOMP,
    WARD_STEP_EXECVE,
    WARD_STEP_PDEATHSIG,
    WARD_STEP_ZYGOTE,
    WARD_STEP_GATE,
    WARD_STEP_IDENTITY,
    WARD_STEP_TRACE,
};

struct ward_rlimit {
    int resource;
    uint64_t soft;
    uint64_t hard;
};

/// Everything the child needs, prepared (allocated, opened, compiled) by the parent.
struct ward_spawn_config {
    const char *path;             ///< absolute path of the executable
    char *const *argv;            ///< NULL-terminated
    char *const *envp;            ///< NULL-terminated, built from the policy's allowlist
    const char *cwd;              ///< working directory (the workspace)
    int stdin_fd, stdout_fd, stderr_fd;   ///< all > 2, close-on-exec in the parent
    const int *cgroup_join_fds;   ///< per hierarchy the call joins, the file it writes "0" to
    int cgroup_join_count;
    int new_pid_namespace;        ///< the tool becomes pid 1 of a new PID namespace
    int new_user_namespace;       ///< needed for namespaces when not root
    int user_namespace_fd;        ///< > 0: the user namespace of ward's tools (ward_user_namespace_create),
                                  ///< joined before anything else: a direct spawn's child becomes
                                  ///< outer_uid/outer_gid there before its own user namespace is made
    int new_net_namespace;        ///< private network namespace with only loopback up
    uint32_t outer_uid, outer_gid;
    const struct ward_rlimit *rlimits;
    int rlimit_count;
    int drop_bounding_set;        ///< we hold CAP_SETPCAP: lock securebits, empty the bounding set
    int set_identity;             ///< become tool_uid/tool_gid (a root ward's tools never run as uid 0)
    uint32_t tool_uid, tool_gid;
    int keep_setid_caps;          ///< a zygote keeps CAP_SETUID/CAP_SETGID: each call's child takes the identity
    int cap_last;                 ///< highest capability number the kernel knows
    int landlock_ruleset_fd;      ///< -1 when Landlock is unavailable
    const void *bpf;              ///< struct sock_filter[bpf_len]; NULL for none
    unsigned short bpf_len;
    int pdeath_signal;            ///< 0 for none
    int parent_pid;               ///< with pdeath_signal: ward's pid. A child whose parent is no longer ward
                                  ///< (ward died before the child asked for the signal) gives up.
    int gate_fd;                  ///< > 0: read one byte from it before execve; 1 = go, anything else = give up
    const void *trace_bpf;        ///< the call's own effect-trace filter (SECCOMP_RET_USER_NOTIF actions); NULL: untraced
    unsigned short trace_bpf_len;
    int trace_fd;                 ///< with trace_bpf: a Unix socket the child sends the filter's listener fd on
};

struct ward_spawn_error {
    int step;
    int error;
};

/// Starts the child: clone(CLONE_VM|CLONE_VFORK) on a private stack, so the calling thread
/// resumes only once the child has exec'd or failed. Returns the pid (and a pidfd in
/// *pidfd) or -1 with *err set. Why C: the child side must run only raw, async-signal-safe
/// syscalls in a multithreaded process, and vfork-style clone is unavailable from Swift.
pid_t ward_spawn(const struct ward_spawn_config *cfg, struct ward_spawn_error *err, int *pidfd);

/// Starts an agent (not sandboxed): default signal dispositions, its own process group,
/// PR_SET_PDEATHSIG(SIGKILL) so it dies with the calling thread (call it from a thread that
/// lives as long as ward: the main thread), then execve. Returns the pid, or -1 with *err.
/// Why C: between clone and execve only raw syscalls may run.
pid_t ward_spawn_agent(const char *path, char *const *argv, char *const *envp, struct ward_spawn_error *err);

/// Forks a watchdog that, once the returned fd (a pipe's write end, close-on-exec) is
/// closed — by ward's death, even by SIGKILL, or by `close` — kills every `call-*` cgroup
/// under each of `roots` (cgroup.kill, or pids.max=0 and SIGKILL on v1) and exits.
/// Returns the fd, or -1, and the watchdog's pid in `pid`. Why C: the forked child of a
/// multithreaded process may run only raw syscalls.
int ward_watchdog_start(const char *const *roots, int count, pid_t *pid);

/// The name of a step, for messages such as "landlock_restrict_self failed: EINVAL".
const char *ward_step_name(int step);

// MARK: - Zygote

/// A long-lived, already confined process per tool policy, sharing ward's memory and fd
/// table (CLONE_VM|CLONE_FILES), that starts the tool of each call. The call's child
/// inherits the zygote's seccomp filter, Landlock domain and dropped capabilities instead
/// of attaching its own (~75 µs of kernel time per filter attach on its own), is made with
/// CLONE_PARENT so that ward is its parent (reaps it, gets its status, its PDEATHSIG), and
/// applies only the per-call steps, plus a Landlock domain of its own nested under the
/// zygote's, so that a tool can ptrace (or process_vm_*, pidfd_getfd, kcmp) neither the
/// zygote, nor ward, nor another call, and from ABI 6 cannot signal them. Why C: it runs in a process that shares
/// a multithreaded Swift process's memory, with raw syscalls only.
struct ward_zygote;

/// Starts a zygote confined by `cfg` (its NNP, capability, Landlock and seccomp fields;
/// `cfg` must stay valid while the zygote lives) from ward's keeper thread, so its
/// PDEATHSIG means "ward died". `call_ruleset_fd`, a Landlock ruleset, is applied by each
/// call's child (required: without it calls would share the zygote's domain). Returns NULL
/// with *err set on failure.
struct ward_zygote *ward_zygote_start(const struct ward_spawn_config *cfg, int call_ruleset_fd, struct ward_spawn_error *err);
/// Spawns a call's tool through the zygote, in two halves (one call at a time per zygote:
/// the caller serializes the pair): `start` asks the zygote for the child and returns at
/// once; `finish` waits until the child has exec'd or given up.
///
/// What became of a spawn asked of a zygote.
enum ward_zygote_outcome {
    /// The zygote made the call's child: `*pid` is its pid, or -1 with the failed step in
    /// `err` (the child reported it before execve: no tool ran).
    WARD_ZYGOTE_SPAWNED,
    /// The zygote is gone and made no child for the request: nothing started.
    WARD_ZYGOTE_UNAVAILABLE,
    /// The zygote died after it made the call's child: the tool may have started. The
    /// child has been killed and reaped.
    WARD_ZYGOTE_LOST,
};
/// Asks the zygote for a child: WARD_ZYGOTE_SPAWNED once asked (then call
/// ward_zygote_spawn_finish), else WARD_ZYGOTE_UNAVAILABLE. A child whose `cfg->gate_fd` is
/// set waits there before execve: the caller writes the gate byte in between.
enum ward_zygote_outcome ward_zygote_spawn_start(struct ward_zygote *z, const struct ward_spawn_config *cfg, struct ward_spawn_error *err, int *pidfd);
/// Waits for the zygote's reply to the request: the child, or why there is none.
enum ward_zygote_outcome ward_zygote_spawn_finish(struct ward_zygote *z, struct ward_spawn_error *err, int *pidfd, pid_t *pid);
/// 1 while the zygote runs, 0 once it died (it is then stopped and replaced before a request).
int ward_zygote_alive(const struct ward_zygote *z);
/// The zygote's pid.
pid_t ward_zygote_pid(const struct ward_zygote *z);
/// Kills and reaps the zygote and frees it.
void ward_zygote_stop(struct ward_zygote *z);

/// The calling thread's child stack (mapped by its first spawn; NULL before), which is
/// unmapped when the thread exits. For tests.
const void *ward_thread_stack(void);

// MARK: - Effect trace (trace.c)

/// One notified syscall of a traced tool, as the kernel reported it.
struct ward_trace_notification {
    uint64_t id;
    int pid;
    int nr;
    uint64_t args[6];
};

/// 1 when this kernel has seccomp user notification with CONTINUE (5.5+).
int ward_trace_available(void);
/// The listener fd a traced call's child sent on `sock` (SCM_RIGHTS), without waiting: the
/// child sends it before its execve. -1 when there is none.
int ward_trace_receive_listener(int sock);
/// Waits up to `timeout_ms` for a notification: 1 (filled in), 0 (nothing yet), -1 (no
/// task uses the filter any more, or an error).
int ward_trace_next(int listener, int timeout_ms, struct ward_trace_notification *out);
/// Lets the notified syscall run as asked. 0, or -ENOENT when its task is gone (then what
/// was read for it may belong to another process: discard it).
int ward_trace_continue(int listener, uint64_t id);
/// 0 while the notification `id` is still pending (its task alive, so what was read of it
/// is its own), else -errno.
int ward_trace_id_valid(int listener, uint64_t id);
/// process_vm_readv of `length` bytes at `address` in `pid`; bytes read or -1.
long ward_trace_read(int pid, uint64_t address, void *buffer, size_t length);
/// A NUL-terminated string at `address` in `pid`, cut to `capacity - 1`; its length or -1.
long ward_trace_read_string(int pid, uint64_t address, char *buffer, size_t capacity);
/// The path of `pid`'s fd (its cwd for AT_FDCWD, -100); its length or -1.
long ward_trace_fd_path(int pid, int fd, char *buffer, size_t capacity);
/// socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC): Glibc's Swift module lacks SOCK_CLOEXEC.
int ward_socketpair_cloexec(int fds[2]);

// MARK: - Wrappers the spawn shares with Swift (the others are CWardOS's)

/// pipe2(O_CLOEXEC): Glibc's Swift module is built without _GNU_SOURCE.
int ward_pipe_cloexec(int fds[2]);
/// Waits for pid; returns 0 and fills exited/code/signal, or -1 with errno. EINTR retried.
/// C: __WALL and the wait-status macros (WIFEXITED, …) are not in Swift's Glibc module.
int ward_wait(pid_t pid, int *exited, int *code, int *signal);

#ifdef __cplusplus
}
#endif
#endif
