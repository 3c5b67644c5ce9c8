import CArchive
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes a POSIX pax tar archive to a file descriptor through libarchive, and knows the byte
/// offset of every entry's data in the output (libarchive is run unblocked, so every byte it
/// produces reaches ``written`` before the call returns; small pieces are gathered and reach
/// the descriptor a megabyte at a time, all of them by ``finish()``).
///
/// Names are written as their exact bytes: plain ASCII names in the ustar header, any other
/// name in a pax extended header under `hdrcharset=BINARY`, with no locale conversion and no
/// Unicode normalization on the way out or back in, so every name Linux allows survives. GNU
/// tar extracts them exactly too, with a warning about the keyword
/// (`--warning=no-unknown-keyword` silences it).
/// Every libarchive return code is checked; a failed write (ENOSPC...) surfaces as a
/// ``CofferError`` naming the output path. The archive is freed in `deinit`.
public final class ArchiveWriter {
    private let archive: OpaquePointer
    private let entry: OpaquePointer
    private let sink: Sink
    private var finished = false

    final class Sink {
        let output: ByteSink
        var path: String { output.display }
        var written: Int64 = 0
        /// Output gathered here and written a megabyte at a time: a pack of small files is a
        /// run of small pieces (header, data, padding), one system call each otherwise.
        let pending = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        var pendingCount = 0
        var hasher = SHA256()
        /// In a tar pack, entry data is not hashed here: the entry's own digest stands in for it.
        var packDigest = false
        var inData = false
        var failure: CofferError?
        /// When set, the bytes the pack digest covers go here instead of `hasher`.
        var forward: ((UnsafeRawBufferPointer) -> Void)?
        init(output: ByteSink) { self.output = output }
        deinit { pending.deallocate() }

        /// Takes `length` bytes for the output: gathered, or written at once when they are large
        /// (after what was gathered before them: the output keeps the order it was given).
        func take(_ buffer: UnsafeRawPointer, _ length: Int) throws {
            if length >= pending.count / 2 {
                try flush()
                try output.write(UnsafeRawBufferPointer(start: buffer, count: length))
            } else {
                if pendingCount + length > pending.count { try flush() }
                (pending.baseAddress! + pendingCount).copyMemory(from: buffer, byteCount: length)
                pendingCount += length
            }
        }

        func flush() throws {
            guard pendingCount > 0 else { return }
            defer { pendingCount = 0 }
            try output.write(UnsafeRawBufferPointer(rebasing: pending[0..<pendingCount]))
        }
    }

    /// Bytes written to the output so far.
    public var written: Int64 { sink.written }

    /// - Parameters:
    ///   - fd: an open, writable descriptor; the caller closes it.
    ///   - path: the output's path, for errors.
    ///   - raw: write a single entry's bytes through `filter`, without tar headers (used for
    ///     the zstd-compressed database copy).
    ///   - level: the filter's compression level (its own default when nil).
    public convenience init(fd: Int32, path: String, rawWithFilter filter: Int32? = nil, level: Int? = nil) throws {
        try self.init(output: FileSink(fd: fd, path: path), rawWithFilter: filter, level: level)
    }

    /// Writes to `output` (a file, or a repository object being written).
    public init(output: ByteSink, rawWithFilter filter: Int32? = nil, level: Int? = nil) throws {
        guard let archive = archive_write_new() else {
            throw CofferError(.failed, operation: "start archive", subject: output.display, cause: "out of memory")
        }
        guard let entry = archive_entry_new() else {
            archive_write_free(archive)
            throw CofferError(.failed, operation: "start archive", subject: output.display, cause: "out of memory")
        }
        self.archive = archive
        self.entry = entry
        sink = Sink(output: output)
        sink.packDigest = filter == nil
        if let filter {
            try check(archive_write_set_format_raw(archive), "set raw format")
            try check(archive_write_add_filter(archive, filter), "add compression filter")
            if let level {
                try check(archive_write_set_filter_option(archive, nil, "compression-level", String(level)), "set compression level")
            }
        } else {
            // Restricted pax: an entry gets an extended header only when ustar cannot hold it
            // (a name that is not plain ASCII, or longer than ustar's fields).
            try check(archive_write_set_format_pax_restricted(archive), "set pax format")
        }
        try check(archive_write_set_bytes_per_block(archive, 0), "write unblocked")
        let context = Unmanaged.passUnretained(sink).toOpaque()
        try check(archive_write_open2(archive, context, nil, { _, context, buffer, length in
            let sink = Unmanaged<ArchiveWriter.Sink>.fromOpaque(context!).takeUnretainedValue()
            do {
                try sink.take(buffer!, length)
                if !(sink.packDigest && sink.inData) {
                    let bytes = UnsafeRawBufferPointer(start: buffer, count: length)
                    if let forward = sink.forward { forward(bytes) } else { sink.hasher.update(bufferPointer: bytes) }
                }
                sink.written += Int64(length)
                return la_ssize_t(length)
            } catch let error as CofferError {
                sink.failure = error
                return -1
            } catch { return -1 }
        }, nil, nil), "open output")
    }

