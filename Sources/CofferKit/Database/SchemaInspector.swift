import GRDB

/// Recognizes a database's schema version by its structure, not its text.
///
/// The structure (tables, columns with type, NOT NULL, default and key, foreign keys with their
/// actions, indexes with their columns, triggers and views) is compared with what Coffer's
/// migrations produce in a scratch in-memory database. So whitespace or comments in the
/// pipeline's `CREATE` statements do not matter, but a missing index or an extra column does.
public enum SchemaInspector {
    public struct Report: Sendable, Equatable, Codable {
        /// The recognized version, or `nil` when the schema matches none Coffer knows.
        public var version: Int?
        /// Whether Coffer's migration history is present (`false` for a pipeline-made database).
        public var hasHistory: Bool
        /// Migrations recorded as applied, in order.
        public var appliedMigrations: [String]
        /// What differs from the closest known version: `missing ...` or `unexpected ...`.
        public var differences: [String]
        /// Migrations a pipeline release applied (`coffer migrate up --migrations`), after
        /// Coffer's own `version`. Their structure is not compared: only the release knows it.
        public var releaseMigrations: [String]?
    }

    /// Tables that belong to SQLite or to the migration history, not to the schema.
    static func isInternal(_ name: String) -> Bool {
        name.hasPrefix("sqlite_") || name == "grdb_migrations" || name == MigrationHistory.table
    }

    public static func inspect(_ db: Database) throws -> Report {
        let hasHistory = try db.tableExists("grdb_migrations")
        let applied = hasHistory ? try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid") : []
        let actual = try fingerprint(db)

        // The version the history claims; a pipeline-made database claims the seed's.
        let releases = try MigrationHistory.read(db).filter { $0.source == Migration.Source.release.rawValue }.map(\.identifier)
        let unknown = applied.filter { SchemaMigrations.version(of: $0) == nil && !releases.contains($0) }
        let claimed = hasHistory ? applied.compactMap(SchemaMigrations.version(of:)).max() ?? 0 : 1
        var differences = unknown.map { "unknown migration \($0) in history (a newer coffer applied it?)" }
        guard claimed >= 1 else {
            return Report(version: nil, hasHistory: hasHistory, appliedMigrations: applied,
                          differences: differences + ["no migration applied"])
        }
        if !releases.isEmpty {
            // The release owns the tables' shape; Coffer's own objects must still be there.
            differences += try missingBuiltInObjects(db, version: claimed).map { "missing \($0)" }
            return Report(version: differences.isEmpty ? claimed : nil, hasHistory: hasHistory, appliedMigrations: applied,
                          differences: differences, releaseMigrations: releases)
        }
        let expected = try expectedFingerprint(version: claimed)
        differences += summarized(expected.subtracting(actual)).map { "missing \($0)" }
        differences += summarized(actual.subtracting(expected)).map { "unexpected \($0)" }
        return Report(version: differences.isEmpty ? claimed : nil, hasHistory: hasHistory,
                      appliedMigrations: applied, differences: differences)
    }

    /// Differences, sorted, without the columns, keys and indexes of a table that is itself
    /// missing or unexpected: naming the table says it all.
    static func summarized(_ items: Set<String>) -> [String] {
        let tables = items.filter { $0.hasPrefix("table ") }.map { String($0.dropFirst(6)) }
        return items.filter { item in
            !tables.contains { table in
                item.hasPrefix("column \(table).") || item.hasPrefix("foreign key \(table).") || item.contains(" on \(table)(")
            }
        }.sorted()
    }

    /// Objects Coffer's migrations 2...version added (the full-text table and its triggers)
    /// that are not in `db`: a release that rebuilds `media` must re-create the triggers.
    static func missingBuiltInObjects(_ db: Database, version: Int) throws -> [String] {
        guard version >= 2 else { return [] }
        let seedTables = Set(SeedSchema.tables)
        let owned = try expectedFingerprint(version: version).filter { item in
            if item.hasPrefix("trigger ") || item.hasPrefix("view ") { return true }
            guard item.hasPrefix("table ") else { return false }
            return !seedTables.contains(String(item.dropFirst(6)))
        }
        return owned.subtracting(try fingerprint(db)).sorted()
    }

    /// The structure Coffer's migrations 1...version produce.
    public static func expectedFingerprint(version: Int) throws -> Set<String> {
        let queue = try DatabaseQueue()
        try SchemaMigrations.migrator().migrate(queue, upTo: SchemaMigrations.identifiers[version - 1])
        return try queue.read(fingerprint)
    }

    /// One line per structural element of the schema.
    public static func fingerprint(_ db: Database) throws -> Set<String> {
        var items: Set<String> = []
        let objects = try Row.fetchAll(db, sql: "SELECT type, name, tbl_name FROM sqlite_master ORDER BY name")
        for object in objects {
            // Optional: on a damaged file sqlite_master itself can hold NULLs.
            guard let type: String = object["type"], let name: String = object["name"],
                  let table: String = object["tbl_name"] else {
                items.insert("damaged sqlite_master row")
                continue
            }
            if isInternal(table) || name.hasPrefix("sqlite_autoindex_") { continue }
            switch type {
            case "table":
                items.insert("table \(name)")
                for column in try Row.fetchAll(db, sql: "PRAGMA table_xinfo(\(name.quotedDatabaseIdentifier))") {
                    let columnName: String = column["name"]
                    let type: String = (column["type"] as String? ?? "").uppercased()
                    let notNull: Bool = column["notnull"]
                    let defaultValue: String? = column["dflt_value"]
                    let primaryKey: Int = column["pk"]
                    items.insert("column \(name).\(columnName) \(type)"
                        + (notNull ? " NOT NULL" : "")
                        + (defaultValue.map { " DEFAULT \($0)" } ?? "")
                        + (primaryKey > 0 ? " PRIMARY KEY(\(primaryKey))" : ""))
                }
                for key in try Row.fetchAll(db, sql: "PRAGMA foreign_key_list(\(name.quotedDatabaseIdentifier))") {
                    let parent: String = key["table"], from: String = key["from"]
                    let to: String? = key["to"]
                    let onDelete: String = key["on_delete"], onUpdate: String = key["on_update"]
                    items.insert("foreign key \(name).\(from) -> \(parent).\(to ?? "(primary key)") on delete \(onDelete) on update \(onUpdate)")
                }
                for index in try Row.fetchAll(db, sql: "PRAGMA index_list(\(name.quotedDatabaseIdentifier))") {
                    let indexName: String = index["name"]
                    let unique: Bool = index["unique"]
                    let origin: String = index["origin"]
                    let columns = try String.fetchAll(
                        db, sql: "SELECT name FROM pragma_index_info(?) ORDER BY seqno", arguments: [indexName])
                    let label = origin == "c" ? "index \(indexName)" : "\(origin == "u" ? "unique constraint" : "primary key")"
                    items.insert("\(label) on \(name)(\(columns.joined(separator: ", ")))" + (unique && origin == "c" ? " UNIQUE" : ""))
                }
            case "index":
                continue // described with its table
            default:
                items.insert("\(type) \(name) on \(table)")
            }
        }
        return items
    }
}
