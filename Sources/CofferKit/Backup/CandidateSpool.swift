import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The files a backup will record, in path order, kept in an unlinked scratch file instead of
/// memory: a library of ten million files costs the same memory as one of ten.
///
/// Written once while the library is walked (and merged with the parent snapshot), read once
/// while the pack is written. Each candidate is a few dozen bytes plus its path.
final class CandidateSpool {
    private let fd: Int32
    private let path: String
    private var buffer: [UInt8] = []
    private var written: Int64 = 0
    private var readOffset: Int64 = 0
    private var readBuffer: [UInt8] = []
    private var readPosition = 0
    private static let chunk = 1 << 20

    /// Creates the file in `directory` and unlinks it at once: it goes with the descriptor,
    /// even after a `kill -9`.
    init(in directory: String) throws {
        path = directory + "/candidates-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CofferError.system("create scratch file", path, errno: errno) }
        unlink(path)
        buffer.reserveCapacity(Self.chunk + 4096)
    }

    deinit { close(fd) }

    func append(_ candidate: BackupRunner.Candidate) throws {
        func put<T: FixedWidthInteger>(_ value: T) {
            withUnsafeBytes(of: value.littleEndian) { buffer.append(contentsOf: $0) }
        }
        put(UInt32(candidate.relative.count))
        buffer.append(contentsOf: candidate.relative)
        put(candidate.info.size)
        put(candidate.info.modified.bitPattern)
        put(candidate.info.inode)
        put(candidate.info.mode)
        if let reuse = candidate.reuse {
            buffer.append(1)
            put(reuse.sha256.a); put(reuse.sha256.b); put(reuse.sha256.c); put(reuse.sha256.d)
            put(reuse.pack)
            put(reuse.offset)
            put(reuse.mode)
        } else {
            buffer.append(0)
        }
        if buffer.count >= Self.chunk { try flush() }
    }

    private func flush() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try RawIO.writeAll(fd, $0.baseAddress!, $0.count, path: path) }
        written += Int64(buffer.count)
        buffer.removeAll(keepingCapacity: true)
    }

    /// Ends writing; reading starts at the first candidate.
    func rewind() throws {
        try flush()
        buffer = []
        readOffset = 0
        readBuffer = []
        readPosition = 0
    }

    /// Makes sure `count` bytes are buffered; false at the end of the file.
    private func fill(_ count: Int) throws -> Bool {
        if readBuffer.count - readPosition >= count { return true }
        let left = Array(readBuffer[readPosition...])
        let want = Int(min(Int64(max(Self.chunk, count)), written - readOffset))
        guard want > 0 else { return false }
        var chunk = [UInt8](repeating: 0, count: want)
        try chunk.withUnsafeMutableBytes { try RawIO.preadAll(fd, $0.baseAddress!, want, at: readOffset, path: path) }
        readOffset += Int64(want)
        readBuffer = left + chunk
        readPosition = 0
        return readBuffer.count >= count
    }

    func next() throws -> BackupRunner.Candidate? {
        func get<T: FixedWidthInteger>(_: T.Type) -> T {
            var value: T = 0
            withUnsafeMutableBytes(of: &value) { target in
                readBuffer.withUnsafeBytes { source in
                    target.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[readPosition..<readPosition + MemoryLayout<T>.size]))
                }
            }
            readPosition += MemoryLayout<T>.size
            return T(littleEndian: value)
        }
        guard try fill(4) else { return nil }
        let length = Int(get(UInt32.self))
        // Path, size, mtime, inode, mode, flag; then, when reused, digest, pack, offset, mode.
        guard try fill(length + 8 + 8 + 8 + 4 + 1) else {
            throw CofferError(.failed, operation: "read scratch file", subject: path, cause: "it ends early")
        }
        let relative = Array(readBuffer[readPosition..<readPosition + length])
        readPosition += length
        var info = FileInfo(kind: .regular, size: 0, mode: 0, modified: 0, inode: 0)
        info.size = get(Int64.self)
        info.modified = Double(bitPattern: get(UInt64.self))
        info.inode = get(UInt64.self)
        info.mode = get(UInt32.self)
        let reused = readBuffer[readPosition] == 1
        readPosition += 1
        var candidate = BackupRunner.Candidate(relative: relative, info: info)
        if reused {
            guard try fill(32 + 4 + 8 + 4) else {
                throw CofferError(.failed, operation: "read scratch file", subject: path, cause: "it ends early")
            }
            var digest = SHA256Value(hex: "")
            digest.a = get(UInt64.self); digest.b = get(UInt64.self); digest.c = get(UInt64.self); digest.d = get(UInt64.self)
            candidate.reuse = BackupRunner.Reuse(sha256: digest, pack: get(Int32.self), offset: get(Int64.self), mode: get(UInt32.self))
        }
        return candidate
    }
}
