import CArchive
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads an archive Coffer wrote, front to back, from a stored object (a file, or an object
/// fetched by ranges) through libarchive.
///
/// Only what Coffer writes is enabled: the tar format without compression for packs, or the
/// raw format with zstd for a database copy; no other reader (most libarchive CVEs live in the
/// others). Return codes are checked; the archive is freed in `deinit`. Callers check what
/// they extract against their own records (entry digests); the reader itself hashes nothing.
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
        let object: ObjectReader
        var position: Int64 = 0
        let buffer: UnsafeMutableRawBufferPointer
        var failure: CofferError?
        /// Bytes passed over without being read (for tests and the verbose log).
        var skipped: Int64 = 0
        var path: String { object.display }

        init(object: ObjectReader) {
            self.object = object
            buffer = .allocate(byteCount: 1 << 20, alignment: 64)
        }
        deinit { buffer.deallocate() }

        func next() -> Int {
            let n = Int(min(Int64(buffer.count), object.size - position))
            guard n > 0 else { return 0 }
            do {
                try object.read(into: buffer.baseAddress!, count: n, at: position)
                position += Int64(n)
                return n
            } catch let error as CofferError {
                failure = error
                return -1
            } catch { return -1 }
        }

        /// Moves `request` bytes forward without reading them, never past the end of the object:
        /// what a truncated archive lacks is then read (and found missing) instead of passed over.
        func skip(_ request: Int64) -> Int64 {
            let step = min(request, object.size - position)
            guard step > 0 else { return 0 }
            position += step
            skipped += step
            return step
        }
    }

    public enum Kind { case tar, zstdRaw }

    /// Reads the local file at `path`.
    public convenience init(path: String, kind: Kind) throws {
        try self.init(object: FileObjectReader(path: path), kind: kind)
    }

    /// Reads `object` from its start.
    public init(object: ObjectReader, kind: Kind) throws {
        guard let archive = archive_read_new() else {
            throw CofferError(.failed, operation: "open archive", subject: object.display, cause: "out of memory")
        }
        self.archive = archive
        source = Source(object: object)
        switch kind {
        case .tar:
            try check(archive_read_support_format_tar(archive), "enable tar")
            try check(archive_read_support_filter_none(archive), "enable plain input")
        case .zstdRaw:
            try check(archive_read_support_format_raw(archive), "enable raw")
            try check(archive_read_support_filter_zstd(archive), "enable zstd")
        }
        let context = Unmanaged.passUnretained(source).toOpaque()
        try check(archive_read_set_read_callback(archive, { _, context, buffer in
            let source = Unmanaged<ArchiveReader.Source>.fromOpaque(context!).takeUnretainedValue()
            let n = source.next()
            buffer!.pointee = UnsafeRawPointer(source.buffer.baseAddress!)
            return la_ssize_t(n)
        }), "set the read callback of")
        // Entries nobody reads (another snapshot's files, a database copy a media restore
        // does not need) are passed over, not read through.
        try check(archive_read_set_skip_callback(archive, { _, context, request in
            let source = Unmanaged<ArchiveReader.Source>.fromOpaque(context!).takeUnretainedValue()
            return la_int64_t(source.skip(request))
        }), "set the skip callback of")
        try check(archive_read_set_callback_data(archive, context), "set the source of")
        try check(archive_read_open1(archive), "open")
    }

    deinit { archive_read_free(archive) }

    /// Bytes of the archive passed over by seeking instead of being read.
    public var bytesSkipped: Int64 { source.skipped }

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

    private func check(_ code: Int32, _ operation: String) throws {
        guard code < ARCHIVE_WARN else { return }
        if let failure = source.failure { throw failure }
        let message = archive_error_string(archive).map { String(cString: $0) } ?? "libarchive error \(code)"
        throw CofferError(.failed, operation: operation, subject: source.path, cause: message)
    }
}
