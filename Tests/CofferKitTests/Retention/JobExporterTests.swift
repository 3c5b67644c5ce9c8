import CofferFixtures
@testable import CofferKit
import Crypto
import Foundation
import GRDB
import Testing

@Suite struct JobExporterTests {
    static let day: Double = 86400

    /// Values that break naive CSV: each goes into a text column of an old COMPLETE job.
    static let hostile: [String?] = [
        "plain", "", nil, "comma, inside", "quote \" inside", "\"quoted\"", "new\nline", "cr\rlf\r\n", "=SUM(A1:A9)",
        "+1", "-2", "@cmd", "\ttab first", "emoji 🎬 and é", "  spaces  ", "\\x41 looks like hex", "trailing,",
    ]

    struct Fixture {
        let volume: TestVolume
        var out: String { volume.directory.child("exports") }

        func exporter(_ age: String = "30d", purge: Bool = false) throws -> JobExporter {
            var exporter = JobExporter(configuration: try volume.configuration(), olderThan: try RetentionAge(parsing: age), outDirectory: out)
            exporter.purge = purge
            return exporter
        }

        func dump(_ sql: String) throws -> [[DatabaseValue]] {
            try DatabaseQueue(path: volume.dbPath).read { db in
                try Row.fetchAll(db, sql: sql).map { row in row.databaseValues.map { $0 } }
            }
        }
    }

    /// A generated volume plus old jobs with hostile values, a BLOB path and TEXT that is not UTF-8.
    func fixture() throws -> Fixture {
        let volume = try TestVolume(jobs: 30, hostile: true)
        let now = Date().timeIntervalSince1970
        try DatabaseQueue(path: volume.dbPath).write { db in
            for (index, value) in Self.hostile.enumerated() {
                let id = "hostile-\(index)"
                try db.execute(sql: "INSERT INTO jobs (id, url, status, created_at, completed_at, error, format_preset) VALUES (?, ?, 'COMPLETE', ?, ?, ?, ?)",
                               arguments: [id, value ?? "u", VolumeGenerator.timestamp(now - 60 * Self.day), VolumeGenerator.timestamp(now - 59 * Self.day), value, value])
                try db.execute(sql: "INSERT INTO media (job_id, video_path, source_title, duration_sec, width) VALUES (?, ?, ?, ?, ?)",
                               arguments: [id, value, value, 0.1 + Double(index) / 3, index])
                try db.execute(sql: "INSERT INTO job_events (job_id, event, payload) VALUES (?, 'hostile', ?)", arguments: [id, value])
            }
            try db.execute(sql: "INSERT INTO jobs (id, url, status, created_at) VALUES ('blobby', 'u', 'FAILED', ?)",
                           arguments: [VolumeGenerator.timestamp(now - 90 * Self.day)])
            try db.execute(sql: "INSERT INTO media (job_id, video_path, source_title) VALUES ('blobby', ?, CAST(? AS TEXT))",
                           arguments: [Data([0x2F, 0x6D, 0xE9, 0xFF, 0x00, 0x01]), Data([0x72, 0xE9, 0x80])])
            // Unfinished and recent jobs stay, whatever their age.
            try db.execute(sql: "INSERT INTO jobs (id, url, status, created_at) VALUES ('old-queued', 'u', 'QUEUED', ?)",
                           arguments: [VolumeGenerator.timestamp(now - 400 * Self.day)])
            try db.execute(sql: "INSERT INTO jobs (id, url, status, created_at) VALUES ('old-dubbing', 'u', 'DUBBING', ?)",
                           arguments: [VolumeGenerator.timestamp(now - 400 * Self.day)])
            try db.execute(sql: "INSERT INTO jobs (id, url, status, created_at, completed_at) VALUES ('new-complete', 'u', 'COMPLETE', ?, ?)",
                           arguments: [VolumeGenerator.timestamp(now - 2 * Self.day), VolumeGenerator.timestamp(now - Self.day)])
        }
        return Fixture(volume: volume)
    }

