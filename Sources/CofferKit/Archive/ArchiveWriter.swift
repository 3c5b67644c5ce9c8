import CArchive
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes a POSIX pax tar archive to a file descriptor through libarchive, and knows the byte
/// offset of every entry's data in the output (libarchive is run unblocked, so every byte it
/// produces reaches ``written`` before the call returns).
///
/// Names are written as their exact bytes with `hdrcharset=BINARY`: no locale conversion and
/// no Unicode normalization on the way out or back in (libarchive would turn NFD names into
/// NFC when converting), so every name Linux allows survives. GNU tar extracts them exactly
/// too, with a warning about the keyword (`--warning=no-unknown-keyword` silences it).
/// Every libarchive return code is checked; a failed write (ENOSPC...) surfaces as a
/// ``CofferError`` naming the output path. The archive is freed in `deinit`.
public final class ArchiveWriter {
    private let archive: OpaquePointer
    private let sink: Sink
    private var finished = false

    final class Sink {
        let fd: Int32
        let path: String
        var written: Int64 = 0
        var hasher = SHA256()
        /// In a tar pack, entry data is not hashed here: the entry's own digest stands in for it.
        var packDigest = false
        var inData = false
        var failure: CofferError?
        /// When set, the bytes the pack digest covers go here instead of `hasher`.
        var forward: ((UnsafeRawBufferPointer) -> Void)?
        init(fd: Int32, path: String) { self.fd = fd; self.path = path }
    }

    /// Bytes written to the output so far.
    public var written: Int64 { sink.written }

    /// - Parameters:
    ///   - fd: an open, writable descriptor; the caller closes it.
    ///   - path: the output's path, for errors.
    ///   - raw: write a single entry's bytes through `filter`, without tar headers (used for
    ///     the zstd-compressed database copy).
    public init(fd: Int32, path: String, rawWithFilter filter: Int32? = nil) throws {
        guard let archive = archive_write_new() else {
            throw CofferError(.failed, operation: "start archive", subject: path, cause: "out of memory")
        }
        self.archive = archive
        sink = Sink(fd: fd, path: path)
        sink.packDigest = filter == nil
        if let filter {
            try check(archive_write_set_format_raw(archive), "set raw format")
            try check(archive_write_add_filter(archive, filter), "add compression filter")
        } else {
            try check(archive_write_set_format_pax(archive), "set pax format")
            try check(archive_write_set_format_option(archive, "pax", "hdrcharset", "BINARY"), "keep names as bytes")
        }
        try check(archive_write_set_bytes_per_block(archive, 0), "write unblocked")
        let context = Unmanaged.passUnretained(sink).toOpaque()
        try check(archive_write_open2(archive, context, nil, { _, context, buffer, length in
            let sink = Unmanaged<ArchiveWriter.Sink>.fromOpaque(context!).takeUnretainedValue()
            do {
                try RawIO.writeAll(sink.fd, buffer!, length, path: sink.path)
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
    }

    /// Starts a regular-file entry; returns the offset where its data begins.
    @discardableResult
    public func beginFile(path: PathBytes, size: Int64, mode: UInt32, modified: Double) throws -> Int64 {
        guard let entry = archive_entry_new() else {
            throw CofferError(.failed, operation: "start entry", subject: sink.path, cause: "out of memory")
        }
        defer { archive_entry_free(entry) }
        path.withCPath { archive_entry_copy_pathname(entry, $0) }
        archive_entry_set_filetype(entry, UInt32(Glibc.S_IFREG)) // AE_IFREG
        archive_entry_set_perm(entry, mode_t(mode & 0o777))
        archive_entry_set_size(entry, size)
        let seconds = modified.rounded(.down)
        archive_entry_set_mtime(entry, time_t(seconds), Int((modified - seconds) * 1e9))
        try check(archive_write_header(archive, entry), "write header of \(PathText.display(path)) to")
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
        finished = true
        return (Digest.hex(sink.hasher.finalize()), sink.written)
    }

    private func check(_ code: Int32, _ operation: String) throws {
        guard code < ARCHIVE_WARN else { return }
        if let failure = sink.failure { throw failure }
        let message = archive_error_string(archive).map { String(cString: $0) } ?? "libarchive error \(code)"
        throw CofferError(.failed, operation: operation, subject: sink.path, cause: message)
    }
}

