import GRDB

/// Where a database stands against the migrations Coffer knows: `coffer migrate status`.
public struct MigrationStatus: Sendable, Codable {
    public struct Applied: Sendable, Codable {
        public var identifier: String
        public var source: String?
        public var appliedAt: String?
        public var how: String?
        /// `ok`, `changed` (the text differs from what was applied), `not recorded`, `unknown`.
        public var checksum: String

        enum CodingKeys: String, CodingKey { case identifier, source, appliedAt = "applied_at", how, checksum }
    }

    public struct Pending: Sendable, Codable {
        public var identifier: String
        public var source: Migration.Source
        public var file: String?
    }

    public struct Problem: Sendable, Codable, Equatable {
        public enum Kind: String, Sendable, Codable {
            case checksumChanged = "checksum_changed", newerDatabase = "newer_database", outOfOrder = "out_of_order"
            case gap, unrecognizedSchema = "unrecognized_schema", schemaDrift = "schema_drift"
        }
        public var kind: Kind
        public var migration: String?
        public var message: String
    }

    public var command = "migrate status"
    public var database: String
    public var migrations: String?
    /// The highest migration applied (counting a pipeline-made database as 1).
    public var version: Int?
    /// A database the pipeline created itself: the seed is recorded (baselined) by `migrate up`.
    public var baseline = false
    public var applied: [Applied] = []
    public var pending: [Pending] = []
    public var problems: [Problem] = []

    public var status: ExitStatus { pending.isEmpty && problems.isEmpty ? .ok : .findings }

    enum CodingKeys: String, CodingKey { case command, database, migrations, version, baseline, applied, pending, problems }

    /// Inspects `db` against `set`. Read-only.
    public static func inspect(_ db: Database, set: MigrationSet, database: String) throws -> MigrationStatus {
        var status = MigrationStatus(database: database, migrations: set.directory)
        let history = try MigrationHistory.read(db)
        let known = Dictionary(set.migrations.map { ($0.identifier, $0) }, uniquingKeysWith: { a, _ in a })

        if history.isEmpty {
            let userTables = try Int.fetchOne(db, sql: """
                SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> 'grdb_migrations'
                """) ?? 0
            if userTables > 0 {
                let schema = try SchemaInspector.inspect(db)
                if schema.version == 1 {
                    status.baseline = true
                    status.version = 1
                    status.applied.append(Applied(identifier: set.migrations[0].identifier, source: "pipeline", appliedAt: nil,
                                                  how: "made by the pipeline (baselined by `migrate up`)", checksum: "ok"))
                } else {
                    status.problems.append(Problem(kind: .unrecognizedSchema, migration: nil,
                        message: "the database has tables but no migration history, and they are not the seed's schema: "
                            + schema.differences.joined(separator: "; ")))
                }
            }
        } else {
            for entry in history {
                guard let migration = known[entry.identifier] else {
                    status.applied.append(Applied(identifier: entry.identifier, source: entry.source, appliedAt: entry.appliedAt,
                                                  how: entry.how, checksum: "unknown"))
                    status.problems.append(Problem(kind: .newerDatabase, migration: entry.identifier,
                        message: entry.source == Migration.Source.release.rawValue
                            ? "applied from a release folder this run does not have: pass that release's --migrations folder"
                            : "applied by a newer Coffer or another tool: this Coffer will not migrate the database"))
                    continue
                }
                var checksum = "not recorded"
                if let recorded = entry.sha256 {
                    checksum = recorded == migration.sha256 ? "ok" : "changed"
                    if checksum == "changed" {
                        status.problems.append(Problem(kind: .checksumChanged, migration: entry.identifier,
                            message: "\(migration.file ?? entry.identifier) changed after it was applied (SHA-256 \(recorded.prefix(12))… then, \(migration.sha256.prefix(12))… now): restore the applied text; a change belongs in a new migration"))
                    }
                }
                status.applied.append(Applied(identifier: entry.identifier, source: entry.source ?? migration.source.rawValue,
                                              appliedAt: entry.appliedAt, how: entry.how, checksum: checksum))
            }
            status.version = history.compactMap { known[$0.identifier]?.id }.max()
            // Coffer's own structure is known: a database whose history has only built-in
            // migrations must look like them, and one with a release's must keep Coffer's objects.
            let drift = try SchemaInspector.inspect(db).differences.filter { !$0.hasPrefix("unknown migration") }
            if !drift.isEmpty && !status.problems.contains(where: { $0.kind == .newerDatabase }) {
                status.problems.append(Problem(kind: .schemaDrift, migration: nil,
                    message: "the schema differs from what its history says: " + drift.joined(separator: "; ")))
            }
        }

        let appliedIDs = Set(status.applied.map(\.identifier))
        let highest = status.version ?? 0
        for migration in set.migrations where !appliedIDs.contains(migration.identifier) {
            status.pending.append(Pending(identifier: migration.identifier, source: migration.source, file: migration.file))
            if migration.id < highest {
                status.problems.append(Problem(kind: .outOfOrder, migration: migration.identifier,
                    message: "pending, but a later migration (\(highest)) is already applied: number it after the applied ones"))
            }
        }
        let numbers = set.migrations.map(\.id)
        for (previous, next) in zip(numbers, numbers.dropFirst()) where next != previous + 1 {
            status.problems.append(Problem(kind: .gap, migration: set.migration(id: next)?.identifier,
                message: "no migration numbered \(previous + 1)\(next - previous > 2 ? "…\(next - 1)" : "") before it: is a file missing from the release?"))
        }
        return status
    }

    public func text() -> String {
        var lines = ["database \(database): version \(version.map(String.init) ?? "none")"
                     + (baseline ? " (made by the pipeline; `migrate up` records it as 1)" : "")]
        if !applied.isEmpty {
            lines.append("applied:")
            for entry in applied {
                lines.append("  \(entry.identifier)  \(entry.appliedAt ?? "-")  \(entry.how ?? "-")"
                             + (entry.checksum == "ok" ? "" : "  checksum \(entry.checksum)"))
            }
        }
        if pending.isEmpty {
            lines.append("pending: none")
        } else {
            lines.append("pending:")
            for entry in pending { lines.append("  \(entry.identifier)  (\(entry.file.map(PathText.display) ?? entry.source.rawValue))") }
        }
        for problem in problems {
            lines.append("problem: \(problem.kind.rawValue)" + (problem.migration.map { " \($0)" } ?? "") + ": \(problem.message)")
        }
        if problems.isEmpty && !pending.isEmpty { lines.append("next: `coffer migrate plan` (a dry run on a copy), then `coffer migrate up`") }
        return lines.joined(separator: "\n")
    }
}

extension MigrationSet {
    func migration(id: Int) -> Migration? { migrations.first { $0.id == id } }
}

extension MigrationStatus {
    /// The status of the configured database (opened read-only).
    public static func read(_ configuration: CofferConfiguration, set: MigrationSet) throws -> MigrationStatus {
        try MigrationFiles.readStatus(configuration.layout.dbPath, set: set)
    }
}
