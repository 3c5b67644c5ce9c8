import CLinux
import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The few facts Coffer reads about a file, from `lstat` (links are not followed).
public struct FileInfo: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case regular, directory, symlink, other }
    public var kind: Kind
    public var size: Int64
    public var mode: UInt32
    /// Seconds since the epoch.
    public var modified: Double
    public var inode: UInt64
    /// The owner's user id.
    public var owner: UInt32 = 0

    init(kind: Kind, size: Int64, mode: UInt32, modified: Double, inode: UInt64) {
        self.kind = kind
        self.size = size
        self.mode = mode
        self.modified = modified
        self.inode = inode
    }

    init(_ st: stat) {
        switch st.st_mode & S_IFMT {
        case S_IFREG: kind = .regular
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symlink
        default: kind = .other
        }
        size = Int64(st.st_size)
        mode = UInt32(st.st_mode)
        #if canImport(Glibc)
        modified = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
        #else
        modified = Double(st.st_mtimespec.tv_sec) + Double(st.st_mtimespec.tv_nsec) / 1e9
        #endif
        inode = UInt64(st.st_ino)
        owner = UInt32(st.st_uid)
    }
}

/// Thin POSIX helpers on byte paths. Errors carry `errno`; EINTR is retried here.
public enum FileSystem {
    /// `lstat(path)` (or `stat` with `followLinks`): the file's facts, or the errno.
    public static func status(_ path: PathBytes, followLinks: Bool = false) -> Result<FileInfo, Errno> {
        var st = stat()
        let rc = path.withCPath { followLinks ? stat($0, &st) : lstat($0, &st) }
        return rc == 0 ? .success(FileInfo(st)) : .failure(Errno(rawValue: errno))
    }

    public static func status(_ path: String) -> Result<FileInfo, Errno> { status(Array(path.utf8)) }

    /// `flock` without waiting (EINTR retried): 0 once the lock is taken, else the errno
    /// (EWOULDBLOCK: another open file holds it).
    static func tryLock(_ fd: Int32, exclusive: Bool = true) -> Int32 {
        while flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 {
            if errno != EINTR { return errno }
        }
        return 0
    }

    /// `path`, or its nearest ancestor that exists: where a path about to be made will be.
    static func nearestExisting(_ path: String) -> String {
        var probe = path
        while status(probe).isFailure, probe != "/", !probe.isEmpty { probe = PathText.parent(probe) }
        return probe
    }

    /// The bytes of free space available to an unprivileged user on the filesystem of `path`.
    public static func freeSpace(_ path: String) -> Result<DiskSpace, Errno> {
        var st = statvfs()
        let rc = statvfs(path, &st)
        guard rc == 0 else { return .failure(Errno(rawValue: errno)) }
        let unit = UInt64(st.f_frsize)
        return .success(DiskSpace(available: UInt64(st.f_bavail) * unit, total: UInt64(st.f_blocks) * unit))
    }

    /// Creates a directory with exactly `mode`, whatever the umask; an existing directory is fine.
    public static func makeDirectory(_ path: String, mode: mode_t) throws {
        if mkdir(path, mode) != 0 {
            let code = errno
            guard code == EEXIST, case .success(let info) = status(path), info.kind == .directory else {
                throw CofferError.system("create directory", path, errno: code)
            }
        }
        if chmod(path, mode) != 0 {
            throw CofferError.system("set permissions of", path, errno: errno)
        }
    }

    /// Creates the directory and its missing parents (parents get 0755).
    public static func makeDirectories(_ path: String, mode: mode_t) throws {
        let parent = PathText.parent(path)
        if !parent.isEmpty, parent != path, case .failure = status(parent) {
            try makeDirectories(parent, mode: 0o755)
        }
        try makeDirectory(path, mode: mode)
    }

    /// Flushes a directory's entries to disk (after a rename or create inside it).
    public static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw CofferError.system("open directory", path, errno: errno) }
        defer { close(fd) }
        if fsync(fd) != 0 { throw CofferError.system("sync directory", path, errno: errno) }
    }

    /// Removes a directory tree (names as bytes, links not followed). Missing is fine.
    public static func removeTree(_ path: String) { removeTree(PathBytes(path.utf8)) }

    /// Removes the folders directly in `directory` whose names start with `prefix` (what runs
    /// killed before they finished left behind). Best effort.
    static func removeDirectories(in directory: String, named prefix: String) {
        try? DirectoryWalker(root: directory).list { entry in
            guard entry.kind == .directory, entry.relativePath.starts(with: PathBytes(prefix.utf8)) else { return }
            removeTree(PathBytes(directory.utf8).appendingComponent(entry.relativePath))
        }
    }

    /// Removes a file or a directory tree without following symlinks (a link is removed, not
    /// what it points to). Best effort: the caller checks what is left.
    public static func removeTree(_ root: PathBytes) {
        guard case .success(let info) = status(root) else { return }
        guard info.kind == .directory else { _ = root.withCPath { unlink($0) }; return }
        var directories: [PathBytes] = []
        try? DirectoryWalker(root: root).walk { entry in
            let full = root.appendingComponent(entry.relativePath)
            if entry.kind == .directory {
                _ = full.withCPath { chmod($0, 0o700) }
                directories.append(full)
            } else {
                _ = full.withCPath { unlink($0) }
            }
        }
        for directory in directories.reversed() { _ = directory.withCPath { rmdir($0) } }
        _ = root.withCPath { rmdir($0) }
    }
}

public struct DiskSpace: Sendable, Equatable {
    public var available: UInt64
    public var total: UInt64
}

/// A descriptor on a folder, opened before files are written there and kept for the `syncfs`
/// that makes them durable (Linux `syncfs`; `sync` elsewhere). Since Linux 5.8 `syncfs` reports
/// a writeback error (EIO, ENOSPC of a thin volume) to each descriptor once: to one opened
/// before the error, or to one opened after it while no other `syncfs` has seen it yet. With
/// syncs in the background (``BackgroundSync``) an error can be seen before the final sync,
/// so that one goes through a descriptor opened before the first file was written.
final class FilesystemSync {
    let path: String
    let fd: Int32

    init(_ path: String) throws {
        self.path = path
        fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CofferError.system("open", path, errno: errno) }
    }

    deinit { close(fd) }

    func sync() throws {
        if coffer_syncfs(fd) != 0 { throw CofferError.system("sync filesystem of", path, errno: errno) }
    }
}
