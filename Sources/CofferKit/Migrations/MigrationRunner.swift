import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// `coffer migrate plan`: the pending migrations applied to a copy of the live database, with a
/// report per migration; the copy is then removed and the source is never written.
public struct MigrationPlanner {
    public var configuration: CofferConfiguration
    public var set: MigrationSet

    public init(configuration: CofferConfiguration, set: MigrationSet) {
        self.configuration = configuration
        self.set = set
    }

    public func run() throws -> MigrationReport {
        let dbPath = configuration.layout.dbPath
        var report = MigrationReport(command: "migrate plan", database: dbPath, status: try MigrationFiles.readStatus(dbPath, set: set))
        guard report.status.problems.isEmpty, !report.status.pending.isEmpty else { return report }

        let started = Date()
        MigrationFiles.sweep(besides: dbPath)
        let copyPath = MigrationFiles.scratchName(besides: dbPath, kind: "plan")
        defer { DatabaseCopy.remove(copyPath) }
        try MigrationFiles.checkSpace(for: dbPath, copies: 2)
        _ = try DatabaseCopy.take(from: dbPath, to: copyPath)
        report.copySeconds = Date().timeIntervalSince(started)

        let queue = try DatabaseQueue(path: copyPath, configuration: DatabaseAccess.configuration(readOnly: false))
        defer { try? queue.close() }
        // The copy is the cut the plan works on: its status, not the one read a moment before
        // (a `migrate up` may have committed in between).
        let status = try queue.read { try MigrationStatus.inspect($0, set: set, database: dbPath) }
        report.status = status
        guard status.problems.isEmpty, !status.pending.isEmpty else { return report }
        try MigrationFiles.prepareHistory(queue, status: status, set: set)
        let pending = status.pending.compactMap { set.migration(identifier: $0.identifier) }
        report.outcomes = try MigrationEngine(migrations: set.migrations, analyze: true).apply(pending, to: queue) { outcome in
            try queue.inDatabase { db in
                var lines = try String.fetchAll(db, sql: "PRAGMA integrity_check(20)")
                // SQLite 3.40's integrity_check does not look into FTS5 indexes.
                if try db.tableExists("media_fts") {
                    do {
                        try db.execute(sql: "INSERT INTO media_fts (media_fts) VALUES ('integrity-check')")
                    } catch let error as DatabaseError {
                        lines = (lines == ["ok"] ? [] : lines) + ["media_fts: \(error.message ?? "\(error.resultCode)")"]
                    }
                }
                outcome.integrityCheck = lines.joined(separator: "; ")
                outcome.foreignKeyViolations = try MigrationFiles.foreignKeyViolations(db)
            }
        }
        report.notTried = pending.dropFirst(report.outcomes.count).map(\.identifier)
        return report
    }
}

/// `coffer migrate up`: a backup first, then each pending migration in its own transaction.
public struct MigrationUpgrader {
    public enum Backup: Sendable, Equatable { case repository, copy, none }

    public var configuration: CofferConfiguration
    public var set: MigrationSet
    public var target: String?
    public var backup = Backup.copy
    public var allowDestructive = false

    public init(configuration: CofferConfiguration, set: MigrationSet) {
        self.configuration = configuration
        self.set = set
        backup = configuration.repo == nil ? .copy : .repository
    }

