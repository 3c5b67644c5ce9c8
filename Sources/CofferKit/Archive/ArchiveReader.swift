import CArchive
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads an archive Coffer wrote, sequentially, from a file descriptor through libarchive.
///
/// Only what Coffer writes is enabled: the tar format without compression for packs, or the
/// raw format with zstd for a database copy; no other reader (most libarchive CVEs live in the
/// others). Every byte read from the file also goes into ``fileDigest``, so one pass both
/// extracts and proves the whole file unchanged. Return codes are checked; the archive is
/// freed in `deinit`.
public final class ArchiveReader {
    public struct Entry {
        public var path: PathBytes
        /// `S_IFREG`, `S_IFDIR`, `S_IFLNK`... (libarchive uses the POSIX values).
        public var fileType: UInt32
        public var size: Int64
        public var mode: UInt32
        public var modified: Double
        public var isHardLink: Bool
    }

    private let archive: OpaquePointer
    private let source: Source

    final class Source {
        let fd: Int32
        let path: String
        let buffer: UnsafeMutableRawBufferPointer
        var hasher = SHA256()
        var read: Int64 = 0
        var failure: CofferError?
        init(fd: Int32, path: String) {
            self.fd = fd
            self.path = path
            buffer = .allocate(byteCount: 1 << 20, alignment: 64)
        }
        deinit { buffer.deallocate() }

        func next() -> Int {
            do {
                let n = try RawIO.read(fd, buffer.baseAddress!, buffer.count, path: path)
                hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                read += Int64(n)
                return n
            } catch let error as CofferError {
                failure = error
                return -1
            } catch { return -1 }
        }
    }

    public enum Kind { case tar, zstdRaw }

    /// - Parameter fd: an open descriptor positioned at the start; the caller closes it.
    public init(fd: Int32, path: String, kind: Kind) throws {
        guard let archive = archive_read_new() else {
            throw CofferError(.failed, operation: "open archive", subject: path, cause: "out of memory")
        }
        self.archive = archive
        source = Source(fd: fd, path: path)
        switch kind {
        case .tar:
            try check(archive_read_support_format_tar(archive), "enable tar")
            try check(archive_read_support_filter_none(archive), "enable plain input")
        case .zstdRaw:
            try check(archive_read_support_format_raw(archive), "enable raw")
            try check(archive_read_support_filter_zstd(archive), "enable zstd")
        }
        let context = Unmanaged.passUnretained(source).toOpaque()
        try check(archive_read_open(archive, context, nil, { _, context, buffer in
            let source = Unmanaged<ArchiveReader.Source>.fromOpaque(context!).takeUnretainedValue()
            let n = source.next()
            buffer!.pointee = UnsafeRawPointer(source.buffer.baseAddress!)
            return la_ssize_t(n)
        }, nil), "open")
    }

    deinit { archive_read_free(archive) }

    /// The next entry's header, or `nil` at the end of the archive.
    public func next() throws -> Entry? {
        var entry: OpaquePointer?
        let code = archive_read_next_header(archive, &entry)
        if code == ARCHIVE_EOF { return nil }
        try check(code, "read header in")
        guard let entry else { return nil }
        let pathPointer = archive_entry_pathname(entry)
        let path = pathPointer.map { PathBytes(UnsafeBufferPointer(start: UnsafeRawPointer($0).assumingMemoryBound(to: UInt8.self), count: strlen($0))) } ?? []
        let mtime = Double(archive_entry_mtime(entry)) + Double(archive_entry_mtime_nsec(entry)) / 1e9
        return Entry(path: path, fileType: UInt32(archive_entry_filetype(entry)), size: archive_entry_size(entry),
                     mode: UInt32(archive_entry_perm(entry)), modified: mtime,
                     isHardLink: archive_entry_hardlink(entry) != nil)
    }

    /// Reads the current entry's data into `buffer`; 0 at its end.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        let n = archive_read_data(archive, buffer.baseAddress, buffer.count)
        if n < 0 { try check(Int32(n), "read data in") }
        return n
    }

    /// Reads the rest of the file (past the end-of-archive marker) and returns the SHA-256 of
    /// every byte of it, and its size.
    public func finishFile() throws -> (sha256: String, size: Int64) {
        while true {
            let n = source.next()
            if n < 0 { throw source.failure ?? CofferError(.failed, operation: "read", subject: source.path, cause: "read failed") }
            if n == 0 { break }
        }
        return (Digest.hex(source.hasher.finalize()), source.read)
    }

    private func check(_ code: Int32, _ operation: String) throws {
        guard code < ARCHIVE_WARN else { return }
        if let failure = source.failure { throw failure }
        let message = archive_error_string(archive).map { String(cString: $0) } ?? "libarchive error \(code)"
        throw CofferError(.failed, operation: operation, subject: source.path, cause: message)
    }
}

/// Hex digests.
public enum Digest {
    /// The bytes of a hex digest (invalid digits count as 0: a wrong digest then mismatches).
    public static func bytes(hex: String) -> [UInt8] {
        func value(_ c: UInt8) -> UInt8 {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: 0
            }
        }
        let digits = Array(hex.utf8)
        return stride(from: 0, to: digits.count - 1, by: 2).map { value(digits[$0]) << 4 | value(digits[$0 + 1]) }
    }

    public static func hex(_ digest: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for byte in digest { out.append(digits[Int(byte >> 4)]); out.append(digits[Int(byte & 0xF)]) }
        return String(decoding: out, as: UTF8.self)
    }
}
