#ifndef WARD_OS_H
#define WARD_OS_H

// Small wrappers of what Swift cannot call directly (variadic functions, function-like
// macros, declarations that need _GNU_SOURCE, which Swift's Glibc module is built without,
// syscalls glibc does not wrap). None of them runs between clone and execve: the child side
// of the spawn is CWardSpawn.

#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Delivery

/// How many bytes written to `fd` its reader has not taken yet: FIONREAD for a pipe (the
/// kernel answers it on either end), SIOCOUTQ for a socket; -1 for anything else, or on
/// error. C: ioctl is variadic.
int ward_unread_bytes(int fd);

// MARK: - Memory files

/// memfd_create: _GNU_SOURCE only.
int ward_memfd(const char *name);
/// A memfd for a tool's stdin, which the tool gets read-write: never executable where the
/// kernel knows MFD_NOEXEC_SEAL (6.3+), and sealable, so `ward_seal_contents` can freeze it.
/// Otherwise a tool could write a program into its stdin and run it from /proc/self/fd/0.
int ward_input_memfd(const char *name);
/// Seals a memfd's contents (no write, no resize, no further seal change); 0 or -1 with
/// errno. C: F_ADD_SEALS is _GNU_SOURCE only and fcntl is variadic.
int ward_seal_contents(int fd);

// MARK: - Confinement, from the parent side

/// Landlock syscalls: no glibc wrappers exist.
long ward_landlock_create_ruleset(const void *attr, unsigned long size, uint32_t flags);
long ward_landlock_add_path_rule(int ruleset_fd, uint64_t allowed, int parent_fd);
long ward_landlock_add_net_rule(int ruleset_fd, uint64_t allowed, uint64_t port);
/// O_PATH is _GNU_SOURCE only.
int ward_open_path(const char *path);
/// prctl is variadic.
// SIGKILL through a pidfd: never reaches another process that took a reaped pid's number.
int ward_pidfd_kill(int pidfd);
int ward_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5);
/// seccomp(2) mode query for `ward doctor`.
int ward_seccomp_available(void);

// MARK: - Peers

/// The uid of a Unix socket's peer (SO_PEERCRED), or -1: struct ucred is _GNU_SOURCE only.
long ward_peer_uid(int fd);
/// The pid of a Unix socket's peer as ward's PID namespace sees it (0: not visible there), or -1.
long ward_peer_pid(int fd);

// MARK: - Identities (identity.c)

/// Whether `path` can be searched (X_OK) by uid/gid with no supplementary groups: asked of a
/// forked child that takes that identity, inside the user namespace `userns_fd` when it is
/// > 0 (the ids are then that namespace's). 1, 0, or -1 with errno. C: the forked child of a
/// multithreaded process may run only raw syscalls.
int ward_searchable_as(const char *path, uint32_t uid, uint32_t gid, int userns_fd);
/// Gives every entry of the tree at `root` to uid/gid, walking by descriptors (never through
/// a symlink, never onto another file system, skipping files with more than one link, which
/// may be files elsewhere too); 0, or -1 with errno and the path that failed in `failed`
/// (PATH_MAX bytes). With `userns_fd` > 0, as uid 0 of that user namespace (the ids are then
/// its): entries the operator does not own are left as they are, each entry the identity
/// owns gets the operator's ACL entry again (a default one on directories), and directories
/// lose set-group-ID.
int ward_chown_tree(const char *root, uint32_t uid, uint32_t gid, int userns_fd, char *failed);
/// Makes the user namespace an unprivileged ward's tools run in: ward's uid and gid are 0
/// there (so a helper run there as root keeps its capabilities through execve), and
/// `tool_uid`/`tool_gid`, subordinate ids of ward's user, are themselves. A forked child
/// enters a new user namespace and waits while the setuid helpers `newuidmap` and
/// `newgidmap` map it; ward keeps only an fd of the namespace, which lives as long as that
/// fd. Returns the fd (close-on-exec), or -1 with the helper's complaint (or errno's name)
/// in `message`.
int ward_user_namespace_create(const char *newuidmap, const char *newgidmap, uint32_t tool_uid, uint32_t tool_gid,
                               char *message, size_t message_size);
/// A directory's device, inode and birth time (0 when the filesystem keeps none); -1 with
/// errno when it is missing or not a directory. statx is _GNU_SOURCE only.
int ward_directory_identity(const char *path, uint64_t *dev, uint64_t *ino, int64_t *birth_sec, uint32_t *birth_nsec);

/// Catches SIGINT and SIGTERM from now on, for `ward_termination_wait`, and unblocks them in
/// the calling thread (call it from the main thread, before starting others). Why C: the handler
/// runs on whichever thread the kernel picks and may only touch async-signal-safe state.
void ward_termination_catch(void);
/// Blocks until SIGINT or SIGTERM has come since `ward_termination_catch` (at once if one
/// already did) and returns its number; each signal is returned once.
int ward_termination_wait(void);

#ifdef __cplusplus
}
#endif
#endif
