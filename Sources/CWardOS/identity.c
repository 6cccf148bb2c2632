// Identities of directories and of tools. C because statx is _GNU_SOURCE only,
// which Swift's Glibc module is built without, and because a forked child of a
// multithreaded process may run only raw syscalls.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ward_os.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
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

// One walk of `ward_chown_tree`.
struct walk {
    uint32_t uid, gid;
    int in_namespace;  // as uid 0 of the tools' user namespace: the operator's ACL entries too
    dev_t dev;         // the workspace's file system: the walk does not leave it
    char *failed;      // PATH_MAX bytes
    char path[PATH_MAX];
};

// One entry of a POSIX ACL as the kernel's xattr carries it.
struct acl_xattr_entry {
    uint16_t tag, perm;
    uint32_t id;
};

struct acl_xattr {
    uint32_t version;
    struct acl_xattr_entry entries[5];
};

// The ACL that keeps the operator (uid 0 of the tools' user namespace) reading, writing and,
// where anything may execute or search, executing an entry the tool identity owns: the
// mode's own bits, plus the operator's entry and a mask that lets it through. A directory's
// default ACL (`for_default`) passes the same to what is created in it later, but never
// lets the group write: with a default ACL the creator's umask no longer applies, and a
// file the operator creates there must not become writable by the tools' group.
static struct acl_xattr operator_acl(mode_t mode, int directory, int for_default) {
    uint16_t operator = 6 | ((directory || (mode & 0111)) ? 1 : 0);
    uint16_t group = ((mode >> 3) & 7) & (for_default ? ~2 : ~0);
    struct acl_xattr acl = { 2, {
        { 0x01, (mode >> 6) & 7, UINT32_MAX },      // the owner (the tool identity)
        { 0x02, operator, 0 },                      // the operator
        { 0x04, group, UINT32_MAX },                // the group
        { 0x10, group | operator, UINT32_MAX },     // the mask
        { 0x20, mode & 7, UINT32_MAX },             // others
    } };
    return acl;
}

static int set_acl(int fd, const char *name, const struct acl_xattr *acl) {
    struct acl_xattr now;
    ssize_t n = fgetxattr(fd, name, &now, sizeof now);
    if (n == (ssize_t)sizeof now && memcmp(&now, acl, sizeof now) == 0) return 0;
    return fsetxattr(fd, name, acl, sizeof *acl, 0);
}

static int walk_fail(struct walk *w, const char *what) {
    int e = errno;
    snprintf(w->failed, PATH_MAX, "%s%s", w->path, what);
    errno = e;
    return -1;
}

// Gives an open entry (a directory, or a regular file with one link) to the identity and,
// in the namespace, the operator's ACL: at every start, so an entry a tool chmod-ed shut
// (`chmod 700` empties the mask) is the operator's to use again. Set-group-ID goes from a
// directory given in the namespace, or what the operator makes there would belong to the
// tools' group.
static int give_fd(struct walk *w, int fd, const struct stat *st, int directory) {
    if ((st->st_uid != w->uid || st->st_gid != w->gid) && fchown(fd, w->uid, w->gid) != 0) {
        // In the tools' user namespace what the operator does not own (another user's, read
        // as the overflow id, or in a group it cannot map) is not its to give: it stays as
        // it is, and tools have of it only what its mode gives others.
        if (w->in_namespace && (errno == EPERM || errno == EINVAL)) return 0;
        return walk_fail(w, "");
    }
    if (!w->in_namespace) return 0;
    mode_t mode = st->st_mode & 07777;
    if (directory && (mode & S_ISGID) && fchmod(fd, mode & ~S_ISGID) != 0) return walk_fail(w, " (clearing set-group-ID)");
    struct acl_xattr access = operator_acl(mode, directory, 0), inherited = operator_acl(mode, directory, 1);
    if (set_acl(fd, "system.posix_acl_access", &access) != 0 ||
        (directory && set_acl(fd, "system.posix_acl_default", &inherited) != 0))
        return walk_fail(w, " (an ACL entry for the operator)");
    return 0;
}

