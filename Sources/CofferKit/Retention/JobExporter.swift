import Crypto
import Foundation
import GRDB
import GRDBSQLite
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// `coffer export-jobs`: old finished jobs, with their media rows and events, into CSV files,
/// and with `purge` out of the database — without losing a row.
///
/// The three tables are read in one read transaction (one consistent cut while the pipeline
/// writes) and streamed into `jobs.csv`, `media.csv` and `job_events.csv` plus a `manifest.json`
/// in a temporary folder under the output directory; each file is fsynced, then the folder is
/// renamed into place, so an export appears whole or not at all.
///
/// Purge happens only after that, and only after the files were read back, re-hashed and their
/// rows counted against the manifest: in one IMMEDIATE transaction, the jobs listed in the
/// export are deleted with their media rows and events, and every count must equal the
/// export's (a job retried or an event added since the export rolls everything back, exit 2).
/// A run killed at any moment leaves each job in the database or in a complete export; running
/// again exports what is still there and purges it.
public struct JobExporter {
    public var layout: VolumeLayout
    public var olderThan: RetentionAge
    public var outDirectory: String
    public var statuses: [String] = SeedSchema.finishedStatuses.sorted()
    public var purge = false
    public var deleteMedia = false
    public var dryRun = false
    public var spreadsheetSafe = false
    public var now = Date()
    public var logger = Logger(label: "coffer.export")

    public static let tables = ["jobs", "media", "job_events"]
    static let temporaryPrefix = ".coffer-export-tmp-"

    public init(configuration: CofferConfiguration, olderThan: RetentionAge, outDirectory: String) {
        layout = configuration.layout
        self.olderThan = olderThan
        self.outDirectory = outDirectory
    }

    /// `created_at` before this (UTC, SQLite's datetime format).
    var cutoff: String { UTCTime.sqlite(now.addingTimeInterval(-olderThan.seconds)) }

    /// The selection, on `jobs` as `j`: finished jobs of the chosen statuses created before the cutoff.
    var selection: (sql: String, arguments: StatementArguments) {
        let marks = statuses.map { _ in "?" }.joined(separator: ", ")
        // `+` keeps SQLite off the status index: the jobs are then read in id order through the
        // primary key, with no sort in memory (a million jobs in constant memory).
        return ("+j.status IN (\(marks)) AND julianday(j.created_at) < julianday(?)",
                StatementArguments(statuses + [cutoff]))
    }

    func validate() throws {
        guard !statuses.isEmpty else {
            throw CofferError(.usage, operation: "export jobs", cause: "--status names no status", hint: "e.g. --status COMPLETE,FAILED")
        }
        for status in statuses where !SeedSchema.finishedStatuses.contains(status) {
            throw CofferError(.usage, operation: "export jobs with status", subject: status,
                              cause: SeedSchema.statuses.contains(status) ? "not a finished status: unfinished jobs are never exported"
                                                                          : "no such status",
                              hint: "choose among COMPLETE, FAILED, CANCELED")
        }
        if deleteMedia && !purge {
            throw CofferError(.usage, operation: "export jobs", cause: "--delete-media needs --purge",
                              hint: "media of jobs that stay in the database are never deleted")
        }
        if spreadsheetSafe && purge {
            throw CofferError(.usage, operation: "export jobs", cause: "--spreadsheet-safe changes cells, so such an export cannot replace the rows",
                              hint: "purge with a plain export; make a spreadsheet-safe copy separately")
        }
    }

