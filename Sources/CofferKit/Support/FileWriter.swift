import CLinux
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// POSIX I/O helpers on raw descriptors: whole writes and reads with EINTR retried here, and
/// errors that carry the path. Hot paths use these with reusable buffers.
public enum RawIO {
    /// Writes all `count` bytes or throws (ENOSPC and EIO included). The path is built only
    /// for an error.
    public static func writeAll(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int, path: @autoclosure () -> String) throws {
        var done = 0
        while done < count {
            let n = Glibc.write(fd, buffer + done, count - done)
            if n < 0 {
                if errno == EINTR { continue }
                let code = errno
                throw CofferError.system("write", path(), errno: code)
            }
            done += n
        }
    }

    /// Reads up to `count` bytes; 0 at end of file.
    public static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, path: @autoclosure () -> String) throws -> Int {
        while true {
            let n = Glibc.read(fd, buffer, count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            let code = errno
            throw CofferError.system("read", path(), errno: code)
        }
    }

    /// Reads exactly `count` bytes at `offset`, or throws when the file ends first.
    public static func preadAll(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, at offset: Int64, path: String) throws {
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw CofferError.system("read", path, errno: errno)
            }
            if n == 0 { throw CofferError.missing("read", path, cause: "file ends early") }
            done += n
        }
    }

    public static func sync(_ fd: Int32, path: String) throws {
        if fsync(fd) != 0 { throw CofferError.system("sync", path, errno: errno) }
    }

    /// Opens for reading, or throws naming the path.
    public static func openForReading(_ path: String) throws -> Int32 {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CofferError.system("open", path, errno: errno) }
        return fd
    }

    /// Creates a new file (it must not exist), mode 0600 until it is complete.
    public static func createNew(_ path: String) throws -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CofferError.system("create", path, errno: errno) }
        return fd
    }

    /// fsync + rename + fsync of the directory: the file appears whole or not at all.
    public static func publish(_ temporary: String, as final: String) throws {
        let fd = open(temporary, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CofferError.system("open", temporary, errno: errno) }
        defer { close(fd) }
        try sync(fd, path: temporary)
        guard rename(temporary, final) == 0 else { throw CofferError.system("rename into", final, errno: errno) }
        try FileSystem.syncDirectory(PathText.parent(final))
    }
}

/// Lets the disk start on a file's bytes while more are still being written: every
/// ``window`` bytes, `sync_file_range(SYNC_FILE_RANGE_WRITE)` of the last window, which does not
/// wait. Durability still comes from the `fsync` (or `syncfs`) at the end, which then has
/// little left to wait for: without it the whole file sits dirty in the page cache until that
/// call, which then waits for all of it (a 216 MB pack took 0.12 s to sync after its last
/// write; a full backup of it went from 0.35 to 0.25 s).
///
/// With ``dropsBehind`` (a pack: gigabytes written once, never read back by this run), the
/// windows started ``dropLag`` windows ago are waited for and dropped from the page cache, so
/// the pack does not push the media still to be read, the database and the pipeline's own
/// pages out of memory (a 10 GB pack filled the cache, and the last media files of the same
/// run were read from the disk at 70 MB/s). A write error met while waiting is kept in
/// ``failure``: the kernel reports it once per open file, so the final fsync may not.
struct EarlyWriteback {
    static let window: Int64 = 8 << 20
    static let dropLag: Int64 = 4
    /// Smaller files are left to the final sync: a call each would cost more than it saves.
    static let smallestFile: Int64 = 64 << 10
    var dropsBehind = false
    private var written: Int64 = 0
    private var started: Int64 = 0
    private var dropped: Int64 = 0
    /// The errno of a write the disk failed, seen while waiting for a window (``dropsBehind``).
    private(set) var failure: Int32?

    init(dropsBehind: Bool = false) { self.dropsBehind = dropsBehind }

    /// Keeps the first write error the disk reported while a window was waited for.
    mutating func noteFailure(_ code: Int32) {
        if failure == nil { failure = code }
    }

    /// After `count` more bytes were written to `fd` (at its end). Returns the range whose
    /// writeback it started, if any.
    @discardableResult
    mutating func wrote(_ count: Int, fd: Int32) -> Range<Int64>? {
        written += Int64(count)
        return written - started >= Self.window ? start(fd) : nil
    }

    /// After the file's last write: starts what is left, unless the file is small.
    @discardableResult
    mutating func finish(fd: Int32) -> Range<Int64>? {
        written >= Self.smallestFile && written > started ? start(fd) : nil
    }

    private mutating func start(_ fd: Int32) -> Range<Int64> {
        // Best effort: where it is not supported (or fails) only the moment the bytes reach
        // the disk changes; the final sync reports any write error.
        _ = coffer_start_writeback(fd, started, written - started)
        defer { started = written }
        let settled = started - Self.window * Self.dropLag
        if dropsBehind, settled > dropped {
            let code = coffer_drop_written(fd, dropped, settled - dropped)
            if code != 0 { noteFailure(code) }
            dropped = settled
        }
        return started..<written
    }
}

/// Many small files written one after another (a restore's staged tree): a `syncfs` on a
/// thread of its own whenever about ``threshold`` more bytes (a file counting at least a
/// block) were written since the last one started, so the disk writes the tree while it is
/// being made and the final `syncfs` has little left to wait for. `sync_file_range` cannot
/// do this: it starts one file's data, not its inode and directory entry, and a call per small
/// file would cost more than it saves. One at a time; ``wait()`` before the final sync, which
/// must be made through another descriptor, opened before the files were written
/// (``FilesystemSync``): `syncfs` reports an error once per descriptor, so that one still
/// reports any write error these calls met.
final class BackgroundSync: @unchecked Sendable {
    static let threshold: Int64 = 64 << 20
    static let blockSize: Int64 = 4096
    let fd: Int32
    private var sinceLast: Int64 = 0
    private let lock = NSLock()
    private var running = false
    private let group = DispatchGroup()
    private(set) var started = 0

    /// `fd`: any descriptor on the filesystem; the caller keeps it open until ``wait()``.
    init(fd: Int32) { self.fd = fd }

    /// After a file of `size` bytes was written.
    func wrote(_ size: Int64) {
        sinceLast += max(size, Self.blockSize)
        guard sinceLast >= Self.threshold else { return }
        lock.lock()
        defer { lock.unlock() }
        guard !running else { return }
        running = true
        sinceLast = 0
        started += 1
        DispatchQueue.global().async(group: group) { [self] in
            // Best effort: an error here is reported again by the final syncfs (see above).
            _ = coffer_syncfs(fd)
            lock.lock()
            running = false
            lock.unlock()
        }
    }

    func wait() { group.wait() }
}
