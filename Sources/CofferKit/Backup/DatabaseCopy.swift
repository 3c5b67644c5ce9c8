import CArchive
import Crypto
import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// A consistent copy of the live database, taken with SQLite's online backup API in one step.
///
/// One step holds a read snapshot of the source for the whole copy, so WAL writers go on and
/// the copy is one consistent cut; a paged backup would restart after every commit and might
/// never finish under load. The copy is then checked and described from the copy itself (a
/// copy is never trusted by opening it: its SHA-256, page count and row counts are recorded, see
/// ``describe()``).
struct DatabaseCopy {
    var path: String
    var size: Int64
    var sha256 = ""
    var pageSize = 0
    var pageCount = 0
    var schemaVersion: Int?
    var rowCounts: [String: Int] = [:]
    var integrityCheck = ""

    static func take(from source: String, to path: String) throws -> DatabaseCopy {
        try take(from: DatabaseAccess.openExisting(source, readOnly: true), source: source, to: path)
    }

    /// The same, from `reader`, a connection to `source` already open (read-only); closes it.
    static func take(from reader: DatabaseQueue, source: String, to path: String) throws -> DatabaseCopy {
        var destination: DatabaseQueue?
        do {
            var config = GRDB.Configuration()
            config.label = "coffer.copy"
            // A scratch file, read back at once and removed: no journal and no fsync (a 1 GB
            // database otherwise waits for 1 GB to reach the disk, and a run that dies leaves
            // only scratch, swept by the next). What is kept is the compressed copy, written
            // and synced with the pack.
            config.prepareDatabase { db in
                try db.execute(sql: "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF")
            }
            let queue = try DatabaseQueue(path: path, configuration: config)
            destination = queue
            try reader.backup(to: queue)
            try queue.close()
            try reader.close()
        } catch let error as DatabaseError {
            // A write of the copy that failed (a full disk, a file size limit) is known to the
            // copy's connection, by its errno; the error in hand may only say "not an error".
            let code = destination.map(DatabaseAccess.systemErrno) ?? 0
            if code != 0 { throw CofferError.system("write the database copy", path, errno: code) }
            // A full disk leaves no errno (SQLite's own "database or disk is full"), and the
            // backup reports it through the source connection, as "not an error".
            if error.resultCode == .SQLITE_FULL { throw CofferError.system("write the database copy", path, errno: ENOSPC) }
            throw DatabaseAccess.databaseFailure("copy database", source, error)
        }
        // Described (integrity_check, counts) by the caller, which may do it on another core.
        return DatabaseCopy(path: path, size: (try? FileSystem.status(path).get().size) ?? 0)
    }

    /// Integrity, pages, schema and row counts, read from the copy. A stop asked for meanwhile
    /// ends it (``DatabaseAccess/stoppable(_:_:_:)``).
    mutating func describe() throws {
        var config = DatabaseAccess.configuration(readOnly: true)
        config.label = "coffer.copy.check"
        let queue = try DatabaseQueue(path: path, configuration: config)
        defer { try? queue.close() }
        do {
            try queue.inDatabase { db in try DatabaseAccess.stoppable(db, "backup") {
                let lines = try DatabaseAccess.check(db, limit: 20, mapped: true)
                integrityCheck = lines.joined(separator: "; ")
                pageSize = try Int.fetchOne(db, sql: "PRAGMA page_size") ?? 0
                pageCount = try Int.fetchOne(db, sql: "PRAGMA page_count") ?? 0
                schemaVersion = try SchemaInspector.inspect(db).version
                for table in try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name") {
                    rowCounts[table] = try Int.fetchOne(db, sql: "SELECT count(*) FROM \(table.quotedDatabaseIdentifier)")
                }
            } }
        } catch let error as DatabaseError {
            integrityCheck = "error: \(error.message ?? "\(error.resultCode)")"
        }
    }

    /// The SHA-256 of the copy's bytes, read once.
    func fileSHA256() throws -> String { try readHashing { _ in } }

    /// Reads the copy in 1 MiB chunks, hashing each and passing it to `body`; returns the
    /// SHA-256 of the whole. A stop asked for ends it between chunks.
    func readHashing(_ body: (UnsafeRawBufferPointer) throws -> Void) throws -> String {
        let input = try RawIO.openForReading(path)
        defer { close(input) }
        var hasher = SHA256()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        while true {
            try Interruption.check("backup")
            let n = try RawIO.read(input, buffer.baseAddress!, buffer.count, path: path)
            if n == 0 { break }
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
            hasher.update(bufferPointer: chunk)
            try body(chunk)
        }
        return Digest.hex(hasher.finalize())
    }

    /// Takes the description of a stored copy with the same bytes (same SHA-256): the same
    /// bytes give the same pages, schema, counts and integrity_check.
    mutating func adopt(_ stored: Snapshot.Database) {
        sha256 = stored.sha256
        pageSize = stored.pageSize
        pageCount = stored.pageCount
        schemaVersion = stored.schemaVersion
        rowCounts = stored.rowCounts
        integrityCheck = stored.integrityCheck
    }

    /// zstd's level for the copy. Level 2 makes a file within 0.1% of level 3's (the default)
    /// for two thirds of its CPU: on a 101 MB copy, 25.68 MB in 0.34 s against 25.66 MB in
    /// 0.51 s (level 1: 25.99 MB, 0.31 s). On two cores the backup's lanes share the CPU, so
    /// what the compression spends the rest wait for.
    static let zstdLevel = 2

    /// Compresses the copy with zstd into `output` (an open descriptor), hashing the copy as it
    /// is read. Returns the SHA-256 of the copy; the output's own digest comes from the writer.
    mutating func compress(into fd: Int32, outputPath: String) throws -> (sha256: String, size: Int64) {
        let writer = try ArchiveWriter(fd: fd, path: outputPath, rawWithFilter: ARCHIVE_FILTER_ZSTD, level: Self.zstdLevel)
        try writer.beginFile(path: PathBytes("db.sqlite".utf8), size: size, mode: 0o644, modified: Date().timeIntervalSince1970)
        let digest = try readHashing { chunk in try writer.write(chunk.baseAddress!, count: chunk.count) }
        try writer.endFile()
        let stored = try writer.finish()
        sha256 = digest
        return stored
    }

    /// Removes the copy and whatever SQLite left beside it.
    static func remove(_ path: String) {
        for suffix in ["", "-wal", "-shm", "-journal", ".zst"] { unlink(path + suffix) }
    }
}