    /// Every row of `table` for the jobs the exporter selects, as CSV cells would carry them.
    func expectedCells(_ fixture: Fixture, _ table: String, _ exporter: JobExporter) throws -> [[CSVCell]] {
        let (where_, arguments) = exporter.selection
        let alias = table == "jobs" ? "j" : "t"
        let from = table == "jobs" ? "jobs j" : "\(table) t JOIN jobs j ON j.id = t.job_id"
        return try DatabaseQueue(path: fixture.volume.dbPath).read { db in
            let columns = try Row.fetchAll(db, sql: "PRAGMA table_info(\(table))").map { $0["name"] as String }
            let select = columns.map { "typeof(\(alias).\($0)), CAST(\(alias).\($0) AS BLOB), \(alias).\($0)" }.joined(separator: ", ")
            return try Row.fetchAll(db, sql: "SELECT \(select) FROM \(from) WHERE \(where_) ORDER BY \(alias).rowid", arguments: arguments).map { row in
                (0..<columns.count).map { index -> CSVCell in
                    let type: String = row[index * 3]
                    switch type {
                    case "null": return .null
                    case "real": return .text(Array(ExportManifest.realText(row[index * 3 + 2] as Double).utf8))
                    default:
                        let bytes = PathBytes((row[index * 3 + 1] as Data?) ?? Data())
                        if type == "blob" || String(validating: bytes, as: UTF8.self) == nil { return .text(Array(("\\x" + Digest.hex(bytes)).utf8)) }
                        return .text(bytes)
                    }
                }
            }
        }
    }

    func readCSV(_ path: String) throws -> [[CSVCell]] {
        let fd = try RawIO.openForReading(path)
        defer { close(fd) }
        let reader = CSVReader(fd: fd, path: path)
        var rows: [[CSVCell]] = []
        while let row = try reader.next() { rows.append(row) }
        return rows
    }

    /// The writer's cells, byte for byte (RFC 4180 quoting, integers written in place), and
    /// back through the reader.
    @Test func theCSVWriterQuotesExactlyWhatNeedsIt() throws {
        let directory = try TemporaryDirectory()
        let path = directory.child("cells.csv")
        let fd = try RawIO.createNew(path)
        defer { close(fd) }
        let texts = ["plain", "", "a,b", "say \"hi\"", "\"", "\"\"", "line\nbreak", "cr\r", "end\"", "\"start", "é 🎬"]
        var writer = CSVWriter(fd: fd, path: path)
        for text in texts { Array(text.utf8).withUnsafeBytes { writer.text($0) } }
        writer.null()
        try writer.endRow()
        for value: Int64 in [0, 7, -1, 10, -100, .max, .min] { writer.integer(value) }
        try writer.endRow()
        try writer.flush()
        let written = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(written == Data(("plain,\"\",\"a,b\",\"say \"\"hi\"\"\",\"\"\"\",\"\"\"\"\"\",\"line\nbreak\",\"cr\r\",\"end\"\"\",\"\"\"start\",é 🎬,\r\n"
                          + "0,7,-1,10,-100,9223372036854775807,-9223372036854775808\r\n").utf8))
        let rows = try readCSV(path)
        #expect(rows.count == 2)
        #expect(rows.first == texts.map { .text(Array($0.utf8)) } + [.null])
    }

    /// `--spreadsheet-safe`: a text cell a spreadsheet would run as a formula (starting with
    /// `=`, `+`, `-`, `@`, TAB or CR) gets a leading `'`; other text, and numbers (negative ones
    /// too), are written as they are.
    @Test func aSpreadsheetSafeWriterPrefixesWhatWouldRunAsAFormula() throws {
        let directory = try TemporaryDirectory()
        let path = directory.child("cells.csv")
        let fd = try RawIO.createNew(path)
        defer { close(fd) }
        var writer = CSVWriter(fd: fd, path: path, spreadsheetSafe: true)
        for text in ["=1+1", "+3", "-2", "@SUM(A1)", "\tx", "\rx", "plain", "a=b", "'kept", ""] {
            Array(text.utf8).withUnsafeBytes { writer.text($0) }
        }
        writer.integer(-5)
        writer.null()
        try writer.endRow()
        try writer.flush()
        let written = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(written == Data("'=1+1,'+3,'-2,'@SUM(A1),'\tx,\"'\rx\",plain,a=b,'kept,\"\",-5,\r\n".utf8),
                "\(String(decoding: written, as: UTF8.self).debugDescription)")
    }

