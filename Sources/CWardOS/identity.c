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
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include <pthread.h>

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

int ward_searchable_as(const char *path, uint32_t uid, uint32_t gid) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
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

static int chown_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)type;
    (void)ftw;
    if (st->st_uid == chown_uid && st->st_gid == chown_gid) return 0;
    if (lchown(path, chown_uid, chown_gid) != 0) {
        strncpy(chown_failed, path, PATH_MAX - 1);
        chown_failed[PATH_MAX - 1] = 0;
        return -1;
    }
    return 0;
}

int ward_chown_tree(const char *root, uint32_t uid, uint32_t gid, char *failed) {
    // nftw keeps its walk state in globals here: one walk at a time (a sandbox is set up once).
    static pthread_mutex_t walking = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&walking);
    chown_uid = uid;
    chown_gid = gid;
    chown_failed = failed;
    failed[0] = 0;
    int rc = nftw(root, chown_entry, 64, FTW_PHYS | FTW_MOUNT);
    int saved = errno;
    pthread_mutex_unlock(&walking);
    errno = saved;
    return rc == 0 ? 0 : -1;
}
