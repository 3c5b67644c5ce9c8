import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Gets a snapshot's database copy out of its pack: the stored zstd stream by a streamed ranged
/// read (checked against its recorded SHA-256), then decompressed to `destination`.
enum DatabaseExtractor {
    /// Returns the SHA-256 of the decompressed file. Throws when the stored stream is damaged
    /// (the error marked ``CofferError/storedBytesDamaged``), and for any other failure.
    static func extract(_ database: Snapshot.Database, from repository: Repository, to destination: String) throws -> String {
        /// `error`, marked as damage to the stored bytes (a stop is never that).
        func damage(_ error: Error) -> Error {
            guard var marked = error as? CofferError, marked.status != .interrupted else { return error }
            marked.storedBytesDamaged = true
            return marked
        }
        let compressedPath = destination + ".zst"
        defer { unlink(compressedPath) }
        // The stored stream goes to a scratch file beside the destination, hashed on the way
        // (a buffer at a time: a database copy can be larger than memory).
        var storedHasher = SHA256()
        let out = try RawIO.createNew(compressedPath)
        do {
            defer { close(out) }
            var writeFailure: Error?
            do {
                try repository.storage.read(database.pack, offset: database.offset, length: database.storedSize) { chunk in
                    try Interruption.check("restore")
                    storedHasher.update(bufferPointer: chunk)
                    do { try RawIO.writeAll(out, chunk.baseAddress!, chunk.count, path: compressedPath) } catch {
                        writeFailure = error
                        throw error
                    }
                }
            } catch {
                // The scratch side's failure, a stop, or the network's is not the copy's; a
                // missing object, a read past its end or an unreadable sector is.
                if let writeFailure { throw writeFailure }
                guard let failure = error as? CofferError else { throw error }
                throw failure.storedBytesDamaged || [ENOENT, EIO].contains(failure.errno ?? 0) ? damage(failure) : failure
            }
        }
        guard Digest.hex(storedHasher.finalize()) == database.storedSha256 else {
            throw damage(CofferError(.failed, operation: "read database copy", subject: "\(database.pack):\(database.entry)",
                                     cause: "its bytes changed (SHA-256 differs from the one recorded)",
                                     hint: "restore an older snapshot; `coffer verify --repo --read-data` lists what is damaged"))
        }
        let reader = try ArchiveReader(path: compressedPath, kind: .zstdRaw)
        let first: Bool
        do { first = try reader.next() != nil } catch { throw damage(error) }
        guard first else {
            throw damage(CofferError(.failed, operation: "decompress", subject: compressedPath, cause: "empty stream"))
        }
        let output = try RawIO.createNew(destination)
        defer { close(output) }
        var hasher = SHA256()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var writeback = EarlyWriteback()
        while true {
            try Interruption.check("restore")
            let n: Int
            do { n = try reader.read(into: buffer) } catch { throw damage(error) }
            if n == 0 { break }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            try RawIO.writeAll(output, buffer.baseAddress!, n, path: destination)
            writeback.wrote(n, fd: output)
        }
        try RawIO.sync(output, path: destination)
        return Digest.hex(hasher.finalize())
    }
}