    public func run() throws -> ExportReport {
        let started = Date()
        try validate()
        var report = ExportReport(outDirectory: outDirectory, dryRun: dryRun, olderThan: olderThan.text, cutoff: cutoff,
                                  statuses: statuses, purge: purge)
        let queue = try DatabaseAccess.openExisting(layout.dbPath, readOnly: !purge || dryRun)
        defer { try? queue.close() }
        let columns: [String: [String]]
        do {
            columns = try queue.read { db in
                var columns: [String: [String]] = [:]
                for table in Self.tables {
                    guard try db.tableExists(table) else {
                        throw CofferError(.failed, operation: "export jobs from", subject: layout.dbPath,
                                          cause: "no \(table) table: not the pipeline's database; nothing was written",
                                          hint: "check DB_PATH")
                    }
                    columns[table] = try Row.fetchAll(db, sql: "PRAGMA table_info(\(table.quotedDatabaseIdentifier))").map { $0["name"] as String }
                }
                return columns
            }
        } catch let error as DatabaseError {
            throw DatabaseAccess.databaseFailure("export jobs from", layout.dbPath, error)
        }

        if dryRun {
            try queue.read { db in
                let (where_, arguments) = selection
                report.rows["jobs"] = try Int.fetchOne(db, sql: "SELECT count(*) FROM jobs j WHERE \(where_)", arguments: arguments) ?? 0
                report.rows["media"] = try Int.fetchOne(db, sql: "SELECT count(*) FROM media m JOIN jobs j ON j.id = m.job_id WHERE \(where_)", arguments: arguments) ?? 0
                report.rows["job_events"] = try Int.fetchOne(db, sql: "SELECT count(*) FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE \(where_)", arguments: arguments) ?? 0
            }
            report.seconds = Date().timeIntervalSince(started)
            return report
        }

        // One purge at a time per database, and none beside a migration: a second would
        // export the same jobs again, then find them changed and purge nothing.
        let databaseLock = purge ? try MigrationFiles.lock(layout.dbPath) : nil
        defer { withExtendedLifetime(databaseLock) {} }
        try FileSystem.makeDirectories(outDirectory, mode: 0o755)
        let lock = try RepositoryLock.acquire(outDirectory + "/.coffer-export.lock", exclusive: true, command: "export-jobs", what: "export folder")
        defer { withExtendedLifetime(lock) {} }
        FileSystem.removeDirectories(in: outDirectory, named: Self.temporaryPrefix)

        // 1. The export, whole or not at all.
        let name = "jobs-" + Snapshot.makeID(now)
        let temporary = outDirectory + "/" + Self.temporaryPrefix + name
        let final = outDirectory + "/" + name
        try FileSystem.makeDirectory(temporary, mode: 0o700)
        var published = false
        defer { if !published { FileSystem.removeTree(temporary) } }
        var manifest = ExportManifest(created: UTCTime.iso8601(now), source: layout.dbPath,
                                      olderThan: olderThan.text, cutoff: cutoff, statuses: statuses, spreadsheetSafe: spreadsheetSafe)
        do {
            try queue.read { db in
                // Each child row looks its job up by key: a larger cache than a scan's keeps those
                // pages instead of reading them again (229,000 preads → ~80,000 at 100,000 jobs; 8 MB keeps peak memory well under 64 MiB).
                try db.execute(sql: "PRAGMA cache_size = -\(Self.cacheKiB)")
                defer { try? db.execute(sql: "PRAGMA cache_size = -2000") }
                for table in Self.tables {
                    manifest.files[table + ".csv"] = try writeTable(table, columns: columns[table]!, hasRowID: try Self.hasRowID(table, db),
                                                                    db: db, into: temporary, binaryCells: &manifest.binaryCells)
                }
            }
        } catch let error as DatabaseError {
            throw DatabaseAccess.databaseFailure("export jobs from", layout.dbPath, error)
        }
        try writeManifest(manifest, into: temporary)
        try FileSystem.syncDirectory(temporary)
        guard rename(temporary, final) == 0 else { throw CofferError.system("rename export into", final, errno: errno) }
        published = true
        try FileSystem.syncDirectory(outDirectory)
        report.export = final
        for (file, entry) in manifest.files { report.rows[String(file.dropLast(4))] = entry.rows }

        // 2. Purge, only what the export holds, checked.
        if purge {
            try Self.readBack(final, manifest: manifest)
            report.purged = try purgeJobs(from: final, manifest: manifest, queue: queue)
            if deleteMedia { report.mediaDeleted = try deleteMediaFiles(of: final) }
        }
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    /// Streams one table's selected rows into `TABLE.csv`, every column in schema order.
    /// The page cache of the export's read (KiB).
    static let cacheKiB = 8192

    /// Whether `table` is an ordinary rowid table (not WITHOUT ROWID).
    static func hasRowID(_ table: String, _ db: Database) throws -> Bool {
        try Bool.fetchOne(db, sql: "SELECT wr = 0 FROM pragma_table_list WHERE schema = 'main' AND name = ?", arguments: [table]) ?? false
    }

    func writeTable(_ table: String, columns: [String], hasRowID: Bool, db: Database, into folder: String,
                    binaryCells: inout [ExportManifest.BinaryCell]) throws -> ExportManifest.File {
        let path = folder + "/" + table + ".csv"
        let fd = try RawIO.createNew(path)
        defer { close(fd) }
        let file = try encodeTable(table, columns: columns, hasRowID: hasRowID, db: db, fd: fd, path: path, binaryCells: &binaryCells)
        try RawIO.sync(fd, path: path)
        return file
    }

    /// One table's selected rows as CSV into `fd` (only the jobs of `temp.coffer_purge` with
    /// `purgeSet`): its rows, bytes and SHA-256.
    func encodeTable(_ table: String, columns: [String], hasRowID: Bool, db: Database, fd: Int32, path: String,
                     purgeSet: Bool = false, binaryCells: inout [ExportManifest.BinaryCell]) throws -> ExportManifest.File {
        var writer = CSVWriter(fd: fd, path: path, spreadsheetSafe: spreadsheetSafe)
        try writer.row(columns.map { .text(Array($0.utf8)) })
        let statement = try db.makeStatement(sql: query(table, columns: columns, hasRowID: hasRowID, purgeSet: purgeSet))
        statement.arguments = selection.arguments
        let sqlite = statement.sqliteStatement
        let cursor = try Row.fetchCursor(statement)
        var row = 0
        try Interruption.check("export-jobs")
        // Each cell is read in place from SQLite (its storage class and bytes), no copies.
        while try cursor.next() != nil {
            row += 1
            if row & 4095 == 0 { try Interruption.check("export-jobs") }
            for (index, column) in columns.enumerated() {
                let i = Int32(index)
                switch sqlite3_column_type(sqlite, i) {
                case SQLITE_NULL:
                    writer.null()
                case SQLITE_INTEGER:
                    writer.integer(sqlite3_column_int64(sqlite, i))
                case SQLITE_FLOAT:
                    writer.raw(ExportManifest.realText(sqlite3_column_double(sqlite, i)).utf8)
                case let type:
                    let isText = type == SQLITE_TEXT
                    let pointer = isText ? UnsafeRawPointer(sqlite3_column_text(sqlite, i)) : sqlite3_column_blob(sqlite, i)
                    let bytes = UnsafeRawBufferPointer(start: pointer, count: Int(sqlite3_column_bytes(sqlite, i)))
                    if isText, PathText.isUTF8(bytes) {
                        writer.text(bytes)
                    } else {
                        // A BLOB, or TEXT that is not UTF-8: hex, listed in the manifest.
                        binaryCells.append(.init(file: table + ".csv", row: row, column: column, type: isText ? "text" : "blob"))
                        writer.raw(("\\x" + Digest.hex(bytes)).utf8)
                    }
                }
            }
            try writer.endRow()
        }
        try writer.flush()
        return .init(rows: writer.rows - 1, bytes: writer.bytes, sha256: Digest.hex(writer.hasher.finalize()), columns: columns)
    }

    /// The export's query of one table: its columns in schema order, the selected jobs' rows in
    /// storage (rowid) order, which is insertion order: a scan, where `ORDER BY id` on a TEXT
    /// key would fetch every row through the key's index. A WITHOUT ROWID table is in key order.
    func query(_ table: String, columns: [String], hasRowID: Bool = true, purgeSet: Bool = false) -> String {
        let alias = table == "jobs" ? "j" : (table == "media" ? "m" : "e")
        let expressions = columns.map { "\(alias).\($0.quotedDatabaseIdentifier)" }.joined(separator: ", ")
        // CROSS JOIN keeps the child table outside: its rows stream in id (rowid) order, each
        // job looked up by its key; no temporary B-tree of five million events.
        let from = table == "jobs" ? "jobs j" : "\(table) \(alias) CROSS JOIN jobs j ON j.id = \(alias).job_id"
        let order = hasRowID ? " ORDER BY \(alias).rowid" : (columns.contains("id") ? " ORDER BY \(alias).id" : "")
        let only = purgeSet ? " AND j.id IN temp.coffer_purge" : ""
        return "SELECT \(expressions) FROM \(from) WHERE \(selection.sql)\(only)\(order)"
    }

    func writeManifest(_ manifest: ExportManifest, into folder: String) throws {
        let path = folder + "/manifest.json"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(manifest) + Data("\n".utf8)
        let fd = try RawIO.createNew(path)
        defer { close(fd) }
        try data.withUnsafeBytes { try RawIO.writeAll(fd, $0.baseAddress!, $0.count, path: path) }
        try RawIO.sync(fd, path: path)
    }

    /// Reads every file of an export back: its SHA-256 and row count must be the manifest's.
    /// Calls `jobID` with each job id of `jobs.csv` (streamed: a million jobs in constant memory).
    static func readBack(_ folder: String, manifest: ExportManifest, only: String? = nil, jobID: (String) throws -> Void = { _ in }) throws {
        for (file, entry) in manifest.files.sorted(by: { $0.key < $1.key }) where only == nil || only == file {
            let path = folder + "/" + file
            let fd = try RawIO.openForReading(path)
            defer { close(fd) }
            let reader = CSVReader(fd: fd, path: path)
            guard let header = try reader.next(), header == entry.columns.map({ .text(Array($0.utf8)) }) else {
                throw CofferError(.failed, operation: "read back", subject: path, cause: "the header is not the manifest's columns")
            }
            let idColumn = file == "jobs.csv" ? entry.columns.firstIndex(of: "id") : nil
            var rows = 0
            while let cells = try reader.next() {
                rows += 1
                guard cells.count == entry.columns.count else { throw reader.failure("\(cells.count) fields, \(entry.columns.count) columns") }
                if let idColumn {
                    guard case .text(let id) = cells[idColumn], let text = String(validating: id, as: UTF8.self), !text.hasPrefix("\\x") else {
                        throw CofferError(.failed, operation: "purge jobs of", subject: path,
                                          cause: "row \(rows) has a job id that is NULL or not UTF-8; nothing was purged")
                    }
                    try jobID(text)
                }
            }
            let sha = Digest.hex(reader.hasher.finalize()) // the same single read
            guard rows == entry.rows, sha == entry.sha256 else {
                throw CofferError(.failed, operation: "read back", subject: path,
                                  cause: "\(rows) rows and SHA-256 \(sha.prefix(16))... on disk, the manifest says \(entry.rows) and \(entry.sha256.prefix(16))...; nothing was purged",
                                  hint: "check the disk of the export folder, then run the export again")
            }
        }
    }

    /// Deletes exactly the exported jobs, their media rows and events, in one transaction;
    /// every count must be the export's, else nothing is deleted (exit 2).
    func purgeJobs(from folder: String, manifest: ExportManifest, queue: DatabaseQueue) throws -> [String: Int] {
        let expected = manifest.files.reduce(into: [String: Int]()) { $0[String($1.key.dropLast(4))] = $1.value.rows }
        func changed(_ what: String) -> CofferError {
            CofferError(.failed, operation: "purge jobs from", subject: layout.dbPath,
                        cause: "\(what); nothing was purged, the export stays",
                        hint: "run export-jobs --purge again: it exports and purges what is there then")
        }
        do {
            try queue.inTransaction(.immediate) { db in
                try db.execute(sql: "CREATE TEMP TABLE coffer_purge (id TEXT PRIMARY KEY)")
                let insert = try db.makeStatement(sql: "INSERT OR IGNORE INTO temp.coffer_purge (id) VALUES (?)")
                // The ids come from the export as it is on disk, read (and checked) once more;
                // only jobs.csv, to hold the write lock the pipeline waits on no longer than needed.
                var ids = 0
                try Self.readBack(folder, manifest: manifest, only: "jobs.csv") { id in
                    try insert.execute(arguments: [id])
                    ids += 1
                }
                let (where_, arguments) = selection
                let now: [String: Int] = [
                    "jobs": try Int.fetchOne(db, sql: "SELECT count(*) FROM jobs j WHERE j.id IN temp.coffer_purge AND \(where_)", arguments: arguments) ?? -1,
                    "media": try Int.fetchOne(db, sql: "SELECT count(*) FROM media WHERE job_id IN temp.coffer_purge") ?? -1,
                    "job_events": try Int.fetchOne(db, sql: "SELECT count(*) FROM job_events WHERE job_id IN temp.coffer_purge") ?? -1,
                ]
                guard now == expected, ids == expected["jobs"] else {
                    throw changed("the database changed since the export (now \(Self.describe(now)), exported \(Self.describe(expected)))")
                }
                // The rows themselves must still be the exported bytes: an update of an
                // exported job since the export leaves every count as it was, and deleting
                // the row would lose it. Encoded again, as they are now, without a file.
                let sink = open("/dev/null", O_WRONLY | O_CLOEXEC)
                guard sink >= 0 else { throw CofferError.system("open", "/dev/null", errno: errno) }
                defer { close(sink) }
                for table in Self.tables {
                    guard let exported = manifest.files[table + ".csv"] else { continue }
                    var cells: [ExportManifest.BinaryCell] = []
                    let current = try encodeTable(table, columns: exported.columns, hasRowID: try Self.hasRowID(table, db), db: db,
                                                  fd: sink, path: "/dev/null", purgeSet: true, binaryCells: &cells)
                    guard current.rows == exported.rows, current.sha256 == exported.sha256 else {
                        throw changed("\(table): rows of the exported jobs changed since the export")
                    }
                }
                var deleted: [String: Int] = [:]
                for table in ["job_events", "media", "jobs"] {
                    let column = table == "jobs" ? "id" : "job_id"
                    try db.execute(sql: "DELETE FROM \(table) WHERE \(column) IN temp.coffer_purge")
                    deleted[table] = db.changesCount
                }
                try db.execute(sql: "DROP TABLE temp.coffer_purge")
                guard deleted == expected else {
                    throw CofferError(.failed, operation: "purge jobs from", subject: layout.dbPath,
                                      cause: "deleted \(Self.describe(deleted)), exported \(Self.describe(expected)); rolled back, nothing was purged")
                }
                return .commit
            }
            return expected
        } catch let error as DatabaseError {
            throw DatabaseAccess.databaseFailure("purge jobs from", layout.dbPath, error)
        }
    }

    static func describe(_ counts: [String: Int]) -> String {
        Self.tables.map { "\(counts[$0] ?? 0) \($0)" }.joined(separator: ", ")
    }

    /// After the purge: the files the exported media rows referred to, and the jobs' temp
    /// directories. Only under MEDIA_ROOT; links are removed, never followed.
    func deleteMediaFiles(of folder: String) throws -> Int {
        let path = folder + "/media.csv"
        let fd = try RawIO.openForReading(path)
        defer { close(fd) }
        let reader = CSVReader(fd: fd, path: path)
        guard let header = try reader.next() else { return 0 }
        let names = header.map { cell -> String in if case .text(let bytes) = cell { String(decoding: bytes, as: UTF8.self) } else { "" } }
        let root = PathBytes(layout.mediaRoot.utf8)
        let rootPrefix = root + [UInt8(ascii: "/")]
        let tempPrefix = PathBytes(layout.tempRoot.utf8) + [UInt8(ascii: "/")]
        var deleted = 0
        while let cells = try reader.next() {
            for (index, name) in names.enumerated() where MediaReferences.columns.contains(name) || name == "temp_dir" {
                guard index < cells.count, case .text(var value) = cells[index], !value.isEmpty else { continue }
                if value.starts(with: Array("\\x".utf8)) { value = Digest.bytes(hex: String(decoding: value.dropFirst(2), as: UTF8.self)) }
                let absolute = PathNormalizer.absolute(value, under: root)
                if name == "temp_dir" {
                    guard absolute.starts(with: tempPrefix), case .success(let info) = FileSystem.status(absolute), info.kind == .directory else { continue }
                    FileSystem.removeTree(absolute)
                    deleted += 1
                } else {
                    guard absolute.starts(with: rootPrefix), case .success(let info) = FileSystem.status(absolute),
                          info.kind == .regular || info.kind == .symlink else { continue }
                    if absolute.withCPath({ unlink($0) }) == 0 { deleted += 1 }
                }
            }
        }
        return deleted
    }
}

/// `manifest.json` of an export (FORMAT.md).
public struct ExportManifest: Codable, Sendable {
    public struct File: Codable, Sendable, Equatable {
        public var rows: Int
        public var bytes: Int64
        public var sha256: String
        public var columns: [String]
    }

