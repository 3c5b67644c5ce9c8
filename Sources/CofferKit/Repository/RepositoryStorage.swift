import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where bytes go, a buffer at a time: a file, or an object being written.
public protocol ByteSink: AnyObject {
    /// Where the bytes go, for messages.
    var display: String { get }
    func write(_ bytes: UnsafeRawBufferPointer) throws
}

/// A local file open for writing (the caller closes the descriptor).
public final class FileSink: ByteSink {
    public let fd: Int32
    public let display: String
    public init(fd: Int32, path: String) { self.fd = fd; self.display = path }
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        try RawIO.writeAll(fd, base, bytes.count, path: display)
    }
}

/// One stored object, read by position: record cursors and pack readers take what they need,
/// so a backend that fetches over the network (ranged GETs) reads only those bytes.
public protocol ObjectReader: AnyObject {
    /// The object, for messages (a path, or an s3:// address).
    var display: String { get }
    var size: Int64 { get }
    /// Exactly `count` bytes at `offset`; throws when the object ends before.
    func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int64) throws
}

/// A local file read with pread; the descriptor is closed with the reader.
public final class FileObjectReader: ObjectReader {
    public let display: String
    public let size: Int64
    let fd: Int32

    public init(path: String) throws {
        fd = try RawIO.openForReading(path)
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let code = errno
            close(fd)
            throw CofferError.system("stat", path, errno: code)
        }
        display = path
        size = Int64(info.st_size)
    }

    deinit { close(fd) }

    public func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int64) throws {
        try RawIO.preadAll(fd, buffer, count, at: offset, path: display)
    }
}

/// An object being written: invisible until its storage commits it.
public protocol PendingObject: ByteSink {
    /// The object's name in the repository (`packs/ID.tar`).
    var name: String { get }
}

/// Where a repository's objects live. Object names are relative (`packs/ID.tar`,
/// `snapshots/ID.jsonl`, `config.json`).
///
/// A backend MUST make an object visible only whole: ``commit(_:)`` publishes it atomically,
/// and nothing written before it is listed or readable. Objects are never changed in place;
/// a new version is a new name. ``delete(_:)`` of a missing object is not an error.
public protocol RepositoryStorage: AnyObject {
    /// A human description (the directory or URL), for messages.
    var location: String { get }
    /// Starts a new object; write its bytes to the pending object. Invisible until committed.
    func create(_ name: String) throws -> PendingObject
    /// Publishes a pending object whole.
    func commit(_ pending: PendingObject) throws
    /// Drops a pending object.
    func discard(_ pending: PendingObject)
    /// The whole object.
    func get(_ name: String) throws -> Data
    /// `length` bytes from `offset` (a ranged get).
    func get(_ name: String, offset: Int64, length: Int) throws -> Data
    /// `length` bytes from `offset`, handed to `body` a buffer at a time (a ranged get of any
    /// size in constant memory). Throws when the object ends before `offset + length`.
    func read(_ name: String, offset: Int64, length: Int64, _ body: (UnsafeRawBufferPointer) throws -> Void) throws
    /// Opens the object for reads by position.
    func openReader(_ name: String) throws -> ObjectReader
    /// Names of committed objects under a folder (`snapshots/`), sorted.
    func list(_ folder: String) throws -> [String]
    func size(_ name: String) throws -> Int64?
    func delete(_ name: String) throws
    /// The repository's own local folder for a run's scratch files (the database copy,
    /// spools), or `nil` when it has none (a bucket): the run then makes its own.
    var scratchDirectory: String? { get }
    /// One run at a time, held while the returned object is referenced.
    func lock(exclusive: Bool, command: String) throws -> AnyObject
    /// Removes what runs killed before they committed left behind. Call under the exclusive lock.
    func sweepTemporaryFiles()
}

extension RepositoryStorage {
    /// `display` of an object, for messages.
    func display(_ name: String) -> String { location + "/" + name }

    /// Refuses a negative range (from a damaged record) before any read.
    func checkRange(_ name: String, offset: Int64, length: Int64) throws {
        guard offset >= 0, length >= 0 else {
            throw CofferError.missing("read", display(name), cause: "bad range \(offset)+\(length) (a damaged record?)")
        }
    }
}

/// An object being written to a local repository: a file in its `tmp/`.
final class LocalPendingObject: PendingObject {
    let name: String
    let temporaryPath: String
    let fd: Int32
    var closed = false
    var display: String { temporaryPath }

    init(name: String, temporaryPath: String, fd: Int32) {
        self.name = name
        self.temporaryPath = temporaryPath
        self.fd = fd
    }

    deinit { if !closed { close(fd) } }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        try RawIO.writeAll(fd, base, bytes.count, path: temporaryPath)
        writeback.wrote(bytes.count, fd: fd)
    }

    /// A pack is written once and not read back: what reached the disk leaves the page cache.
    var writeback = EarlyWriteback(dropsBehind: true)
}

