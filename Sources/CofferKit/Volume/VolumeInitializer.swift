import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// `coffer init`: a fresh volume.
///
/// The database is built under a temporary name beside its target, migrated to the latest
/// schema, closed (its WAL checkpointed away) and only then renamed into place, so a crash or
/// a failure never leaves a half-made database at `DB_PATH`. An existing database that is not
/// empty is refused before anything is written.
public enum VolumeInitializer {
    public struct Report: Sendable, Codable, Equatable {
        public var command = "init"
        public var dbPath: String
        public var mediaRoot: String
        public var created: [String]
        public var schemaVersion: Int
        public var dryRun: Bool

        enum CodingKeys: String, CodingKey {
            case command, dbPath = "db_path", mediaRoot = "media_root", created, schemaVersion = "schema_version", dryRun = "dry_run"
        }
    }

    public static func initialize(_ layout: VolumeLayout, dryRun: Bool = false) throws -> Report {
        try refuseExistingDatabase(layout.dbPath)
        for directory in [layout.mediaRoot, layout.libraryRoot, layout.tempRoot] {
            if case .success(let info) = FileSystem.status(directory), info.kind != .directory {
                throw CofferError(.failed, operation: "create directory", subject: directory,
                                  cause: "exists and is not a directory", hint: "choose another MEDIA_ROOT or move that file away")
            }
        }
        let dbDirectory = PathText.parent(layout.dbPath)
        var created: [String] = []
        for directory in [dbDirectory, layout.mediaRoot, layout.libraryRoot, layout.tempRoot]
        where !created.contains(directory) {
            if case .failure = FileSystem.status(directory) { created.append(directory) }
        }
        created.append(layout.dbPath)
        if dryRun {
            return Report(dbPath: layout.dbPath, mediaRoot: layout.mediaRoot, created: created,
                          schemaVersion: SchemaMigrations.latestVersion, dryRun: true)
        }

        try FileSystem.makeDirectories(dbDirectory, mode: 0o755)
        try createDatabase(at: layout.dbPath)
        for directory in [layout.mediaRoot, layout.libraryRoot, layout.tempRoot] {
            try FileSystem.makeDirectories(directory, mode: 0o755)
        }
        return Report(dbPath: layout.dbPath, mediaRoot: layout.mediaRoot, created: created,
                      schemaVersion: SchemaMigrations.latestVersion, dryRun: false)
    }

    static func refuseExistingDatabase(_ path: String) throws {
        for file in [path, path + "-wal"] {
            guard case .success(let info) = FileSystem.status(file) else { continue }
            if info.kind != .regular || info.size > 0 {
                throw CofferError(.failed, operation: "create database", subject: path,
                                  cause: file == path ? "a database already exists there; nothing was changed"
                                                      : "a write-ahead log exists beside it; nothing was changed",
                                  hint: "`coffer verify` checks an existing volume; choose another --db for a fresh one")
            }
        }
    }

    /// Migrates a database under a temporary name, then renames it into place.
    static func createDatabase(at path: String) throws {
        let staging = path + ".coffer-init-\(getpid())"
        defer { for suffix in ["", "-wal", "-shm", "-journal"] { unlink(staging + suffix) } }
        do {
            let queue = try DatabaseQueue(path: staging, configuration: DatabaseAccess.configuration(readOnly: false))
            try SchemaMigrations.migrator().migrate(queue)
            try queue.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
            try queue.close()
        } catch let error as DatabaseError {
            throw DatabaseAccess.databaseFailure("create database", staging, error)
        }
        guard chmod(staging, 0o644) == 0 else { throw CofferError.system("set permissions of", staging, errno: errno) }
        let fd = open(staging, O_RDONLY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); close(fd) }
        // Checked again right before the rename: a database created meanwhile is not replaced.
        try refuseExistingDatabase(path)
        guard rename(staging, path) == 0 else { throw CofferError.system("rename database into", path, errno: errno) }
        try FileSystem.syncDirectory(PathText.parent(path))
    }
}
