/// What `coffer backup` did. Encoded as the `--json` document.
public struct BackupReport: Sendable, Codable {
    public var command = "backup"
    public var repository: String
    public var snapshot: String?
    public var parent: String?
    public var dryRun: Bool
    public var files = 0
    public var bytes: Int64 = 0
    /// Files whose content went into this run's pack (new or changed), and their bytes.
    public var filesAdded = 0
    public var bytesAdded: Int64 = 0
    /// Media bytes read from the volume (0 for an unchanged library).
    public var bytesRead: Int64 = 0
    public var packBytes: Int64 = 0
    /// Estimated size of the pack, checked against the repository's free space.
    public var estimatedBytes: Int64 = 0
    public var databaseBytes: Int64 = 0
    public var databaseRows: [String: Int] = [:]
    /// The database was byte for byte the parent snapshot's: its stored copy (and check) serve again.
    public var databaseUnchanged = false
    public var problems: [Snapshot.Problem] = []
    public var findings = 0
    public var seconds: Double = 0

    public var status: ExitStatus { problems.isEmpty ? .ok : .findings }

    enum CodingKeys: String, CodingKey {
        case command, repository, snapshot, parent, dryRun = "dry_run", files, bytes, filesAdded = "files_added"
        case bytesAdded = "bytes_added", bytesRead = "bytes_read", packBytes = "pack_bytes", estimatedBytes = "estimated_bytes"
        case databaseBytes = "database_bytes", databaseRows = "database_rows", databaseUnchanged = "database_unchanged"
        case problems, findings, seconds
    }

    /// The human report. Problems are listed by kind, at most `limit` of each (all with `nil`):
    /// a MEDIA_ROOT pointed at the wrong place makes one per file, and cron mails the text.
    public func text(limit: Int? = 20) -> String {
        var lines: [String] = []
        if dryRun {
            lines.append("dry run: would write about \(Formatting.bytes(estimatedBytes)) to \(PathText.display(repository))")
        } else {
            lines.append("snapshot \(snapshot ?? "-") saved in \(PathText.display(repository))" + (parent.map { " (parent \($0))" } ?? ""))
        }
        lines.append("  files \(files) (\(Formatting.bytes(bytes))), new or changed \(filesAdded) (\(Formatting.bytes(bytesAdded))), media read \(Formatting.bytes(bytesRead))")
        let rows = databaseRows.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        lines.append("  database \(Formatting.bytes(databaseBytes)) (\(rows))" + (databaseUnchanged ? ", unchanged since the parent: its stored copy serves" : ""))
        if !dryRun { lines.append("  pack \(Formatting.bytes(packBytes)), \(Formatting.seconds(seconds))") }
        let listed = Snapshot.Summary.listLimit // what a record lists of each
        if findings > 0 {
            lines.append("  \(findings) reconciliation finding(s) recorded in the snapshot" + (findings > listed ? " (the first \(listed) listed)" : "")
                         + " (`coffer verify` shows them live)")
        }
        if problems.count > listed { lines.append("  \(problems.count) problems; the snapshot lists the first \(listed)") }
        // Grouped by kind through indices: the problems are not copied (there may be a million).
        var kinds: [String] = []
        var byKind: [String: [Int]] = [:]
        for (index, problem) in problems.enumerated() {
            if byKind[problem.kind] == nil { kinds.append(problem.kind) }
            byKind[problem.kind, default: []].append(index)
        }
        for kind in kinds {
            let group = byKind[kind] ?? []
            for index in group.prefix(limit ?? group.count) {
                let problem = problems[index]
                lines.append("  \(problem.kind): \(problem.path)" + (problem.jobID.map { " (job \($0))" } ?? "") + ": \(problem.message)")
            }
            if let limit, group.count > limit {
                lines.append("  ... and \(group.count - limit) more \(kind) (--verbose or --json lists all)")
            }
        }
        return lines.joined(separator: "\n")
    }
}
