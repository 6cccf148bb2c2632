// The identity of a directory for the ledger's record of where a run ran. C because statx
// is _GNU_SOURCE only, and Swift's Glibc module is built without it.
#include "ward_spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

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
