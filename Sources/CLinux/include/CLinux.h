#ifndef COFFER_CLINUX_H
#define COFFER_CLINUX_H
#include <stdint.h>

/// Starts writeback of `count` bytes of `fd` from `offset` (0: to the end of the file) without
/// waiting for it: `sync_file_range(SYNC_FILE_RANGE_WRITE)`. It makes nothing durable (an
/// fsync is still needed); it only lets the disk start early. Returns 0, or -1 with errno set
/// (ENOSYS where the call does not exist).
int coffer_start_writeback(int fd, int64_t offset, int64_t count);

/// Waits until `count` bytes of `fd` from `offset` are written to the disk (starting what is
/// not started yet), then lets the page cache drop them (`POSIX_FADV_DONTNEED`): a large file
/// written once and not read back does not push what others use out of memory. Returns 0, or
/// the errno of a write that failed (EIO, ENOSPC): the kernel reports such an error once per
/// open file, so a later fsync of the same descriptor may not; the caller must keep it.
int coffer_drop_written(int fd, int64_t offset, int64_t count);

/// `syncfs(2)`: flushes every dirty page of the filesystem that holds `fd` (`sync(2)` where
/// there is no syncfs). Returns 0, or -1 with errno set.
int coffer_syncfs(int fd);
#endif