/// A repository in a local directory.
public final class LocalStorage: RepositoryStorage {
    public let root: String
    public var location: String { root }

    /// Where pending objects are written; swept by ``sweepTemporaryFiles()``.
    var temporaryDirectory: String { root + "/tmp" }
    public var scratchDirectory: String? { temporaryDirectory }

    /// An flock on `lock`: it dies with its process.
    public func lock(exclusive: Bool, command: String) throws -> AnyObject {
        try RepositoryLock.acquire(root + "/lock", exclusive: exclusive, command: command)
    }

    public init(root: String) { self.root = root }

    func path(_ name: String) -> String { root + "/" + name }

    public func create(_ name: String) throws -> PendingObject {
        let temporary = temporaryDirectory + "/\(getpid())-\(UInt64.random(in: 0...UInt64.max))-" + name.replacingOccurrences(of: "/", with: "_")
        return LocalPendingObject(name: name, temporaryPath: temporary, fd: try RawIO.createNew(temporary))
    }

    public func commit(_ object: PendingObject) throws {
        let pending = object as! LocalPendingObject
        try RawIO.sync(pending.fd, path: pending.temporaryPath)
        // A write error the early writeback saw is not reported again by the fsync.
        if let code = pending.writeback.failure { throw CofferError.system("write", pending.temporaryPath, errno: code) }
        guard fchmod(pending.fd, 0o444) == 0 else { throw CofferError.system("set permissions of", pending.temporaryPath, errno: errno) }
        close(pending.fd)
        pending.closed = true
        let final = path(pending.name)
        guard rename(pending.temporaryPath, final) == 0 else { throw CofferError.system("rename into", final, errno: errno) }
        try FileSystem.syncDirectory(PathText.parent(final))
    }

    public func discard(_ object: PendingObject) {
        guard let pending = object as? LocalPendingObject else { return }
        if !pending.closed { close(pending.fd); pending.closed = true }
        unlink(pending.temporaryPath)
    }

    public func get(_ name: String) throws -> Data {
        let fd = try RawIO.openForReading(path(name))
        defer { close(fd) }
        var data = Data()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = try RawIO.read(fd, buffer.baseAddress!, buffer.count, path: path(name))
            if n == 0 { return data }
            data.append(buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), count: n)
        }
    }

    public func get(_ name: String, offset: Int64, length: Int) throws -> Data {
        let fd = try RawIO.openForReading(path(name))
        defer { close(fd) }
        var data = Data(count: length)
        try data.withUnsafeMutableBytes { try RawIO.preadAll(fd, $0.baseAddress!, length, at: offset, path: path(name)) }
        return data
    }

    public func read(_ name: String, offset: Int64, length: Int64, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        try checkRange(name, offset: offset, length: length)
        let fd = try RawIO.openForReading(path(name))
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(max(1, min(length, 1 << 20))), alignment: 64)
        defer { buffer.deallocate() }
        var done: Int64 = 0
        while done < length {
            let n = Int(min(Int64(buffer.count), length - done))
            try RawIO.preadAll(fd, buffer.baseAddress!, n, at: offset + done, path: path(name))
            try body(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            done += Int64(n)
        }
    }

    public func openReader(_ name: String) throws -> ObjectReader { try FileObjectReader(path: path(name)) }

    public func list(_ folder: String) throws -> [String] {
        var names: [String] = []
        do {
            try DirectoryWalker(root: path(folder)).list { entry in
                guard entry.kind == .regular, let name = String(validating: entry.relativePath, as: UTF8.self) else { return }
                names.append(folder + "/" + name)
            }
        } catch let error as CofferError {
            if case .failure(let errno) = FileSystem.status(path(folder)), errno == .noSuchFileOrDirectory { return [] }
            throw error
        }
        return names.sorted()
    }

    public func size(_ name: String) throws -> Int64? {
        switch FileSystem.status(path(name)) {
        case .success(let info): return info.size
        case .failure(let errno) where errno == .noSuchFileOrDirectory: return nil
        case .failure(let errno): throw CofferError(.failed, operation: "stat", subject: path(name), cause: errno.description)
        }
    }

    public func delete(_ name: String) throws {
        if unlink(path(name)) != 0, errno != ENOENT { throw CofferError.system("delete", path(name), errno: errno) }
    }

    /// Removes what runs killed before they committed left in `tmp/` (files, and the scratch
    /// folders of `verify`). Call under the exclusive lock.
    public func sweepTemporaryFiles() {
        try? DirectoryWalker(root: temporaryDirectory).list { entry in
            let path = PathBytes(temporaryDirectory.utf8).appendingComponent(entry.relativePath)
            if entry.kind == .directory { FileSystem.removeTree(path) } else { _ = path.withCPath { unlink($0) } }
        }
    }
}
