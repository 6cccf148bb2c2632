// Identities of directories and of tools. C because statx and nftw are _GNU_SOURCE/XSI only,
// which Swift's Glibc module is built without, and because a forked child of a
// multithreaded process may run only raw syscalls.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ward_os.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>

int ward_directory_identity(const char *path, uint64_t *dev, uint64_t *ino, int64_t *birth_sec, uint32_t *birth_nsec) {
    struct statx st;
    if (statx(AT_FDCWD, path, 0, STATX_TYPE | STATX_INO | STATX_BTIME, &st) != 0) return -1;
    if (!S_ISDIR(st.stx_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    *dev = makedev(st.stx_dev_major, st.stx_dev_minor);
    *ino = st.stx_ino;
    // A directory removed and made again often gets the same inode number back (ext4 and
    // tmpfs reuse it at once); its birth time, to the nanosecond, tells them apart.
    if (st.stx_mask & STATX_BTIME) {
        *birth_sec = st.stx_btime.tv_sec;
        *birth_nsec = st.stx_btime.tv_nsec;
    } else {
        *birth_sec = 0;
        *birth_nsec = 0;
    }
    return 0;
}

// A forked child enters the user namespace `fd` (as its uid 0, with its capabilities): a
// process of a single thread that shares no fs_struct may, because ward's user owns it.
#define ENTER_OR_EXIT(fd) \
    do { if ((fd) > 0 && syscall(SYS_setns, (fd), CLONE_NEWUSER) != 0) syscall(SYS_exit_group, 3); } while (0)

int ward_searchable_as(const char *path, uint32_t uid, uint32_t gid, int userns_fd) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        ENTER_OR_EXIT(userns_fd);
        // Raw syscalls: glibc's setresuid would signal threads this child does not have.
        uint32_t groups[1] = { gid };
        if (syscall(SYS_setgroups, 1, groups) != 0 || syscall(SYS_setresgid, gid, gid, gid) != 0 ||
            syscall(SYS_setresuid, uid, uid, uid) != 0)
            syscall(SYS_exit_group, 2);
        syscall(SYS_exit_group, syscall(SYS_faccessat, AT_FDCWD, path, X_OK) == 0 ? 0 : 1);
    }
    int status;
    pid_t r;
    do { r = waitpid(pid, &status, 0); } while (r < 0 && errno == EINTR);
    if (r < 0) return -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) > 1) {
        errno = EPERM;
        return -1;
    }
    return WEXITSTATUS(status) == 0;
}

static uint32_t chown_uid, chown_gid;
static char *chown_failed;
static int chown_in_namespace;

// One entry of a POSIX ACL as the kernel's xattr carries it.
struct acl_xattr_entry {
    uint16_t tag, perm;
    uint32_t id;
};

// Gives the operator (uid 0 of the tools' user namespace) read, write and, where anything
// may execute or search, execute on an entry it just gave away, and on a directory the same
// for what tools create in it later: the mode's own bits are kept, and the mask is what
// they and the operator's entry need. An entry that already has an ACL keeps it.
static int grant_operator(const char *path, mode_t mode, int directory) {
    if (lgetxattr(path, "system.posix_acl_access", NULL, 0) > 0) return 0;
    uint16_t operator = 6 | ((directory || (mode & 0111)) ? 1 : 0), group = (mode >> 3) & 7;
    struct {
        uint32_t version;
        struct acl_xattr_entry entries[5];
    } acl = { 2, {
        { 0x01, (mode >> 6) & 7, UINT32_MAX },      // the owner (the tool identity)
        { 0x02, operator, 0 },                      // the operator
        { 0x04, group, UINT32_MAX },                // the group
        { 0x10, group | operator, UINT32_MAX },     // the mask
        { 0x20, mode & 7, UINT32_MAX },             // others
    } };
    if (lsetxattr(path, "system.posix_acl_access", &acl, sizeof acl, 0) != 0) return -1;
    if (directory && lsetxattr(path, "system.posix_acl_default", &acl, sizeof acl, 0) != 0) return -1;
    return 0;
}

static int chown_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)ftw;
    if (st->st_uid == chown_uid && st->st_gid == chown_gid) return 0;
    if (lchown(path, chown_uid, chown_gid) != 0) {
        // In the tools' user namespace what the operator does not own (another user's,
        // read as the overflow id, or in a group it cannot map) is not its to give: it
        // stays as it is, and tools have to it only the access its mode gives others.
        if (chown_in_namespace && (errno == EPERM || errno == EINVAL)) return 0;
        strncpy(chown_failed, path, PATH_MAX - 1);
        chown_failed[PATH_MAX - 1] = 0;
        return -1;
    }
    if (chown_in_namespace && type != FTW_SL && grant_operator(path, st->st_mode, type == FTW_D || type == FTW_DP) != 0) {
        snprintf(chown_failed, PATH_MAX, "%s (an ACL entry for the operator)", path);
        return -1;
    }
    return 0;
}

static int chown_walk(const char *root) {
    chown_failed[0] = 0;
    return nftw(root, chown_entry, 64, FTW_PHYS | FTW_MOUNT) == 0 ? 0 : -1;
}

