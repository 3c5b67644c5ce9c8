import Foundation
import GRDB
import Logging

/// `coffer import-jobs`: loads an export back into the database.
///
/// The manifest's checksums and row counts are verified first (a damaged export is refused
/// before anything is written). Then, in one transaction, jobs, media rows and events are
/// inserted in that order; a row whose primary key (or, for media, whose job) is already there
/// is counted as present and left as it is, never duplicated. Any other failure (a NOT NULL or
/// CHECK the current schema adds, a missing column) rolls the whole import back (exit 2).
/// export → purge → import gives back the same rows, with the same types.
public struct JobImporter {
    public var layout: VolumeLayout
    public var exportDirectory: String
    public var dryRun = false
    public var logger = Logger(label: "coffer.import")

    public init(configuration: CofferConfiguration, exportDirectory: String) {
        layout = configuration.layout
        self.exportDirectory = exportDirectory
    }

    public func run() throws -> ImportReport {
        let started = Date()
        let manifestPath = exportDirectory + "/manifest.json"
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: manifestPath)) else {
            throw CofferError(.failed, operation: "read", subject: manifestPath, cause: "no manifest: not a coffer export folder",
                              hint: "pass a jobs-... folder that coffer export-jobs wrote")
        }
        let manifest: ExportManifest
        do { manifest = try JSONDecoder().decode(ExportManifest.self, from: data) } catch {
            throw CofferError(.failed, operation: "read", subject: manifestPath, cause: "not a coffer export manifest: \(error)")
        }
        guard manifest.format == "coffer-jobs-export", manifest.version <= 1 else {
            throw CofferError(.failed, operation: "read", subject: manifestPath,
                              cause: "format \(manifest.format) version \(manifest.version) is not one this coffer reads", hint: "use a newer coffer")
        }
        guard !manifest.spreadsheetSafe else {
            throw CofferError(.failed, operation: "import", subject: exportDirectory,
                              cause: "a --spreadsheet-safe export has changed cells; importing it would change data",
                              hint: "import a plain export")
        }
        guard Set(manifest.files.keys) == Set(JobExporter.tables.map { $0 + ".csv" }) else {
            throw CofferError(.failed, operation: "import", subject: exportDirectory, cause: "the manifest does not list jobs.csv, media.csv and job_events.csv")
        }
        // Every file whole and as the manifest says, before anything is written.
        try JobExporter.readBack(exportDirectory, manifest: manifest)

        var report = ImportReport(export: exportDirectory, dryRun: dryRun)
        let queue = try DatabaseAccess.openExisting(layout.dbPath, readOnly: dryRun)
        defer { try? queue.close() }
        var binary: [String: [Int: [String: String]]] = [:] // file -> row -> column -> type
        for cell in manifest.binaryCells { binary[cell.file, default: [:]][cell.row, default: [:]][cell.column] = cell.type }
        do {
            let work = { (db: Database) throws in
                for table in JobExporter.tables {
                    let file = table + ".csv"
                    let counts = try load(table, columns: manifest.files[file]!.columns, binary: binary[file] ?? [:], db: db)
                    report.inserted[table] = counts.inserted
                    report.present[table] = counts.present
                }
                if !dryRun {
                    let violations = try Row.fetchAll(db, sql: "PRAGMA foreign_key_check")
                    guard violations.isEmpty else {
                        throw CofferError(.failed, operation: "import", subject: exportDirectory,
                                          cause: "\(violations.count) foreign key violation(s) after loading; rolled back, nothing imported")
                    }
                }
            }
            if dryRun {
                try queue.read(work)
            } else {
                try queue.inTransaction(.immediate) { db in
                    try work(db)
                    return .commit
                }
            }
        } catch let error as DatabaseError {
            throw CofferError(.failed, operation: "import into", subject: layout.dbPath,
                              cause: "\(error.message ?? "\(error.resultCode)"); rolled back, nothing imported",
                              hint: "the database's schema may have changed since the export (coffer migrate status)")
        }
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    func load(_ table: String, columns: [String], binary: [Int: [String: String]], db: Database) throws -> (inserted: Int, present: Int) {
        let existing = Set(try Row.fetchAll(db, sql: "PRAGMA table_info(\(table.quotedDatabaseIdentifier))").map { $0["name"] as String })
        if let missing = columns.first(where: { !existing.contains($0) }) {
            throw CofferError(.failed, operation: "import into", subject: layout.dbPath,
                              cause: "table \(table) has no column \(missing); nothing imported",
                              hint: "the database's schema is older or different from the export's source")
        }
        let names = columns.map(\.quotedDatabaseIdentifier).joined(separator: ", ")
        func sql(textCasts: Set<Int>) -> String {
            let values = columns.indices.map { textCasts.contains($0) ? "CAST(? AS TEXT)" : "?" }.joined(separator: ", ")
            return "INSERT INTO \(table.quotedDatabaseIdentifier) (\(names)) VALUES (\(values)) ON CONFLICT DO NOTHING"
        }
        let insert = dryRun ? nil : try db.makeStatement(sql: sql(textCasts: []))
        let probe = try db.makeStatement(sql: table == "media"
            ? "SELECT 1 FROM media WHERE id = ? OR job_id = ?" : "SELECT 1 FROM \(table.quotedDatabaseIdentifier) WHERE id = ?")
        let idIndex = columns.firstIndex(of: "id"), jobIndex = columns.firstIndex(of: "job_id")

        let path = exportDirectory + "/" + table + ".csv"
        let fd = try RawIO.openForReading(path)
        defer { close(fd) }
        let reader = CSVReader(fd: fd, path: path)
        _ = try reader.next() // the header, checked by the read-back
        var inserted = 0, present = 0, row = 0
        while let cells = try reader.next() {
            row += 1
            var textCasts = Set<Int>()
            let values: [DatabaseValue] = cells.enumerated().map { index, cell in
                guard case .text(let bytes) = cell else { return .null }
                if let type = binary[row]?[columns[index]] {
                    let raw = Digest.bytes(hex: String(decoding: bytes.dropFirst(2), as: UTF8.self))
                    if type == "text" { textCasts.insert(index) }
                    return Data(raw).databaseValue
                }
                return String(decoding: bytes, as: UTF8.self).databaseValue
            }
            if dryRun {
                var arguments: StatementArguments = [idIndex.map { values[$0] } ?? .null]
                if table == "media" { arguments += [jobIndex.map { values[$0] } ?? .null] }
                if try Bool.fetchOne(probe, arguments: arguments) == true { present += 1 } else { inserted += 1 }
                continue
            }
            if textCasts.isEmpty {
                try insert!.execute(arguments: StatementArguments(values))
            } else {
                try db.execute(sql: sql(textCasts: textCasts), arguments: StatementArguments(values))
            }
            if db.changesCount > 0 { inserted += 1 } else { present += 1 }
        }
        return (inserted, present)
    }
}

/// What `coffer import-jobs` did. Encoded as the `--json` document.
public struct ImportReport: Sendable, Codable {
    public var command = "import-jobs"
    public var export: String
    public var dryRun: Bool
    /// Rows inserted (or, in a dry run, that would be) per table.
    public var inserted: [String: Int] = [:]
    /// Rows already in the database (same key), left as they are.
    public var present: [String: Int] = [:]
    public var seconds: Double = 0

    public var status: ExitStatus { .ok }

    enum CodingKeys: String, CodingKey { case command, export, dryRun = "dry_run", inserted, present, seconds }

    public func text() -> String {
        let inserted = JobExporter.tables.map { "\(self.inserted[$0] ?? 0) \($0)" }.joined(separator: ", ")
        let present = JobExporter.tables.map { "\(self.present[$0] ?? 0) \($0)" }.joined(separator: ", ")
        return (dryRun ? "dry run: would import " : "imported ") + inserted + " from \(PathText.display(export))"
            + "; already present (left as they were): " + present
    }
}