    @Test func hostileValuesSurviveExactlyAndOnlyOldFinishedJobsGo() throws {
        let f = try fixture()
        let exporter = try f.exporter()
        let before = try f.dump("SELECT * FROM jobs ORDER BY id")
        let report = try exporter.run()
        let folder = try #require(report.export)
        #expect(try f.dump("SELECT * FROM jobs ORDER BY id") == before, "an export without --purge changes nothing")
        for table in JobExporter.tables {
            let rows = try readCSV(folder + "/\(table).csv")
            let expected = try expectedCells(f, table, exporter)
            #expect(rows.count == expected.count + 1)
            #expect(Array(rows.dropFirst()) == expected, "\(table)")
            #expect(report.rows[table] == expected.count)
        }
        let ids = try readCSV(folder + "/jobs.csv").dropFirst().map { $0[0] }
        for id in ["old-queued", "old-dubbing", "new-complete"] { #expect(!ids.contains(.text(Array(id.utf8)))) }
        for index in Self.hostile.indices { #expect(ids.contains(.text(Array("hostile-\(index)".utf8)))) }
        #expect(ids.contains(.text(Array("blobby".utf8))))
        // NULL and the empty string stay apart on disk: ,, against ,"",
        let jobs = try String(decoding: Data(contentsOf: URL(fileURLWithPath: folder + "/jobs.csv")), as: UTF8.self)
        #expect(jobs.contains(",\"\","))
        let manifest = try JSONDecoder().decode(ExportManifest.self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/manifest.json")))
        #expect(manifest.binaryCells.contains { $0.file == "media.csv" && $0.column == "video_path" && $0.type == "blob" })
        #expect(manifest.binaryCells.contains { $0.file == "media.csv" && $0.column == "source_title" && $0.type == "text" })
        for (file, entry) in manifest.files {
            #expect(Digest.hex(SHA256.hash(data: try Data(contentsOf: URL(fileURLWithPath: folder + "/" + file)))) == entry.sha256)
        }
    }

    /// Constant memory for any number of rows: SQLite streams every table in storage order, with
    /// no temporary B-tree (a sort of five million events took 580 MB before), and the table
    /// read is scanned, not walked through an index (jobs by their TEXT key: a lookup per row).
    @Test func theExportQueriesStreamWithoutSorting() throws {
        let f = try fixture()
        let exporter = try f.exporter()
        try DatabaseQueue(path: f.volume.dbPath).read { db in
            for table in JobExporter.tables {
                let columns = try Row.fetchAll(db, sql: "PRAGMA table_info(\(table))").map { $0["name"] as String }
                #expect(try JobExporter.hasRowID(table, db))
                let plan = try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + exporter.query(table, columns: columns, hasRowID: true),
                                            arguments: exporter.selection.arguments).map { $0["detail"] as String }
                #expect(!plan.contains { $0.contains("TEMP B-TREE") }, "\(table): \(plan)")
                #expect(plan.first == "SCAN \(table == "jobs" ? "j" : table == "media" ? "m" : "e")", "\(table): \(plan)")
            }
        }
    }

    /// A jobs table made WITHOUT ROWID (a schema the pipeline may adopt) is exported in key order.
    @Test func aTableWithoutRowIDIsExportedInKeyOrder() throws {
        let f = try fixture()
        try DatabaseQueue(path: f.volume.dbPath).write { db in
            try db.execute(sql: "CREATE TABLE other (id TEXT PRIMARY KEY, x) WITHOUT ROWID")
            #expect(try !JobExporter.hasRowID("other", db))
        }
        let exporter = try f.exporter()
        #expect(exporter.query("jobs", columns: ["id", "url"], hasRowID: false).hasSuffix("ORDER BY j.id"))
        #expect(exporter.query("jobs", columns: ["id", "url"], hasRowID: true).hasSuffix("ORDER BY j.rowid"))
    }

    @Test func pythonsCSVModuleReadsTheSameValues() throws {
        let f = try fixture()
        let folder = try #require(try f.exporter().run().export)
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") else {
            print("skipped: /usr/bin/python3 is not installed (make test installs it)")
            return
        }
        // Python reads the CSV and the database on its own and compares every text cell.
        let script = """
            import csv, sqlite3, sys
            folder, db = sys.argv[1], sys.argv[2]
            con = sqlite3.connect(db)
            con.text_factory = bytes
            for table in ["jobs", "media", "job_events"]:
                with open(f"{folder}/{table}.csv", newline="", encoding="utf-8") as f:
                    rows = list(csv.reader(f))
                header, body = rows[0], rows[1:]
                for row in body:
                    key = row[0]
                    found = con.execute(f"SELECT * FROM {table} WHERE id = ?", (key if table == "jobs" else int(key),)).fetchone()
                    for name, text, value in zip(header, row, found):
                        if value is None:
                            assert text == "", (table, name, text)
                        elif isinstance(value, bytes):
                            try:
                                assert text == value.decode("utf-8"), (table, name, text, value)
                            except UnicodeDecodeError:
                                assert text == "\\\\x" + value.hex(), (table, name, text, value)
                        elif isinstance(value, float):
                            assert float(text) == value, (table, name, text, value)
                        else:
                            assert text == str(value), (table, name, text, value)
            print("ok")
            """
        let (status, output) = try runScript("/usr/bin/python3", ["-c", script, folder, f.volume.dbPath])
        #expect(status == 0 && output.contains("ok"), "\(output)")
    }

    @Test func purgeDeletesExactlyWhatWasExported() throws {
        let f = try fixture()
        let exporter = try f.exporter(purge: true)
        let expected = try JobExporter.tables.reduce(into: [String: [[CSVCell]]]()) { $0[$1] = try expectedCells(f, $1, exporter) }
        let totals = try f.dump("SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM media), (SELECT count(*) FROM job_events)")[0]
        let report = try exporter.run()
        let folder = try #require(report.export)
        #expect(report.purged == report.rows)
        for table in JobExporter.tables {
            #expect(Array(try readCSV(folder + "/\(table).csv").dropFirst()) == expected[table], "\(table)")
        }
        let after = try f.dump("SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM media), (SELECT count(*) FROM job_events)")[0]
        #expect(after == [totals[0].storage.value as! Int64 - Int64(report.rows["jobs"]!),
                          totals[1].storage.value as! Int64 - Int64(report.rows["media"]!),
                          totals[2].storage.value as! Int64 - Int64(report.rows["job_events"]!)].map { $0.databaseValue })
        #expect(try f.dump("SELECT id FROM jobs WHERE id IN ('old-queued', 'old-dubbing', 'new-complete')").count == 3)
        // A second run finds nothing left to export.
        #expect(try f.exporter(purge: true).run().rows["jobs"] == 0)
        #expect(try f.volume.verify().findings(.integrity).isEmpty)
    }

    /// Every row of the three tables with each cell's storage class.
    func typedDump(_ f: Fixture) throws -> [[DatabaseValue]] {
        var rows: [[DatabaseValue]] = []
        for table in JobExporter.tables {
            let columns = try DatabaseQueue(path: f.volume.dbPath).read { db in
                try Row.fetchAll(db, sql: "PRAGMA table_info(\(table))").map { $0["name"] as String }
            }
            let select = columns.map { "typeof(\($0)), \($0)" }.joined(separator: ", ")
            rows += try f.dump("SELECT '\(table)', \(select) FROM \(table) ORDER BY id")
        }
        return rows
    }

    func importer(_ f: Fixture, _ folder: String, dryRun: Bool = false) throws -> JobImporter {
        var importer = JobImporter(configuration: try f.volume.configuration(), exportDirectory: folder)
        importer.dryRun = dryRun
        return importer
    }

    @Test func exportPurgeImportGivesBackTheIdenticalRows() throws {
        let f = try fixture()
        let before = try typedDump(f)
        let report = try f.exporter(purge: true).run()
        let folder = try #require(report.export)
        #expect(try typedDump(f) != before)

        let dry = try importer(f, folder, dryRun: true).run()
        #expect(dry.inserted == report.rows)
        #expect(try typedDump(f).count == before.count - report.rows.values.reduce(0, +))

        let imported = try importer(f, folder).run()
        #expect(imported.inserted == report.rows)
        #expect(imported.present.values.allSatisfy { $0 == 0 })
        #expect(try typedDump(f) == before)
        // Again: everything is already there, nothing is duplicated.
        let again = try importer(f, folder).run()
        #expect(again.present == report.rows)
        #expect(again.inserted.values.allSatisfy { $0 == 0 })
        #expect(try typedDump(f) == before)
    }

    @Test func aDamagedOrLossyExportIsNotImported() throws {
        let f = try fixture()
        let folder = try #require(try f.exporter(purge: true).run().export)
        let after = try typedDump(f)
        // One changed byte in a CSV: refused before anything is written.
        let path = folder + "/job_events.csv"
        chmod(path, 0o600)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes[bytes.count / 2] ^= 0x01
        try bytes.write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: CofferError.self) { try importer(f, folder).run() }
        #expect(error?.status == .failed)
        #expect(try typedDump(f) == after)
        // A spreadsheet-safe export changed cells: refused.
        var lossy = try f.exporter("1s")
        lossy.spreadsheetSafe = true
        let lossyFolder = try #require(try lossy.run().export)
        #expect(throws: CofferError.self) { try importer(f, lossyFolder).run() }
        // And a folder that is not an export.
        #expect(throws: CofferError.self) { try importer(f, f.volume.mediaRoot).run() }
    }

    @Test func aDatabaseChangedSinceTheExportIsNotPurged() throws {
        let f = try fixture()
        let exporter = try f.exporter()
        let folder = try #require(try exporter.run().export)
        let manifest = try JSONDecoder().decode(ExportManifest.self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/manifest.json")))
        try JobExporter.readBack(folder, manifest: manifest)
        // An event arrives for an exported job: purging would lose it.
        try DatabaseQueue(path: f.volume.dbPath).write { db in
            try db.execute(sql: "INSERT INTO job_events (job_id, event) VALUES ('hostile-1', 'late')")
        }
        let before = try f.dump("SELECT * FROM job_events ORDER BY id")
        let queue = try DatabaseAccess.openExisting(f.volume.dbPath, readOnly: false)
        let error = #expect(throws: CofferError.self) { try exporter.purgeJobs(from: folder, manifest: manifest, queue: queue) }
        #expect(error?.status == .failed)
        #expect(error?.cause.contains("nothing was purged") == true)
        try queue.close()
        #expect(try f.dump("SELECT * FROM job_events ORDER BY id") == before)
        // An exported job updated since (every count as it was): purging would lose the update.
        try DatabaseQueue(path: f.volume.dbPath).write { db in
            try db.execute(sql: "DELETE FROM job_events WHERE event = 'late'")
            try db.execute(sql: "UPDATE jobs SET error = 'late update' WHERE id = 'hostile-1'")
        }
        let jobsBefore = try f.dump("SELECT * FROM jobs ORDER BY id")
        let updated = try DatabaseAccess.openExisting(f.volume.dbPath, readOnly: false)
        let refused = #expect(throws: CofferError.self) { try exporter.purgeJobs(from: folder, manifest: manifest, queue: updated) }
        #expect(refused?.cause.contains("jobs: rows of the exported jobs changed since the export; nothing was purged") == true,
                "\(String(describing: refused))")
        try updated.close()
        #expect(try f.dump("SELECT * FROM jobs ORDER BY id") == jobsBefore)
        // A damaged export is not purged from either.
        let jobs = folder + "/jobs.csv"
        chmod(jobs, 0o600)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: jobs))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("x,y\r\n".utf8))
        try handle.close()
        #expect(throws: CofferError.self) { try JobExporter.readBack(folder, manifest: manifest) }
    }

    /// One run that deletes rows at a time per database: while a `migrate up` (or another
    /// purge) holds the database, `export-jobs --purge` exits 3 before it exports anything; a
    /// plain export goes on beside it.
    @Test func aPurgeExitsThreeWhileTheDatabaseIsHeld() throws {
        let f = try fixture()
        var held: MigrationLock? = try MigrationFiles.lock(f.volume.dbPath)
        let error = #expect(throws: CofferError.self) { try f.exporter(purge: true).run() }
        #expect(error?.status == .locked, "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: f.out))
        #expect(try f.exporter().run().export != nil)
        withExtendedLifetime(held) {}
        held = nil
        #expect(try f.exporter(purge: true).run().purged?.values.reduce(0, +) ?? 0 > 0)
    }

    @Test func deleteMediaRemovesOnlyThePurgedJobsFiles() throws {
        let volume = try TestVolume(jobs: 60, hostile: false)
        // Make every finished job old.
        try DatabaseQueue(path: volume.dbPath).write { db in
            try db.execute(sql: "UPDATE jobs SET created_at = datetime('now', '-90 days') WHERE status = 'COMPLETE'")
        }
        let library = try TreeSnapshot(volume.mediaRoot + "/library")
        let tempBefore = try FileManager.default.contentsOfDirectory(atPath: volume.mediaRoot + "/tmp")
        #expect(tempBefore.count == volume.generated.tempDirectories)
        var exporter = JobExporter(configuration: try volume.configuration(), olderThan: try RetentionAge(parsing: "30d"),
                                   outDirectory: volume.directory.child("exports"))
        exporter.statuses = ["COMPLETE"]
        exporter.purge = true
        exporter.deleteMedia = true
        let report = try exporter.run()
        #expect((report.mediaDeleted ?? 0) > 0)
        #expect((report.rows["jobs"] ?? 0) > 0)
        // The library held only COMPLETE jobs' videos: all gone, and verify finds no orphan and nothing missing.
        #expect(try TreeSnapshot(volume.mediaRoot + "/library").items.isEmpty, "\(library.items.count) files before")
        let verify = try volume.verify()
        #expect(verify.findings(.orphanFile).isEmpty && verify.findings(.missingFile).isEmpty, "\(verify.findingList)")
        // The temp folders of jobs still in the database are all there.
        let remaining = try DatabaseQueue(path: volume.dbPath).read { try String.fetchAll($0, sql: "SELECT id FROM jobs") }
        for name in tempBefore {
            #expect(FileManager.default.fileExists(atPath: "\(volume.mediaRoot)/tmp/\(name)") == remaining.contains(name), "\(name)")
        }
    }

    @Test func aDryRunTouchesNothingAndBadInputIsAUsageError() throws {
        let f = try fixture()
        let bytes = try Data(contentsOf: URL(fileURLWithPath: f.volume.dbPath))
        var exporter = try f.exporter(purge: true)
        exporter.dryRun = true
        let report = try exporter.run()
        #expect((report.rows["jobs"] ?? 0) >= Self.hostile.count + 1)
        #expect(!FileManager.default.fileExists(atPath: f.out))
        #expect(try Data(contentsOf: URL(fileURLWithPath: f.volume.dbPath)) == bytes)
        // It counts what a real export writes.
        #expect(try f.exporter().run().rows == report.rows)
        FileSystem.removeTree(f.out)

        for text in ["", "30", "d", "-1d", "1.5d", "3x", "١٢d", "365251d", "9999999999999999d", "9223372036854775807s", "99999999999999999999w"] {
            let error = #expect(throws: CofferError.self) { try RetentionAge(parsing: text) }
            #expect(error?.status == .usage, "\(text)")
        }
        #expect(try RetentionAge(parsing: "12h").seconds == 12 * 3600)
        #expect(try RetentionAge(parsing: "2w").seconds == 14 * Self.day)
        #expect(try RetentionAge(parsing: "365250d").seconds == 365_250 * Self.day)
        for bad in [["QUEUED"], ["COMPLETE", "DUBBING"], ["NOPE"], []] {
            var exporter = try f.exporter()
            exporter.statuses = bad
            let error = #expect(throws: CofferError.self) { try exporter.run() }
            #expect(error?.status == .usage, "\(bad)")
        }
        var lossy = try f.exporter(purge: true)
        lossy.spreadsheetSafe = true
        #expect((#expect(throws: CofferError.self) { try lossy.run() })?.status == .usage)
        #expect(!FileManager.default.fileExists(atPath: f.out))
    }
}