    public func run() throws -> MigrationReport {
        let dbPath = configuration.layout.dbPath
        let lock = try MigrationFiles.lock(dbPath)
        defer { withExtendedLifetime(lock) {} }
        let queue = try DatabaseAccess.openExisting(dbPath, readOnly: false)
        defer { try? queue.close() }
        let status = try queue.read { try MigrationStatus.inspect($0, set: set, database: dbPath) }
        var report = MigrationReport(command: "migrate up", database: dbPath, status: status)
        guard status.problems.isEmpty else {
            throw CofferError(.failed, operation: "migrate", subject: dbPath,
                              cause: status.problems.map { "\($0.kind.rawValue)\($0.migration.map { " \($0)" } ?? ""): \($0.message)" }.joined(separator: "; ")
                                  + "; nothing was changed",
                              hint: "`coffer migrate status` lists what is wrong")
        }

        var pending = status.pending.compactMap { set.migration(identifier: $0.identifier) }
        if let target {
            let goal = try set.resolve(target)
            if let version = status.version, goal.id < version {
                throw CofferError(.failed, operation: "migrate", subject: dbPath,
                                  cause: "the database is at \(version), beyond --to \(goal.identifier); Coffer does not migrate down",
                                  hint: "to go back, restore the copy or snapshot taken before that migration")
            }
            pending = pending.filter { $0.id <= goal.id }
        }
        guard !pending.isEmpty else { return report }

        try MigrationFiles.checkSpace(for: dbPath, copies: backup == .copy ? 2 : 1)
        let started = Date()
        switch backup {
        case .repository:
            var runner = BackupRunner(configuration: configuration)
            runner.tags = ["pre-migrate"]
            let backupReport = try runner.run()
            report.backupSnapshot = backupReport.snapshot
            report.restoreHint = "coffer restore --repo \(PathText.display(backupReport.repository)) --snapshot \(backupReport.snapshot ?? "latest") --only db --db \(PathText.display(dbPath)).restored --media-root \(PathText.display(configuration.layout.mediaRoot))"
                + ", stop the pipeline, then move the restored file over \(PathText.display(dbPath)) (and remove its -wal and -shm)"
        case .copy:
            let copy = try MigrationFiles.keepCopy(of: dbPath, version: status.version ?? 0)
            report.backupCopy = copy
            report.restoreHint = "stop the pipeline, remove \(PathText.display(dbPath))-wal and -shm, then `mv \(PathText.display(copy)) \(PathText.display(dbPath))`"
        case .none:
            report.restoreHint = nil
        }
        report.backupSeconds = Date().timeIntervalSince(started)

        try MigrationFiles.prepareHistory(queue, status: status, set: set)
        let engine = MigrationEngine(migrations: set.migrations, analyze: true, allowDestructive: allowDestructive)
        report.outcomes = try engine.apply(pending, to: queue) { outcome in
            outcome.foreignKeyViolations = try queue.read(MigrationFiles.foreignKeyViolations)
        }
        report.notTried = pending.dropFirst(report.outcomes.count).map(\.identifier)
        report.quickCheck = try queue.read { try String.fetchAll($0, sql: "PRAGMA quick_check(20)").joined(separator: "; ") }
        report.versionAfter = try queue.read { db in
            try MigrationHistory.read(db).compactMap { set.migration(identifier: $0.identifier)?.id }.max()
        }
        try queue.writeWithoutTransaction { db in _ = try db.checkpoint(.passive) }
        return report
    }
}

/// What `migrate plan` and `migrate up` did. Encoded as the `--json` document.
public struct MigrationReport: Sendable, Codable {
    public var command: String
    public var database: String
    public var status: MigrationStatus
    public var copySeconds: Double?
    public var backupSnapshot: String?
    public var backupCopy: String?
    public var backupSeconds: Double?
    public var restoreHint: String?
    public var outcomes: [MigrationOutcome] = []
    public var notTried: [String] = []
    public var quickCheck: String?
    public var versionAfter: Int?

    enum CodingKeys: String, CodingKey {
        case command, database, status, copySeconds = "copy_seconds", backupSnapshot = "backup_snapshot", backupCopy = "backup_copy"
        case backupSeconds = "backup_seconds", restoreHint = "restore_hint", outcomes = "migrations", notTried = "not_tried"
        case quickCheck = "quick_check", versionAfter = "version_after"
    }

    init(command: String, database: String, status: MigrationStatus) {
        self.command = command
        self.database = database
        self.status = status
    }

    public var failed: Bool { outcomes.contains { $0.failure != nil } || (quickCheck.map { $0 != "ok" } ?? false) }

    public var exitStatus: ExitStatus {
        if command == "migrate up" { return failed ? .failed : .ok }
        let unsafe = outcomes.contains { $0.failure != nil || !$0.warnings.isEmpty || $0.integrityCheck != "ok" || !($0.foreignKeyViolations ?? []).isEmpty }
        return unsafe || !status.problems.isEmpty ? .findings : .ok
    }