    /// A cell written as `\x` and hex: a BLOB, or TEXT whose bytes are not UTF-8.
    public struct BinaryCell: Codable, Sendable, Equatable {
        public var file: String
        /// 1-based, not counting the header.
        public var row: Int
        public var column: String
        /// `blob` or `text`.
        public var type: String
    }

    public var format = "coffer-jobs-export"
    public var version = 1
    public var created: String
    public var source: String
    public var olderThan: String
    public var cutoff: String
    public var statuses: [String]
    public var spreadsheetSafe: Bool
    public var csv = "RFC 4180, UTF-8, CRLF line ends, header row; NULL is an empty unquoted field, the empty string \"\""
    public var files: [String: File] = [:]
    public var binaryCells: [BinaryCell] = []

    enum CodingKeys: String, CodingKey {
        case format, version, created, source, olderThan = "older_than", cutoff, statuses, spreadsheetSafe = "spreadsheet_safe"
        case csv, files, binaryCells = "binary_cells"
    }

    /// A REAL in the shortest decimal form that reads back to the same value.
    static func realText(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value < 0 ? "-Inf" : "Inf" }
        return "\(value)"
    }
}

/// What `coffer export-jobs` did. Encoded as the `--json` document.
public struct ExportReport: Sendable, Codable {
    public var command = "export-jobs"
    public var outDirectory: String
    public var dryRun: Bool
    public var olderThan: String
    public var cutoff: String
    public var statuses: [String]
    public var purge: Bool
    /// The export folder written.
    public var export: String?
    /// Rows exported (or, in a dry run, that would be) per table.
    public var rows: [String: Int] = [:]
    /// Rows deleted per table by the purge.
    public var purged: [String: Int]?
    public var mediaDeleted: Int?
    public var seconds: Double = 0

    public var status: ExitStatus { .ok }

    enum CodingKeys: String, CodingKey {
        case command, outDirectory = "out_directory", dryRun = "dry_run", olderThan = "older_than", cutoff, statuses, purge
        case export, rows, purged, mediaDeleted = "media_deleted", seconds
    }

    public func text() -> String {
        let counts = JobExporter.tables.map { "\(rows[$0] ?? 0) \($0)" }.joined(separator: ", ")
        if dryRun {
            return "dry run: would export \(counts) (\(statuses.joined(separator: ",")) jobs created before \(cutoff) UTC)"
                + (purge ? " and purge them" : "")
        }
        var lines = ["exported \(counts) into \(PathText.display(export ?? outDirectory))"]
        if let purged { lines.append("purged \(JobExporter.tables.map { "\(purged[$0] ?? 0) \($0)" }.joined(separator: ", ")) from the database") }
        if let mediaDeleted { lines.append("deleted \(mediaDeleted) media files and temp directories") }
        return lines.joined(separator: "\n")
    }
}