    /// Hands the bytes the pack digest covers (all but entry data) to `hashing`, in order,
    /// instead of hashing them here; the caller then hashes entry data and inserts each entry's
    /// digest (``HashPipeline``), and ``finish()``'s digest is not the pack digest. Set it
    /// before the first entry.
    func forwardPackBytes(to hashing: @escaping (UnsafeRawBufferPointer) -> Void) {
        sink.forward = hashing
    }

    deinit {
        if !finished { archive_write_fail(archive) }
        archive_write_free(archive)
        archive_entry_free(entry)
    }

    /// Starts a regular-file entry; returns the offset where its data begins.
    @discardableResult
    public func beginFile(path: PathBytes, size: Int64, mode: UInt32, modified: Double) throws -> Int64 {
        // One entry, cleared and filled for each file: a new one per file was a tenth of the
        // header's cost.
        archive_entry_clear(entry)
        path.withCPath { archive_entry_copy_pathname(entry, $0) }
        archive_entry_set_filetype(entry, UInt32(Glibc.S_IFREG)) // AE_IFREG
        archive_entry_set_perm(entry, mode_t(mode & 0o777))
        archive_entry_set_size(entry, size)
        // Whole seconds: a fraction would cost every entry a pax extended header (1 KiB, as much
        // as a small file and its tar header together). The record keeps the exact mtime, and
        // restore sets that one.
        archive_entry_set_mtime(entry, time_t(modified.rounded(.down)), 0)
        try Self.inCLocale { try check(archive_write_header(archive, entry), "write header of \(PathText.display(path)) to") }
        sink.inData = true
        return sink.written
    }

    /// Appends data to the current entry.
    public func write(_ buffer: UnsafeRawPointer, count: Int) throws {
        var done = 0
        while done < count {
            let n = archive_write_data(archive, buffer + done, count - done)
            if n < 0 { try check(Int32(n), "write data to") }
            if n == 0 { throw CofferError(.failed, operation: "write data to", subject: sink.path, cause: "no progress") }
            done += n
        }
    }

    /// Ends the current entry (writes its padding). In a tar pack, `digest` is the SHA-256 of
    /// the entry's data, which the pack digest takes in place of the data (see FORMAT.md).
    public func endFile(digest: [UInt8] = []) throws {
        sink.inData = false
        if sink.forward == nil { sink.hasher.update(data: digest) }
        try check(archive_write_finish_entry(archive), "finish entry in")
    }

    /// Writes the end-of-archive marker and flushes everything to the descriptor; returns the
    /// digest and size of the whole output. For a raw stream the digest is the SHA-256 of every
    /// byte; for a tar pack it is the pack digest of FORMAT.md (each entry's data replaced by its
    /// SHA-256), so no byte is hashed twice.
    @discardableResult
    public func finish() throws -> (sha256: String, size: Int64) {
        try check(archive_write_close(archive), "finish archive")
        try sink.flush()
        finished = true
        return (Digest.hex(sink.hasher.finalize()), sink.written)
    }

    /// The C locale, for libarchive's name conversion (see ``inCLocale(_:)``).
    private static let cLocale = newlocale(LC_CTYPE_MASK, "C", nil)

    /// Runs `body` with this thread in the C locale. libarchive converts a name from the
    /// locale's charset to UTF-8 for the header: from ASCII, a plain ASCII name converts to
    /// itself, and any other name fails to convert, so libarchive stores it as its exact bytes
    /// under `hdrcharset=BINARY` (a warning, not an error). Under a UTF-8 locale it would
    /// convert valid UTF-8 names instead, and normalize NFD names to NFC.
    private static func inCLocale<T>(_ body: () throws -> T) rethrows -> T {
        guard let cLocale else { return try body() }
        let previous = uselocale(cLocale)
        defer { uselocale(previous) }
        return try body()
    }

    /// `operation` is made only for a message: for 100,000 small files, building the header's
    /// text on every call was 9% of a backup's instructions.
    private func check(_ code: Int32, _ operation: @autoclosure () -> String) throws {
        guard code < ARCHIVE_WARN else { return }
        if let failure = sink.failure { throw failure }
        let message = archive_error_string(archive).map { String(cString: $0) } ?? "libarchive error \(code)"
        throw CofferError(.failed, operation: operation(), subject: sink.path, cause: message)
    }
}

