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
        /// The open directory holding the entry and its name there, when the walk keeps them
        /// (``walkSorted``): valid only while the entry is visited.
        var parent: (fd: Int32, name: PathBytes)?

        /// The entry's status (not following a link), looked up relative to its open directory
        /// when the walk has it (no path resolution from the root), otherwise by `root` + path.
        public func status(root: PathBytes) -> Result<FileInfo, Errno> {
            guard let parent else { return FileSystem.status(root.appendingComponent(relativePath)) }
            var st = stat()
            let rc = parent.name.withCPath { fstatat(parent.fd, $0, &st, AT_SYMLINK_NOFOLLOW) }
            return rc == 0 ? .success(FileInfo(st)) : .failure(Errno(rawValue: errno))
        }
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
        let rootFD = try openRoot()
        defer { close(rootFD) }

        var pending: [PathBytes] = [[]]
        while let relative = pending.popLast() {
            try Self.forEachEntry(in: relative, under: rootFD, problem: problem) { name, kind in
                let path = relative.isEmpty ? name : relative.appendingComponent(name)
                try visit(Entry(relativePath: path, kind: kind))
                if kind == .directory { pending.append(path) }
            }
        }
    }

    private func openRoot() throws -> Int32 {
        let fd = rootPath.withCPath { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        guard fd >= 0 else { throw CofferError.system("open directory", root, errno: errno) }
        return fd
    }

    /// Calls `body` with each entry's name and kind in the directory `relative` to the root, in
    /// `readdir` order (`.` and `..` left out). A directory that cannot be opened goes to
    /// `problem`, and the result is false.
    @discardableResult
    private static func forEachEntry(in relative: PathBytes, under rootFD: Int32, problem: (Problem) -> Void,
                                     _ body: (PathBytes, FileInfo.Kind) throws -> Void) rethrows -> Bool {
        guard let fd = openDirectory(relative, under: rootFD, problem: problem) else { return false }
        return try forEachEntry(consuming: fd, relative: relative, problem: problem, body)
    }

    /// Opens the directory `relative` to the root (the root itself when empty), never through
    /// a link; one that cannot be opened goes to `problem`.
    private static func openDirectory(_ relative: PathBytes, under rootFD: Int32, problem: (Problem) -> Void) -> Int32? {
        let fd = relative.isEmpty ? dup(rootFD)
            : relative.withCPath { openat(rootFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else {
            problem(.cannotOpen(relativePath: relative, Errno(rawValue: errno)))
            return nil
        }
        return fd
    }

    /// Like ``forEachEntry(in:under:problem:_:)`` for a directory open as `fd`, which the
    /// listing takes over (it is closed here).
    @discardableResult
    private static func forEachEntry(consuming fd: Int32, relative: PathBytes, problem: (Problem) -> Void,
                                     _ body: (PathBytes, FileInfo.Kind) throws -> Void) rethrows -> Bool {
        guard let dir = fdopendir(fd) else {
            let code = errno
            close(fd)
            problem(.cannotOpen(relativePath: relative, Errno(rawValue: code)))
            return false
        }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = name(of: entry)
            if name == [0x2E] || name == [0x2E, 0x2E] { continue }
            try body(name, kind(of: entry, name: name, in: dirfd(dir)))
        }
        return true
    }

    /// Like ``walk(problem:visit:)``, but in the byte order of the relative paths (what
    /// `lexicographicallyPrecedes` gives on the whole paths), depth first. Each directory's
    /// entries are read and sorted when it is entered, so memory holds the directories on the
    /// way down, not the tree. A directory sorts as its name followed by `/`: its subtree is
    /// one contiguous run of paths, placed where `name/` falls among its siblings.
    /// `descend` says whether a directory's contents are wanted (it is still visited).
    public func walkSorted(
        problem: (Problem) -> Void = { _ in },
        descend: (PathBytes) -> Bool = { _ in true },
        visit: (Entry) throws -> Void
    ) throws {
        let rootFD = try openRoot()
        defer { close(rootFD) }

        // Each level keeps its directory open (as many descriptors as the tree is deep), so
        // its entries are looked at relative to it.
        struct Level {
            var prefix: PathBytes
            var fd: Int32
            var entries: [(name: PathBytes, kind: FileInfo.Kind)]
            var next = 0
        }
        func read(_ relative: PathBytes) -> Level? {
            guard let fd = Self.openDirectory(relative, under: rootFD, problem: problem) else { return nil }
            // The listing reads (and closes) a duplicate; `fd` stays open for the visits.
            var entries: [(name: PathBytes, kind: FileInfo.Kind)] = []
            guard Self.forEachEntry(consuming: dup(fd), relative: relative, problem: problem, { entries.append(($0, $1)) }) else {
                close(fd)
                return nil
            }
            entries.sort { Self.sortsBefore($0.name, $0.kind == .directory, $1.name, $1.kind == .directory) }
            return Level(prefix: relative, fd: fd, entries: entries)
        }
        guard let top = read([]) else { return }
        var stack = [top]
        defer { for level in stack { close(level.fd) } }
        while let level = stack.last {
            guard level.next < level.entries.count else {
                close(level.fd)
                stack.removeLast()
                continue
            }
            let (name, kind) = level.entries[level.next]
            stack[stack.count - 1].next += 1
            let path = level.prefix.isEmpty ? name : level.prefix.appendingComponent(name)
            try visit(Entry(relativePath: path, kind: kind, parent: (level.fd, name)))
            if kind == .directory, descend(path), let entries = read(path) { stack.append(entries) }
        }
    }

    /// Sibling order that makes a depth-first walk list whole paths in byte order: a
    /// directory compares as its name followed by `/`.
    static func sortsBefore(_ a: PathBytes, _ aIsDirectory: Bool, _ b: PathBytes, _ bIsDirectory: Bool) -> Bool {
        let common = min(a.count, b.count)
        for i in 0..<common where a[i] != b[i] { return a[i] < b[i] }
        if a.count == b.count { return false }
        // One name is a prefix of the other: the shorter one goes on with `/` or ends.
        if a.count < b.count { return aIsDirectory ? UInt8(ascii: "/") < b[common] : true }
        return bIsDirectory ? a[common] < UInt8(ascii: "/") : false
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
