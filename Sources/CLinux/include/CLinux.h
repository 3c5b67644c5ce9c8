#ifndef COFFER_CLINUX_H
#define COFFER_CLINUX_H
#include <stdint.h>

/// Starts writeback of `count` bytes of `fd` from `offset` (0: to the end of the file) without
/// waiting for it: `sync_file_range(SYNC_FILE_RANGE_WRITE)`. It makes nothing durable (an
/// fsync is still needed); it only lets the disk start early. Returns 0, or -1 with errno set
/// (ENOSYS where the call does not exist).
int coffer_start_writeback(int fd, int64_t offset, int64_t count);

/// `syncfs(2)`: flushes every dirty page of the filesystem that holds `fd` (`sync(2)` where
/// there is no syncfs). Returns 0, or -1 with errno set.
int coffer_syncfs(int fd);
#endif
