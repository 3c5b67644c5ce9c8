import Foundation
import GRDB

/// The record of applied migrations.
///
/// GRDB's `grdb_migrations` lists the identifiers (its `DatabaseMigrator` decides from it what is
/// pending); `coffer_migrations` adds, in the same transaction as the migration itself, its
/// number, name, source, SHA-256 of its text, when, how long, and how it came to be recorded
/// (`applied`, `baselined` for the seed of a database the pipeline made itself, `recorded` for
/// one applied by a Coffer that kept no checksums).
public enum MigrationHistory {
    static let table = "coffer_migrations"

    public struct Entry: Sendable, Codable, Equatable {
        public var identifier: String
        public var id: Int?
        public var name: String?
        public var source: String?
        public var sha256: String?
        public var appliedAt: String?
        public var seconds: Double?
        public var how: String?

        enum CodingKeys: String, CodingKey {
            case identifier, id, name, source, sha256, appliedAt = "applied_at", seconds, how
        }
    }

    static let createSQL = """
        CREATE TABLE IF NOT EXISTS coffer_migrations (
          id INTEGER PRIMARY KEY,
          identifier TEXT NOT NULL UNIQUE,
          name TEXT NOT NULL,
          source TEXT NOT NULL,
          sha256 TEXT NOT NULL,
          applied_at TEXT NOT NULL,
          seconds REAL NOT NULL,
          how TEXT NOT NULL,
          coffer_version TEXT NOT NULL
        )
        """

    public static func hasHistory(_ db: Database) throws -> Bool { try db.tableExists("grdb_migrations") }

    /// Applied migrations in the order they were applied.
    public static func read(_ db: Database) throws -> [Entry] {
        guard try hasHistory(db) else { return [] }
        let identifiers = try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid")
        var details: [String: Row] = [:]
        if try db.tableExists(table) {
            for row in try Row.fetchAll(db, sql: "SELECT * FROM coffer_migrations") {
                if let identifier: String = row["identifier"] { details[identifier] = row }
            }
        }
        return identifiers.map { identifier in
            let row = details[identifier]
            return Entry(identifier: identifier, id: row?["id"] ?? Migration.parse(identifier: identifier)?.id,
                         name: row?["name"] ?? Migration.parse(identifier: identifier)?.name, source: row?["source"],
                         sha256: row?["sha256"], appliedAt: row?["applied_at"], seconds: row?["seconds"], how: row?["how"])
        }
    }

    /// Records `migration` as applied; called inside the migration's transaction.
    static func record(_ db: Database, _ migration: Migration, seconds: Double, how: String) throws {
        try db.execute(sql: createSQL)
        try db.execute(sql: """
            INSERT OR REPLACE INTO coffer_migrations (id, identifier, name, source, sha256, applied_at, seconds, how, coffer_version)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [migration.id, migration.identifier, migration.name, migration.source.rawValue, migration.sha256,
                             UTCTime.iso8601(Date()), seconds, how, CofferVersion.coffer])
    }

    /// Marks the seed as applied to a database the pipeline created itself, and fills in the
    /// details of migrations applied by a Coffer that kept none. One transaction.
    static func baseline(_ db: Database, seed: Migration?, missingDetails: [Migration]) throws {
        try db.inTransaction(.immediate) {
            try db.execute(sql: "CREATE TABLE IF NOT EXISTS grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY)")
            if let seed {
                try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES (?)", arguments: [seed.identifier])
                try record(db, seed, seconds: 0, how: "baselined")
            }
            for migration in missingDetails { try record(db, migration, seconds: 0, how: "recorded") }
            return .commit
        }
    }
}
