import Foundation
import GRDB

/// What applying one migration did (or would do, on a copy).
public struct MigrationOutcome: Sendable, Codable {
    public struct Failure: Sendable, Codable, Equatable {
        /// The statement that failed, when one did.
        public var statement: String?
        public var message: String
    }

    public var identifier: String
    public var source: Migration.Source
    public var applied = false
    public var seconds: Double = 0
    public var rowsBefore: [String: Int] = [:]
    public var rowsAfter: [String: Int] = [:]
    public var changes: [SchemaChange] = []
    public var warnings: [MigrationWarning] = []
    /// `PRAGMA integrity_check` after the migration (plan only): `ok`, or the problems.
    public var integrityCheck: String?
    /// `PRAGMA foreign_key_check` after the migration: one line per violation.
    public var foreignKeyViolations: [String]?
    public var failure: Failure?

    init(_ migration: Migration) {
        identifier = migration.identifier
        source = migration.source
    }

    enum CodingKeys: String, CodingKey {
        case identifier, source, applied, seconds, rowsBefore = "rows_before", rowsAfter = "rows_after", changes, warnings
        case integrityCheck = "integrity_check", foreignKeyViolations = "foreign_key_violations", failure
    }

    var destructive: [MigrationWarning] { warnings.filter(\.destructive) }
}

/// A statement of a migration that failed or is not allowed.
struct StatementFailed: Error {
    var failure: MigrationOutcome.Failure
}

/// Why a migration was stopped and rolled back.
struct MigrationStopped: Error {
    var failure: MigrationOutcome.Failure
    var outcome: MigrationOutcome
}

/// Applies migrations through GRDB's `DatabaseMigrator`: each in its own transaction with
/// deferred foreign-key checks (foreign keys off outside the transaction, so a table rebuild's
/// DROP TABLE cascades nothing; `foreign_key_check` before commit), recorded in the history in
/// the same transaction.
///
/// With `analyze`, the schema, row counts and NULL counts are read before and after each
/// migration inside its transaction; destructive changes roll it back unless allowed.
struct MigrationEngine {
    var migrations: [Migration]
    var analyze = false
    var allowDestructive = true

