import GRDB

/// Coffer's built-in schema migrations, applied through GRDB's `DatabaseMigrator`
/// (see ``MigrationSet`` and ``MigrationEngine``).
///
/// Migration 1 is the seed's schema, 2 the media full-text search. A database the pipeline
/// created itself has the seed's tables but no migration history; ``SchemaInspector``
/// recognizes it as version 1.
public enum SchemaMigrations {
    /// Identifiers in the order they apply. GRDB records applied ones in `grdb_migrations`.
    public static let identifiers = MigrationSet.builtIn.map(\.identifier)

    public static var latestVersion: Int { identifiers.count }

    /// The built-in migrations, each recorded with its checksum as it is applied.
    public static func migrator() -> DatabaseMigrator {
        MigrationEngine(migrations: MigrationSet.builtIn).migrator()
    }

    /// The version a built-in migration identifier stands for (`0001_seed` → 1).
    static func version(of identifier: String) -> Int? {
        identifiers.firstIndex(of: identifier).map { $0 + 1 }
    }
}
