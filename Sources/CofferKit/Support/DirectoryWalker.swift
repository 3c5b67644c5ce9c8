import Foundation
import SystemPackage
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Walks a directory tree with `openat`/`readdir`, yielding names as bytes.
///
/// It never follows symbolic links, holds one directory open at a time plus a queue of
/// relative paths still to visit, and reads no file contents, so memory stays proportional to
/// the breadth of the tree, not to the number of files. Entries come in `readdir` order.
public struct DirectoryWalker {
    public struct Entry {
        /// Path relative to the root, bytes, no leading slash.
        public var relativePath: PathBytes
        public var kind: FileInfo.Kind
    }

    public enum Problem: Error {
        case cannotOpen(relativePath: PathBytes, Errno)
    }

    /// The root as shown in messages.
    public let root: String
    /// The root as the bytes passed to the kernel (a name need not be UTF-8).
    public let rootPath: PathBytes

    public init(root: String) { self.root = root; rootPath = PathBytes(root.utf8) }

    public init(root: PathBytes) { self.root = PathText.display(root); rootPath = root }

    /// Calls `visit` for every entry below the root (directories too, before their contents).
    /// A subdirectory that cannot be opened is passed to `problem` and skipped; the root that
    /// cannot be opened throws.
    public func walk(
        problem: (Problem) -> Void = { _ in },
        visit: (Entry) throws -> Void
    ) throws {
        let rootFD = rootPath.withCPath { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        guard rootFD >= 0 else { throw CofferError.system("open directory", root, errno: errno) }
        defer { close(rootFD) }

        var pending: [PathBytes] = [[]]
        while let relative = pending.popLast() {
            let fd: Int32
            if relative.isEmpty {
                fd = dup(rootFD)
            } else {
                fd = relative.withCPath { openat(rootFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            }
            guard fd >= 0, let dir = fdopendir(fd) else {
                let code = errno
                if fd >= 0 { close(fd) }
                problem(.cannotOpen(relativePath: relative, Errno(rawValue: code)))
                continue
            }
            defer { closedir(dir) }
            while let entry = readdir(dir) {
                let name = Self.name(of: entry)
                if name == [0x2E] || name == [0x2E, 0x2E] { continue }
                let path = relative.isEmpty ? name : relative.appendingComponent(name)
                let kind = Self.kind(of: entry, name: name, in: dirfd(dir))
                try visit(Entry(relativePath: path, kind: kind))
                if kind == .directory { pending.append(path) }
            }
        }
    }

    /// Calls `visit` for each entry directly in the root (no descent).
    public func list(_ visit: (Entry) throws -> Void) throws {
        let fd = rootPath.withCPath { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        guard fd >= 0 else { throw CofferError.system("open directory", root, errno: errno) }
        guard let dir = fdopendir(fd) else {
            let code = errno
            close(fd)
            throw CofferError.system("open directory", root, errno: code)
        }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = Self.name(of: entry)
            if name == [0x2E] || name == [0x2E, 0x2E] { continue }
            try visit(Entry(relativePath: name, kind: Self.kind(of: entry, name: name, in: dirfd(dir))))
        }
    }

    static func name(of entry: UnsafeMutablePointer<dirent>) -> PathBytes {
        withUnsafePointer(to: &entry.pointee.d_name) { pointer in
            pointer.withMemoryRebound(to: UInt8.self, capacity: Int(NAME_MAX) + 1) { bytes in
                Array(UnsafeBufferPointer(start: bytes, count: strlen(UnsafeRawPointer(bytes).assumingMemoryBound(to: CChar.self))))
            }
        }
    }

    static func kind(of entry: UnsafeMutablePointer<dirent>, name: PathBytes, in dirFD: Int32) -> FileInfo.Kind {
        switch Int32(entry.pointee.d_type) {
        case Int32(DT_REG): return .regular
        case Int32(DT_DIR): return .directory
        case Int32(DT_LNK): return .symlink
        case Int32(DT_UNKNOWN):
            var st = stat()
            let rc = name.withCPath { fstatat(dirFD, $0, &st, AT_SYMLINK_NOFOLLOW) }
            return rc == 0 ? FileInfo(st).kind : .other
        default: return .other
        }
    }
}