    /// Statements a migration file may not contain: transaction control would end the
    /// migration's own transaction, ATTACH could write outside the database, VACUUM cannot run
    /// in a transaction.
    static let forbidden: Set<String> = ["BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "ATTACH", "DETACH", "VACUUM"]

    func migrator(collecting box: OutcomeBox? = nil) -> DatabaseMigrator {
        var migrator = DatabaseMigrator()
        for migration in migrations {
            let analyze = self.analyze, allowDestructive = self.allowDestructive
            migrator.registerMigration(migration.identifier) { db in
                try MigrationEngine.apply(migration, db, analyze: analyze, allowDestructive: allowDestructive, box: box)
            }
        }
        return migrator
    }

    static func apply(_ migration: Migration, _ db: Database, analyze: Bool, allowDestructive: Bool, box: OutcomeBox?) throws {
        var outcome = MigrationOutcome(migration)
        let before = analyze ? try SchemaShape.read(db, counting: true) : nil
        let start = DispatchTime.now()
        do {
            try execute(migration.sql, db)
        } catch let failed as StatementFailed {
            outcome.failure = failed.failure
            throw MigrationStopped(failure: failed.failure, outcome: outcome)
        }
        outcome.seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        // Test-only: holds the transaction open, so the kill -9 test lands inside migrations.
        if let pause = ProcessInfo.processInfo.environment["COFFER_TEST_MIGRATION_PAUSE"].flatMap(Double.init) {
            Thread.sleep(forTimeInterval: pause)
        }
        // A stop asked for now rolls this migration back with its transaction.
        try Interruption.check("migrate")
        if let before {
            let after = try SchemaShape.read(db, counting: true)
            let diff = SchemaDiff(before: before, after: after)
            outcome.rowsBefore = before.rowCounts
            outcome.rowsAfter = after.rowCounts
            outcome.changes = diff.changes
            outcome.warnings = diff.warnings
            let builtIn = try MigrationHistory.read(db).compactMap { SchemaMigrations.version(of: $0.identifier) }.max() ?? 0
            for object in try SchemaInspector.missingBuiltInObjects(db, version: builtIn) {
                outcome.warnings.append(MigrationWarning(kind: .builtInDropped,
                    message: "Coffer's \(object) is gone (was media rebuilt?): the full-text index would go stale; the migration must re-create it (FORMAT.md)",
                    destructive: true))
            }
            let destructive = outcome.destructive
            if !allowDestructive && !destructive.isEmpty {
                let failure = MigrationOutcome.Failure(statement: nil, message: "destructive: "
                    + destructive.map(\.message).joined(separator: "; ") + " (rolled back; --allow-destructive applies it)")
                outcome.failure = failure
                throw MigrationStopped(failure: failure, outcome: outcome)
            }
        }
        try MigrationHistory.record(db, migration, seconds: outcome.seconds, how: "applied")
        box?.outcomes.append(outcome)
    }

    /// Runs the statements one by one, so the one that fails can be named.
    static func execute(_ sql: String, _ db: Database) throws {
        let statements = try db.allStatements(sql: sql)
        while true {
            let statement: Statement
            do {
                guard let next = try statements.next() else { return }
                statement = next
            } catch let error as DatabaseError {
                throw StatementFailed(failure: .init(statement: error.sql.map(firstStatement), message: error.message ?? "\(error.resultCode)"))
            }
            let keyword = SQLText.firstKeyword(statement.sql)
            if forbidden.contains(keyword) {
                throw StatementFailed(failure: .init(statement: statement.sql, message: "\(keyword) is not allowed in a migration: "
                    + "each migration runs in its own transaction, and writes only to this database"))
            }
            do {
                try statement.execute()
            } catch let error as DatabaseError {
                throw StatementFailed(failure: .init(statement: statement.sql, message: error.message ?? "\(error.resultCode)"))
            }
            // Whatever got past the keyword check: a statement that ended the transaction.
            guard db.isInsideTransaction else {
                throw StatementFailed(failure: .init(statement: statement.sql, message: "this statement ended the migration's transaction: "
                    + "what ran before it is committed without being recorded; `coffer migrate status` shows the database as it is"))
            }
        }
    }

    /// The first statement of a text (what SQLite failed to prepare), at most 500 characters.
    static func firstStatement(_ sql: String) -> String {
        let text = sql.trimmingCharacters(in: .whitespacesAndNewlines)
        let first = text.firstIndex(of: ";").map { String(text[...$0]) } ?? text
        return first.count > 500 ? String(first.prefix(500)) + "…" : first
    }

    /// Applies `pending` one at a time (each committed before the next starts), calling `after`
    /// between them. Stops at the first failure, which is returned in its outcome.
    func apply(_ pending: [Migration], to queue: DatabaseQueue,
               after: (inout MigrationOutcome) throws -> Void = { _ in }) throws -> [MigrationOutcome] {
        var outcomes: [MigrationOutcome] = []
        let box = OutcomeBox()
        let migrator = migrator(collecting: box)
        let order = migrations.map(\.identifier)
        for migration in pending {
            box.outcomes = []
            // The database may have moved since its status was read (another run migrated it):
            // what is applied is skipped, and GRDB is never asked to go back (it would trap).
            try Interruption.check("migrate")
            let applied = try queue.read { try migrator.appliedIdentifiers($0) }
            if applied.contains(migration.identifier) { continue }
            if let position = order.firstIndex(of: migration.identifier),
               let later = order[(position + 1)...].first(where: applied.contains) {
                var outcome = MigrationOutcome(migration)
                outcome.failure = .init(statement: nil, message: "\(later) is already applied: the database changed while this run looked at it")
                outcomes.append(outcome)
                break
            }
            do {
                try migrator.migrate(queue, upTo: migration.identifier)
                guard var outcome = box.outcomes.last else { continue }
                outcome.applied = true
                try after(&outcome)
                outcomes.append(outcome)
            } catch let stopped as MigrationStopped {
                var outcome = stopped.outcome
                outcome.identifier = migration.identifier
                outcome.source = migration.source
                outcome.failure = stopped.failure
                outcomes.append(outcome)
                break
            } catch let error as DatabaseError {
                // GRDB's foreign_key_check before commit, or the commit itself.
                var outcome = box.outcomes.last ?? MigrationOutcome(migration)
                outcome.applied = false
                outcome.failure = .init(statement: nil, message: error.extendedResultCode == .SQLITE_CONSTRAINT_FOREIGNKEY
                    ? "foreign_key_check failed before commit: \(error.message ?? "violation")" : (error.message ?? "\(error.resultCode)"))
                outcomes.append(outcome)
                break
            }
        }
        return outcomes
    }
}

/// Collects outcomes from inside GRDB's migration closures (which run on the queue, serially).
final class OutcomeBox: @unchecked Sendable {
    var outcomes: [MigrationOutcome] = []
}