    public func text() -> String {
        var lines: [String] = []
        if !status.problems.isEmpty || status.pending.isEmpty || outcomes.isEmpty {
            lines.append(status.text())
            if !status.problems.isEmpty { lines.append(command == "migrate plan" ? "nothing was tried: the problems come first" : "nothing was changed") }
            else if status.pending.isEmpty { lines.append("up to date") }
            return lines.joined(separator: "\n")
        }
        let onCopy = command == "migrate plan"
        lines.append("\(onCopy ? "dry run on a copy of" : "migrating") \(PathText.display(database)) from version \(status.version.map(String.init) ?? "none")"
                     + (status.baseline ? " (the pipeline's own schema, recorded as 1)" : ""))
        if let copySeconds { lines.append("  copy taken in \(Formatting.seconds(copySeconds)) (online backup API; the source is not written)") }
        if let backupSnapshot { lines.append("  backup: snapshot \(backupSnapshot)") }
        if let backupCopy { lines.append("  backup: \(PathText.display(backupCopy))") }
        for outcome in outcomes {
            let state = outcome.failure != nil ? "FAILED (rolled back)" : onCopy ? "ok on the copy" : "applied"
            lines.append("\(outcome.identifier) [\(outcome.source.rawValue)]: \(state) in \(Formatting.seconds(outcome.seconds))")
            let tables = Set(outcome.rowsBefore.keys).union(outcome.rowsAfter.keys).sorted()
            if !tables.isEmpty {
                lines.append("  rows: " + tables.map { table in
                    let before = outcome.rowsBefore[table].map(String.init) ?? "-", after = outcome.rowsAfter[table].map(String.init) ?? "-"
                    return before == after ? "\(table) \(after)" : "\(table) \(before) → \(after)"
                }.joined(separator: ", "))
            }
            for change in outcome.changes {
                lines.append("  \(change.change.rawValue) \(change.object) \(change.name)" + (change.detail.map { ": \($0)" } ?? ""))
            }
            if let integrity = outcome.integrityCheck { lines.append("  integrity_check: \(integrity)") }
            if let violations = outcome.foreignKeyViolations {
                lines.append("  foreign_key_check: " + (violations.isEmpty ? "ok" : violations.joined(separator: "; ")))
            }
            for warning in outcome.warnings {
                lines.append("  warning: \(warning.message)" + (warning.destructive ? " [destructive]" : ""))
            }
            if let failure = outcome.failure {
                lines.append("  error: \(failure.message)")
                if let statement = failure.statement { lines.append("  statement: \(statement)") }
            }
        }
        if !notTried.isEmpty { lines.append("not tried: \(notTried.joined(separator: ", "))") }
        if let quickCheck { lines.append("quick_check: \(quickCheck)") }
        if onCopy {
            lines.append(exitStatus == .ok ? "safe: `coffer migrate up` applies the same migrations"
                                           : "not safe as it stands: read the warnings and errors above")
        } else if failed {
            lines.append("the database is at version \(versionAfter.map(String.init) ?? "none") (every migration before the failed one is applied)")
            if let restoreHint { lines.append("to go back to before the migration: \(restoreHint)") }
        } else {
            lines.append("the database is at version \(versionAfter.map(String.init) ?? "none")")
        }
        return lines.joined(separator: "\n")
    }
}

/// The files and checks `migrate` shares: scratch names beside the database, the lock, space.
enum MigrationFiles {
    static func readStatus(_ dbPath: String, set: MigrationSet) throws -> MigrationStatus {
        let queue = try DatabaseAccess.openExisting(dbPath, readOnly: true)
        defer { try? queue.close() }
        return try queue.read { try MigrationStatus.inspect($0, set: set, database: dbPath) }
    }

    /// `db.sqlite.coffer-plan-PID`: beside the database, so on its filesystem.
    static func scratchName(besides dbPath: String, kind: String) -> String { "\(dbPath).coffer-\(kind)-\(getpid())" }