// Walks the directory open as `fd` by descriptors only: every entry is looked at and
// opened relative to its directory, never through a path or a symlink, so an entry a
// running tool swaps for a symlink (or a directory it swaps for one) leads nowhere
// outside the workspace, and neither does one on another file system. A file with more
// than one link may be another file too (a hard link to the operator's ~/.bashrc): it is
// left as it is.
static int walk_dir(struct walk *w, int fd, size_t len, int depth) {
    if (depth > 1024) { errno = ELOOP; return walk_fail(w, " (nested too deep)"); }
    int copy = dup(fd);
    DIR *dir = copy < 0 ? NULL : fdopendir(copy);
    if (!dir) {
        if (copy >= 0) close(copy);
        return walk_fail(w, "");
    }
    int rc = 0;
    struct dirent *entry;
    while (rc == 0 && (errno = 0, entry = readdir(dir))) {
        const char *name = entry->d_name;
        if (!strcmp(name, ".") || !strcmp(name, "..")) continue;
        int n = snprintf(w->path + len, sizeof w->path - len, "/%s", name);
        if (n < 0 || (size_t)n >= sizeof w->path - len) { errno = ENAMETOOLONG; rc = walk_fail(w, ""); break; }
        struct stat st;
        if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT) continue;  // removed meanwhile
            rc = walk_fail(w, "");
            break;
        }
        if (st.st_dev != w->dev) continue;
        if (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) {
            if (S_ISREG(st.st_mode) && st.st_nlink > 1) continue;
            int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0);
            int sub = openat(fd, name, flags);
            if (sub < 0) {
                // Swapped for a symlink or something else, or removed, meanwhile; or (in the
                // namespace) unreadable, being someone else's.
                if (errno == ENOENT || errno == ELOOP || errno == ENOTDIR || errno == ENXIO ||
                    (w->in_namespace && errno == EACCES)) continue;
                rc = walk_fail(w, "");
                break;
            }
            struct stat now;
            // Still the entry looked at (not swapped between the look and the open), still
            // on the workspace's file system, still one link.
            if (fstat(sub, &now) != 0 || now.st_ino != st.st_ino || now.st_dev != w->dev || (S_ISREG(now.st_mode) && now.st_nlink > 1)) {
                close(sub);
                continue;
            }
            rc = give_fd(w, sub, &now, S_ISDIR(now.st_mode));
            if (rc == 0 && S_ISDIR(now.st_mode)) rc = walk_dir(w, sub, len + (size_t)n, depth + 1);
            close(sub);
        } else if (!(st.st_nlink > 1 && !S_ISLNK(st.st_mode)) && (st.st_uid != w->uid || st.st_gid != w->gid) &&
                   fchownat(fd, name, w->uid, w->gid, AT_SYMLINK_NOFOLLOW) != 0) {
            // A symlink (the link, never its target), a FIFO or a socket.
            if (errno == ENOENT || (w->in_namespace && (errno == EPERM || errno == EINVAL))) continue;
            rc = walk_fail(w, "");
        }
    }
    if (rc == 0 && errno != 0) rc = walk_fail(w, "");
    int e = errno;
    closedir(dir);
    w->path[len] = 0;
    errno = e;
    return rc;
}

static int chown_walk(struct walk *w, const char *root) {
    w->failed[0] = 0;
    snprintf(w->path, sizeof w->path, "%s", root);
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return walk_fail(w, "");
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return walk_fail(w, "");
    }
    w->dev = st.st_dev;
    size_t len = strlen(w->path);
    while (len > 1 && w->path[len - 1] == '/') w->path[--len] = 0;
    int rc = give_fd(w, fd, &st, 1);
    if (rc == 0) rc = walk_dir(w, fd, len, 0);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

// Walks in a forked child that entered the namespace; the child sends back the path that
// failed. (glibc's fork leaves malloc usable in the child, which fdopendir needs.)
static int chown_walk_in(int userns_fd, struct walk *w, const char *root) {
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
        w->in_namespace = 1;
        int rc = chown_walk(w, root);
        int e = rc == 0 ? 0 : errno ? errno : EIO;
        (void)!write(fds[1], w->failed, strlen(w->failed));
        syscall(SYS_exit_group, e > 255 ? EIO : e);
    }
    close(fds[1]);
    ssize_t n;
    size_t got = 0;
    while (got < PATH_MAX - 1 && (n = read(fds[0], w->failed + got, PATH_MAX - 1 - got)) > 0) got += (size_t)n;
    w->failed[got] = 0;
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
    static struct walk w;  // a PATH_MAX buffer; one walk at a time (a sandbox is set up once)
    static pthread_mutex_t walking = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&walking);
    w.uid = uid;
    w.gid = gid;
    w.in_namespace = 0;
    w.failed = failed;
    int rc = userns_fd > 0 ? chown_walk_in(userns_fd, &w, root) : chown_walk(&w, root);
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
