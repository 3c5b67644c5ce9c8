import GRDB

/// Coffer's schema migrations, applied through GRDB's `DatabaseMigrator`.
///
/// Migration 1 is the seed's schema. A database the pipeline created itself has the seed's
/// tables but no migration history; ``SchemaInspector`` recognizes it as version 1.
public enum SchemaMigrations {
    /// Identifiers in the order they apply. GRDB records applied ones in `grdb_migrations`.
    public static let identifiers = ["0001_seed"]

    public static var latestVersion: Int { identifiers.count }

    public static func migrator() -> DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("0001_seed") { db in
            try db.execute(sql: SeedSchema.sql)
        }
        return migrator
    }

    /// The version a migration identifier stands for (`0001_seed` → 1).
    static func version(of identifier: String) -> Int? {
        identifiers.firstIndex(of: identifier).map { $0 + 1 }
    }
}