    /// Removes scratch copies that killed runs left beside the database (their process is gone).
    static func sweep(besides dbPath: String) {
        let directory = PathText.parent(dbPath)
        let base = PathBytes(dbPath.utf8).split(separator: 0x2F).last.map(Array.init) ?? []
        try? DirectoryWalker(root: directory).list { entry in
            for kind in ["plan", "copy"] {
                let prefix = base + Array(".coffer-\(kind)-".utf8)
                guard entry.kind == .regular, entry.relativePath.starts(with: prefix) else { continue }
                let rest = entry.relativePath.dropFirst(prefix.count)
                let digits = rest.prefix { $0 >= 0x30 && $0 <= 0x39 }
                guard let pid = Int32(String(decoding: digits, as: UTF8.self)), kill(pid, 0) != 0, errno == ESRCH else { continue }
                _ = PathBytes(directory.utf8).appendingComponent(Array(entry.relativePath)).withCPath { unlink($0) }
            }
        }
    }

    /// Free space beside the database for `copies` times its size (a copy, the WAL a rebuild
    /// writes).
    static func checkSpace(for dbPath: String, copies: Int64) throws {
        var size: Int64 = 0
        for suffix in ["", "-wal"] { if case .success(let info) = FileSystem.status(dbPath + suffix) { size += info.size } }
        let needed = size * copies
        let directory = PathText.parent(dbPath)
        guard case .success(let space) = FileSystem.freeSpace(directory) else { return }
        if Int64(clamping: space.available) < needed {
            throw CofferError(.failed, operation: "check free space in", subject: directory,
                              cause: "about \(Formatting.bytes(needed)) needed (the database is \(Formatting.bytes(size))), \(Formatting.bytes(space.available)) free",
                              hint: "free space there, then run again; nothing was changed")
        }
    }

    /// One run that changes the database's rows or schema at a time (`migrate up`,
    /// `export-jobs --purge`): an `flock` on the database file itself (SQLite uses POSIX
    /// record locks, which `flock` does not touch). It dies with the process.
    static func lock(_ dbPath: String) throws -> MigrationLock {
        let fd = open(dbPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw CofferError.system("open database", dbPath, errno: errno, hint: "check DB_PATH (or --db); `coffer config` shows where it came from")
        }
        if FileSystem.tryLock(fd) != 0 {
            close(fd)
            throw CofferError(.locked, operation: "lock database", subject: dbPath,
                              cause: "another `coffer migrate up` or `coffer export-jobs --purge` is changing it",
                              hint: "wait for it to finish (`ps -C coffer -o pid,args`), then run again")
        }
        return MigrationLock(fd: fd)
    }

    /// The pre-migration copy kept beside the database: `db.sqlite.pre-migrate-v2-20261125T213000Z`,
    /// written under a scratch name, synced, then renamed.
    static func keepCopy(of dbPath: String, version: Int) throws -> String {
        sweep(besides: dbPath)
        let final = "\(dbPath).pre-migrate-v\(version)-\(UTCTime.compact(Date()))"
        let scratch = scratchName(besides: dbPath, kind: "copy")
        defer { DatabaseCopy.remove(scratch) }
        _ = try DatabaseCopy.take(from: dbPath, to: scratch)
        try RawIO.publish(scratch, as: final)
        return final
    }

    /// Records the seed of a pipeline-made database, and the details of applied migrations a
    /// Coffer without checksums applied.
    static func prepareHistory(_ queue: DatabaseQueue, status: MigrationStatus, set: MigrationSet) throws {
        let missing = status.applied.filter { $0.checksum == "not recorded" }.compactMap { set.migration(identifier: $0.identifier) }
        guard status.baseline || !missing.isEmpty else { return }
        try queue.writeWithoutTransaction { db in
            try MigrationHistory.baseline(db, seed: status.baseline ? set.migrations[0] : nil, missingDetails: missing)
        }
    }

    static func foreignKeyViolations(_ db: Database) throws -> [String] {
        try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").prefix(20).map { row in
            "\(row["table"] as String? ?? "?") row \(row["rowid"] as Int64? ?? -1) → \(row["parent"] as String? ?? "?")"
        }
    }
}

final class MigrationLock {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    deinit {
        flock(fd, LOCK_UN)
        close(fd)
    }
}
