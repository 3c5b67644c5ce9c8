import Foundation

/// What `coffer verify` found on a live volume. Encoded as the `--json` document.
public struct VerifyReport: Sendable, Codable {
    public struct Counts: Sendable, Codable, Equatable {
        public var jobs = 0
        public var jobsByStatus: [String: Int] = [:]
        public var mediaRows = 0
        public var events = 0
        public var referencedFiles = 0
        public var libraryFiles = 0
        public var tempDirectories = 0

        enum CodingKeys: String, CodingKey {
            case jobs, jobsByStatus = "jobs_by_status", mediaRows = "media_rows", events
            case referencedFiles = "referenced_files", libraryFiles = "library_files", tempDirectories = "temp_dirs"
        }
    }

    public struct Summary: Sendable, Codable, Equatable {
        public var errors: Int
        public var warnings: Int
        public var byKind: [String: Int]
        enum CodingKeys: String, CodingKey { case errors, warnings, byKind = "by_kind" }
    }

    public var command = "verify"
    public var dbPath: String
    public var mediaRoot: String
    /// `quick_check` or `integrity_check`.
    public var databaseCheck: String
    public var schema: SchemaInspector.Report?
    public var counts = Counts()
    public var freeSpaceBytes: UInt64?
    public var findings: [Finding] = []
    public var durationSeconds: Double = 0

    public var summary: Summary {
        var byKind: [String: Int] = [:]
        for finding in findings { byKind[finding.kind.rawValue, default: 0] += 1 }
        return Summary(errors: findings.count { $0.severity == .error },
                       warnings: findings.count { $0.severity == .warning }, byKind: byKind)
    }

    /// 0 when nothing was found, 1 otherwise.
    public var status: ExitStatus { findings.isEmpty ? .ok : .findings }

    enum CodingKeys: String, CodingKey {
        case command, dbPath = "db_path", mediaRoot = "media_root", databaseCheck = "database_check", schema
        case counts, freeSpaceBytes = "free_space_bytes", findings, durationSeconds = "duration_seconds"
        case summary, exitCode = "exit_code"
    }

    public init(dbPath: String, mediaRoot: String, databaseCheck: String) {
        self.dbPath = dbPath
        self.mediaRoot = mediaRoot
        self.databaseCheck = databaseCheck
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dbPath = try c.decode(String.self, forKey: .dbPath)
        mediaRoot = try c.decode(String.self, forKey: .mediaRoot)
        databaseCheck = try c.decode(String.self, forKey: .databaseCheck)
        schema = try c.decodeIfPresent(SchemaInspector.Report.self, forKey: .schema)
        counts = try c.decode(Counts.self, forKey: .counts)
        freeSpaceBytes = try c.decodeIfPresent(UInt64.self, forKey: .freeSpaceBytes)
        findings = try c.decode([Finding].self, forKey: .findings)
        durationSeconds = try c.decode(Double.self, forKey: .durationSeconds)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(command, forKey: .command)
        try c.encode(dbPath, forKey: .dbPath)
        try c.encode(mediaRoot, forKey: .mediaRoot)
        try c.encode(databaseCheck, forKey: .databaseCheck)
        try c.encode(schema, forKey: .schema)
        try c.encode(counts, forKey: .counts)
        try c.encode(freeSpaceBytes, forKey: .freeSpaceBytes)
        try c.encode(findings, forKey: .findings)
        try c.encode(durationSeconds, forKey: .durationSeconds)
        try c.encode(summary, forKey: .summary)
        try c.encode(status.rawValue, forKey: .exitCode)
    }

    /// The human report: a header, the counts, then findings grouped by kind with their counts.
    /// At most `limit` findings of each kind are listed (all of them with `nil`).
    public func text(limit: Int? = 20) -> String {
        var lines: [String] = []
        lines.append("verify \(PathText.display(dbPath)) + \(PathText.display(mediaRoot))")
        let schemaText: String
        if let schema {
            schemaText = schema.version.map { "schema version \($0)" + (schema.hasHistory ? "" : " (made by the pipeline)")
                + (schema.releaseMigrations.map { " + release migrations \($0.joined(separator: ", "))" } ?? "") } ?? "schema not recognized"
        } else {
            schemaText = "schema not read"
        }
        lines.append("  database: \(databaseCheck), foreign_key_check, \(schemaText)")
        lines.append("  jobs \(counts.jobs), media rows \(counts.mediaRows), events \(counts.events), "
                     + "files referenced \(counts.referencedFiles), library files \(counts.libraryFiles), temp dirs \(counts.tempDirectories)")
        if let freeSpaceBytes { lines.append("  free space \(Formatting.bytes(freeSpaceBytes))") }
        let summary = summary
        if findings.isEmpty {
            lines.append("  no findings (\(Formatting.seconds(durationSeconds)))")
            return lines.joined(separator: "\n")
        }
        lines.append("  findings: \(summary.errors) error(s), \(summary.warnings) warning(s) (\(Formatting.seconds(durationSeconds)))")
        for kind in Finding.Kind.allCases {
            let group = findings.filter { $0.kind == kind }
            guard !group.isEmpty else { continue }
            lines.append("\(kind.rawValue) (\(group.count), \(kind.severity.rawValue))")
            for finding in group.prefix(limit ?? group.count) {
                var line = "  "
                if let jobID = finding.jobID { line += "job \(jobID): " }
                line += finding.message
                if let path = finding.path { line += ": \(path)" }
                var detail: [String] = []
                if let expected = finding.expected { detail.append("expected \(expected)") }
                if let actual = finding.actual { detail.append("actual \(actual)") }
                if !detail.isEmpty { line += " (" + detail.joined(separator: ", ") + ")" }
                lines.append(line)
            }
            if let limit, group.count > limit {
                lines.append("  ... and \(group.count - limit) more (--verbose or --json lists all)")
            }
        }
        return lines.joined(separator: "\n")
    }
}
