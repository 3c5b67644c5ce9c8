import Foundation
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// A repository in an S3-compatible bucket, under a prefix: the same object names as a local
/// repository (`config.json`, `packs/ID.tar`, `snapshots/ID.jsonl`), each the key
/// `PREFIX/NAME`, so a repository copied between a directory and a bucket with ordinary tools
/// stays the same repository.
///
/// An object becomes visible only when its upload completes (a PUT, or the completion of a
/// multipart upload), which S3 makes atomic: a killed run leaves at most an unfinished
/// multipart upload, never a listed object.
public final class S3Storage: RepositoryStorage {
    public let address: S3Address
    let client: S3Client
    /// Bytes per part of a multipart upload (held once in memory while it is sent; parts grow
    /// past 8 GB, see ``S3Upload``).
    var partSize = 8 << 20

    public init(address: S3Address, client: S3Client) {
        self.address = address
        self.client = client
    }

    /// No local folder: a backup's scratch goes beside the database.
    public var scratchDirectory: String? { nil }

    /// A lock object with an expiry, for runs on other hosts.
    public func lock(exclusive: Bool, command: String) throws -> AnyObject {
        try ObjectLock.acquire(self, exclusive: exclusive, command: command)
    }

    public var location: String { address.description }

    func key(_ name: String) -> String { address.key(name) }

    public func create(_ name: String) throws -> PendingObject {
        S3PendingObject(name: name, display: display(name), upload: S3Upload(client: client, key: key(name), partSize: partSize))
    }

    public func commit(_ object: PendingObject) throws {
        guard let pending = object as? S3PendingObject else { preconditionFailure("not an S3 pending object") }
        try pending.upload.finish()
    }

    public func discard(_ object: PendingObject) {
        (object as? S3PendingObject)?.upload.abort()
    }

    public func get(_ name: String) throws -> Data {
        guard let data = try client.getObject(key(name)) else {
            throw CofferError.missing("read", display(name), cause: "no such object")
        }
        return data
    }

    public func get(_ name: String, offset: Int64, length: Int) throws -> Data {
        try checkRange(name, offset: offset, length: Int64(length))
        return try client.getObject(key(name), offset: offset, length: length)
    }

    public func read(_ name: String, offset: Int64, length: Int64, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        try checkRange(name, offset: offset, length: length)
        var done: Int64 = 0
        while done < length {
            let n = Int(min(Int64(S3ObjectReader.fetchSize), length - done))
            let chunk = try client.getRange(key(name), offset: offset + done, length: n)
            try chunk.withUnsafeReadableBytes { try body($0) }
            done += Int64(n)
        }
    }

    public func openReader(_ name: String) throws -> ObjectReader {
        guard let size = try client.headObject(key(name)) else {
            throw CofferError.missing("open", display(name), cause: "no such object")
        }
        return S3ObjectReader(client: client, key: key(name), display: display(name), size: size)
    }

    public func list(_ folder: String) throws -> [String] {
        let base = address.prefix.isEmpty ? "" : address.prefix + "/"
        return try client.listObjects(prefix: key(folder) + "/").compactMap { object in
            guard object.key.hasPrefix(base) else { return nil }
            let name = String(object.key.dropFirst(base.count))
            // Only the folder's own objects, as a directory listing would give (no deeper keys).
            return name.dropFirst(folder.count + 1).contains("/") ? nil : name
        }.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    public func size(_ name: String) throws -> Int64? { try client.headObject(key(name)) }

    public func delete(_ name: String) throws { try client.deleteObject(key(name)) }

    /// Abandons the multipart uploads killed runs left under the repository's `packs/` and
    /// `snapshots/` (never listed, but their parts are stored and billed). Under the exclusive
    /// lock no other run of this repository is uploading, so every one found is a leftover;
    /// uploads elsewhere in the bucket are not this repository's and are left alone. Best
    /// effort: a bucket lifecycle rule (AbortIncompleteMultipartUpload) reclaims what this misses.
    /// Nothing local is swept here: a backup's scratch folder belongs to the run that made it.
    public func sweepTemporaryFiles() {
        for folder in ["packs", "snapshots"] {
            guard let uploads = try? client.listMultipartUploads(prefix: key(folder) + "/") else { continue }
            for upload in uploads { try? client.abortMultipartUpload(upload.key, uploadID: upload.uploadID) }
        }
    }
}

/// An object on its way into the bucket.
final class S3PendingObject: PendingObject {
    let name: String
    let display: String
    let upload: S3Upload

    init(name: String, display: String, upload: S3Upload) {
        self.name = name
        self.display = display
        self.upload = upload
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws { try upload.write(bytes) }
}

/// Reads an object by ranged GETs, a few megabytes at a time: a reader that walks a pack front
/// to back costs one request per window, and one that jumps (a skipped entry, a record's file
/// lines) fetches only around where it lands.
final class S3ObjectReader: ObjectReader {
    static let fetchSize = 8 << 20
    let client: S3Client
    let key: String
    let display: String
    let size: Int64
    private var window = ByteBuffer()
    private var windowStart: Int64 = 0

    init(client: S3Client, key: String, display: String, size: Int64) {
        self.client = client
        self.key = key
        self.display = display
        self.size = size
    }

    func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int64) throws {
        guard count > 0 else { return }
        guard offset >= 0, offset + Int64(count) <= size else {
            throw CofferError(.failed, operation: "read", subject: display,
                              cause: "asked for \(count) bytes at \(offset), the object has \(size) (damaged or truncated?)")
        }
        var done = 0
        while done < count {
            let position = offset + Int64(done)
            let windowEnd = windowStart + Int64(window.readableBytes)
            if position >= windowStart, position < windowEnd {
                let n = Int(min(Int64(count - done), windowEnd - position))
                window.withUnsafeReadableBytes { bytes in
                    (buffer + done).copyMemory(from: bytes.baseAddress! + Int(position - windowStart), byteCount: n)
                }
                done += n
            } else if count - done >= Self.fetchSize {
                // A large read goes straight into the caller's buffer.
                let n = count - done
                let data = try client.getRange(key, offset: position, length: n)
                data.withUnsafeReadableBytes { (buffer + done).copyMemory(from: $0.baseAddress!, byteCount: n) }
                done += n
            } else {
                // The old window goes before the new one arrives: one window in memory, not two.
                window = ByteBuffer()
                let n = Int(min(Int64(Self.fetchSize), size - position))
                window = try client.getRange(key, offset: position, length: n)
                windowStart = position
            }
        }
    }
}