// Walks in a forked child that entered the namespace; the child sends back the path that
// failed. (glibc's fork leaves malloc usable in the child, which nftw needs.)
static int chown_walk_in(int userns_fd, const char *root) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        errno = e;
        return -1;
    }
    if (pid == 0) {
        ENTER_OR_EXIT(userns_fd);
        chown_in_namespace = 1;
        int rc = chown_walk(root);
        int e = rc == 0 ? 0 : errno ? errno : EIO;
        (void)!write(fds[1], chown_failed, strlen(chown_failed));
        syscall(SYS_exit_group, e > 255 ? EIO : e);
    }
    close(fds[1]);
    ssize_t n;
    size_t got = 0;
    while (got < PATH_MAX - 1 && (n = read(fds[0], chown_failed + got, PATH_MAX - 1 - got)) > 0) got += (size_t)n;
    chown_failed[got] = 0;
    close(fds[0]);
    int status;
    pid_t r;
    do { r = waitpid(pid, &status, 0); } while (r < 0 && errno == EINTR);
    if (r < 0) return -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        errno = WIFEXITED(status) ? (WEXITSTATUS(status) == 3 ? EPERM : WEXITSTATUS(status)) : EINTR;
        return -1;
    }
    return 0;
}

int ward_chown_tree(const char *root, uint32_t uid, uint32_t gid, int userns_fd, char *failed) {
    // nftw keeps its walk state in globals here: one walk at a time (a sandbox is set up once).
    static pthread_mutex_t walking = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&walking);
    chown_uid = uid;
    chown_gid = gid;
    chown_failed = failed;
    int rc = userns_fd > 0 ? chown_walk_in(userns_fd, root) : chown_walk(root);
    int saved = errno;
    pthread_mutex_unlock(&walking);
    errno = saved;
    return rc;
}

// Runs a setuid map helper: `helper PID 0 OUTER 1 TOOL TOOL 1`. Its stderr goes to `err_fd`.
static int run_map_helper(const char *helper, pid_t pid, uint32_t outer, uint32_t tool, int err_fd) {
    char pid_s[16], outer_s[16], tool_s[16];
    snprintf(pid_s, sizeof pid_s, "%d", (int)pid);
    snprintf(outer_s, sizeof outer_s, "%u", outer);
    snprintf(tool_s, sizeof tool_s, "%u", tool);
    char *const argv[] = { (char *)helper, pid_s, "0", outer_s, "1", tool_s, tool_s, "1", NULL };
    char *const envp[] = { "PATH=/usr/bin:/bin", "LC_ALL=C", NULL };
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
    pid_t helper_pid;
    int rc = posix_spawn(&helper_pid, helper, &actions, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) return -1;
    int status;
    pid_t r;
    do { r = waitpid(helper_pid, &status, 0); } while (r < 0 && errno == EINTR);
    if (r < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int ward_user_namespace_create(const char *newuidmap, const char *newgidmap, uint32_t tool_uid, uint32_t tool_gid,
                               char *message, size_t message_size) {
    message[0] = 0;
    int ready[2], done[2], errs[2];
    if (pipe2(ready, O_CLOEXEC) != 0) return -1;
    if (pipe2(done, O_CLOEXEC) != 0) { close(ready[0]); close(ready[1]); return -1; }
    if (pipe2(errs, O_CLOEXEC) != 0) { close(ready[0]); close(ready[1]); close(done[0]); close(done[1]); return -1; }
    uint32_t uid = getuid(), gid = getgid();
    pid_t pid = fork();
    if (pid == 0) {
        // Raw syscalls only. The child waits for the end of `done`: ward closes it once it has
        // the namespace's fd, or by dying.
        syscall(SYS_close, done[1]);
        char byte = syscall(SYS_unshare, CLONE_NEWUSER) == 0 ? 1 : 0;
        syscall(SYS_write, ready[1], &byte, 1);
        syscall(SYS_read, done[0], &byte, 1);
        syscall(SYS_exit_group, 0);
    }
    close(ready[1]);
    close(done[0]);
    int fd = -1, e = 0;
    char byte = 0;
    if (pid < 0) {
        e = errno;
    } else if (read(ready[0], &byte, 1) != 1 || byte != 1) {
        e = EPERM;
        snprintf(message, message_size, "unshare(CLONE_NEWUSER) failed");
    } else {
        int u = run_map_helper(newuidmap, pid, uid, tool_uid, errs[1]);
        int g = u == 0 ? run_map_helper(newgidmap, pid, gid, tool_gid, errs[1]) : 0;
        if (u == 0 && g == 0) {
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
            fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) e = errno;
        } else {
            e = EPERM;
            close(errs[1]);
            errs[1] = -1;
            ssize_t n = read(errs[0], message, message_size - 1);
            message[n > 0 ? n : 0] = 0;
            // The helper's first line; a name for it when it said nothing.
            for (char *c = message; *c; c++) if (*c == '\n') { *c = 0; break; }
            if (!message[0]) snprintf(message, message_size, "%s exited with status %d", u != 0 ? newuidmap : newgidmap, u != 0 ? u : g);
        }
    }
    close(ready[0]);
    close(done[1]);
    close(errs[0]);
    if (errs[1] >= 0) close(errs[1]);
    if (pid > 0) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    }
    if (fd < 0) {
        if (!message[0]) snprintf(message, message_size, "%s", strerror(e));
        errno = e;
    }
    return fd;
}
