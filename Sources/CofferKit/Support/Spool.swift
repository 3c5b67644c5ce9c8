import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Something a ``Spool`` can hold: it writes itself as bytes and reads itself back.
protocol SpoolElement {
    func write(to bytes: inout SpoolWriter)
    static func read(from bytes: inout SpoolReader) throws -> Self
}

struct SpoolWriter {
    fileprivate(set) var bytes: [UInt8] = []

    mutating func put<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.appendBytes($0) }
    }

    mutating func put(_ value: Double) { put(value.bitPattern) }

    /// Bytes with their length in front.
    mutating func put(bytes value: some Collection<UInt8>) {
        put(UInt32(value.count))
        bytes.append(contentsOf: value)
    }
}

struct SpoolReader {
    fileprivate let element: ArraySlice<UInt8>
    fileprivate var position: Int

    fileprivate init(_ element: ArraySlice<UInt8>) {
        self.element = element
        position = element.startIndex
    }

    mutating func get<T: FixedWidthInteger>(_: T.Type = T.self) throws -> T {
        let size = MemoryLayout<T>.size
        guard position + size <= element.endIndex else { throw SpoolDamaged() }
        var value: T = 0
        withUnsafeMutableBytes(of: &value) { target in
            element.withUnsafeBytes { source in
                let start = position - element.startIndex
                target.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[start..<start + size]))
            }
        }
        position += size
        return T(littleEndian: value)
    }

    mutating func getDouble() throws -> Double { Double(bitPattern: try get(UInt64.self)) }

    mutating func getBytes() throws -> [UInt8] {
        let count = Int(try get(UInt32.self))
        guard position + count <= element.endIndex else { throw SpoolDamaged() }
        defer { position += count }
        return Array(element[position..<position + count])
    }
}

struct SpoolDamaged: Error {}

/// A list written once and read back in order, kept in an unlinked scratch file instead of
/// memory: ten million elements cost the memory of ten. Backup spools the files it will store,
/// restore the files it will write.
final class Spool<Element: SpoolElement> {
    private let fd: Int32
    private let path: String
    private var buffer = SpoolWriter()
    /// One element's bytes, reused (a new one per element grew from nothing every time).
    private var payload = SpoolWriter()
    private var written: Int64 = 0
    private var readOffset: Int64 = 0
    private var readBuffer: [UInt8] = []
    private var readPosition = 0
    private static var chunk: Int { 1 << 20 }

    /// Creates the file in `directory` and unlinks it at once: it goes with the descriptor,
    /// even after a `kill -9`.
    init(in directory: String) throws {
        path = directory + "/spool-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CofferError.system("create scratch file", path, errno: errno) }
        unlink(path)
    }

    deinit { close(fd) }

    func append(_ element: Element) throws {
        payload.bytes.removeAll(keepingCapacity: true)
        element.write(to: &payload)
        buffer.put(bytes: payload.bytes)
        if buffer.bytes.count >= Self.chunk { try flush() }
    }

    private func flush() throws {
        guard !buffer.bytes.isEmpty else { return }
        try buffer.bytes.withUnsafeBytes { try RawIO.writeAll(fd, $0.baseAddress!, $0.count, path: path) }
        written += Int64(buffer.bytes.count)
        buffer.bytes.removeAll(keepingCapacity: true)
    }

    /// Ends writing (the first time); reading starts again at the first element.
    func rewind() throws {
        try flush()
        readOffset = 0
        readBuffer = []
        readPosition = 0
    }

    /// Makes sure `count` bytes are buffered; false at the end of the file.
    private func fill(_ count: Int) throws -> Bool {
        if readBuffer.count - readPosition >= count { return true }
        let left = readBuffer[readPosition...]
        let want = Int(min(Int64(max(Self.chunk, count)), written - readOffset))
        guard want > 0 else { return false }
        var chunk = [UInt8](repeating: 0, count: want)
        try chunk.withUnsafeMutableBytes { try RawIO.preadAll(fd, $0.baseAddress!, want, at: readOffset, path: path) }
        readOffset += Int64(want)
        readBuffer = Array(left) + chunk
        readPosition = 0
        return readBuffer.count >= count
    }

    func next() throws -> Element? {
        guard try fill(4) else { return nil }
        var length: UInt32 = 0
        withUnsafeMutableBytes(of: &length) { target in
            readBuffer.withUnsafeBytes { target.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[readPosition..<readPosition + 4])) }
        }
        let count = Int(UInt32(littleEndian: length))
        guard try fill(4 + count) else { throw CofferError(.failed, operation: "read scratch file", subject: path, cause: "it ends early") }
        var reader = SpoolReader(readBuffer[readPosition + 4..<readPosition + 4 + count])
        readPosition += 4 + count
        do {
            return try Element.read(from: &reader)
        } catch is SpoolDamaged {
            throw CofferError(.failed, operation: "read scratch file", subject: path, cause: "an element does not read back")
        }
    }
}

extension BackupRunner.Candidate: SpoolElement {
    func write(to bytes: inout SpoolWriter) {
        bytes.put(bytes: relative)
        bytes.put(info.size)
        bytes.put(info.modified)
        bytes.put(info.inode)
        bytes.put(info.mode)
        if let reuse {
            bytes.put(UInt8(1))
            reuse.sha256.write(to: &bytes)
            bytes.put(reuse.pack)
            bytes.put(reuse.offset)
            bytes.put(reuse.mode)
        } else {
            bytes.put(UInt8(0))
        }
    }

    static func read(from bytes: inout SpoolReader) throws -> Self {
        let relative = try bytes.getBytes()
        let info = FileInfo(kind: .regular, size: try bytes.get(), mode: 0, modified: 0, inode: 0)
        var candidate = BackupRunner.Candidate(relative: relative, info: info)
        candidate.info.modified = try bytes.getDouble()
        candidate.info.inode = try bytes.get()
        candidate.info.mode = try bytes.get()
        if try bytes.get(UInt8.self) == 1 {
            candidate.reuse = BackupRunner.Reuse(sha256: try SHA256Value.read(from: &bytes), pack: try bytes.get(),
                                                 offset: try bytes.get(), mode: try bytes.get())
        }
        return candidate
    }
}

extension SHA256Value {
    func write(to bytes: inout SpoolWriter) {
        bytes.put(a); bytes.put(b); bytes.put(c); bytes.put(d)
    }

    static func read(from bytes: inout SpoolReader) throws -> SHA256Value {
        var value = SHA256Value(hex: "")
        value.a = try bytes.get(); value.b = try bytes.get(); value.c = try bytes.get(); value.d = try bytes.get()
        return value
    }
}

typealias CandidateSpool = Spool<BackupRunner.Candidate>
