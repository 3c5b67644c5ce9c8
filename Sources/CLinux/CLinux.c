// Linux calls that glibc declares only under _GNU_SOURCE, which Swift's Glibc module does not
// set: wrapped here, in a C file built with it.
#define _GNU_SOURCE
#include "CLinux.h"
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

int coffer_start_writeback(int fd, int64_t offset, int64_t count) {
#if defined(__linux__)
    return sync_file_range(fd, (off_t)offset, (off_t)count, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd; (void)offset; (void)count;
    errno = ENOSYS;
    return -1;
#endif
}

int coffer_drop_written(int fd, int64_t offset, int64_t count) {
#if defined(__linux__)
    if (sync_file_range(fd, (off_t)offset, (off_t)count,
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
        int code = errno;
        // Where the call does not apply, nothing was learned about the bytes.
        if (code == ENOSYS || code == EINVAL || code == ESPIPE || code == EOPNOTSUPP) return 0;
        return code;
    }
    (void)posix_fadvise(fd, (off_t)offset, (off_t)count, POSIX_FADV_DONTNEED);
    return 0;
#else
    (void)fd; (void)offset; (void)count;
    return 0;
#endif
}

int coffer_syncfs(int fd) {
#if defined(__linux__)
    return syncfs(fd);
#else
    // No per-filesystem sync: flush every filesystem (it waits for the writes, as syncfs does).
    (void)fd;
    sync();
    return 0;
#endif
}
