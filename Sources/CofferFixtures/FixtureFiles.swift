import CofferKit
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// File writing on byte paths, for the generator and for tests that damage volumes.
public enum FixtureFiles {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func cPath<T>(_ path: [UInt8], _ body: (UnsafePointer<CChar>) -> T) -> T {
        var copy = path
        copy.append(0)
        return copy.withUnsafeBufferPointer { $0.withMemoryRebound(to: CChar.self) { body($0.baseAddress!) } }
    }

    /// `mkdir -p` with mode 0755, on bytes.
    public static func makeDirectories(_ path: [UInt8]) throws {
        var prefix: [UInt8] = []
        for (index, byte) in path.enumerated() {
            prefix.append(byte)
            let atEnd = index == path.count - 1
            guard (byte == UInt8(ascii: "/") && index > 0) || atEnd else { continue }
            let dir = byte == UInt8(ascii: "/") ? Array(prefix.dropLast()) : prefix
            if cPath(dir, { mkdir($0, 0o755) }) != 0, errno != EEXIST {
                throw Failure(description: "mkdir \(PathText.display(dir)): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// Writes `size` pseudo-random bytes to a new file (mode 0644), creating parents.
    public static func write(_ path: [UInt8], size: Int, random: inout RandomSource, buffer: UnsafeMutableRawBufferPointer) throws {
        if let slash = path.lastIndex(of: UInt8(ascii: "/")), slash > 0 { try makeDirectories(Array(path[..<slash])) }
        let fd = cPath(path) { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        guard fd >= 0 else { throw Failure(description: "create \(PathText.display(path)): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var remaining = size
        while remaining > 0 {
            let n = min(remaining, buffer.count)
            random.fill(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
            let written = Glibc.write(fd, buffer.baseAddress!, n)
            guard written > 0 else { throw Failure(description: "write \(PathText.display(path)): \(String(cString: strerror(errno)))") }
            remaining -= written
        }
    }

    /// A sparse file of `size` bytes with a little data at both ends.
    public static func writeSparse(_ path: [UInt8], size: Int64) throws {
        if let slash = path.lastIndex(of: UInt8(ascii: "/")), slash > 0 { try makeDirectories(Array(path[..<slash])) }
        let fd = cPath(path) { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        guard fd >= 0 else { throw Failure(description: "create \(PathText.display(path)): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let head = Array("coffer sparse head\n".utf8), tail = Array("coffer sparse tail\n".utf8)
        guard ftruncate(fd, off_t(size)) == 0,
              pwrite(fd, head, head.count, 0) == head.count,
              pwrite(fd, tail, tail.count, off_t(size) - off_t(tail.count)) == tail.count else {
            throw Failure(description: "write sparse \(PathText.display(path)): \(String(cString: strerror(errno)))")
        }
    }

    /// Sets a file's modification time (seconds since the epoch).
    public static func setModified(_ path: [UInt8], _ seconds: Double) {
        var times = [timespec(tv_sec: Int(seconds), tv_nsec: 0), timespec(tv_sec: Int(seconds), tv_nsec: 0)]
        _ = cPath(path) { utimensat(AT_FDCWD, $0, &times, AT_SYMLINK_NOFOLLOW) }
    }

    /// Appends bytes to an existing file.
    public static func append(_ path: [UInt8], _ bytes: [UInt8]) throws {
        let fd = cPath(path) { open($0, O_WRONLY | O_APPEND | O_CLOEXEC) }
        guard fd >= 0 else { throw Failure(description: "open \(PathText.display(path)): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard Glibc.write(fd, bytes, bytes.count) == bytes.count else { throw Failure(description: "append failed") }
    }

    public static func remove(_ path: [UInt8]) throws {
        guard cPath(path, { unlink($0) }) == 0 else {
            throw Failure(description: "unlink \(PathText.display(path)): \(String(cString: strerror(errno)))")
        }
    }
}
