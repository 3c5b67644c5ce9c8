import CofferKit
import Foundation
import GRDB
import Testing

@Suite struct DatabaseAccessTests {
    func freshDatabase() throws -> (TemporaryDirectory, String) {
        let dir = try TemporaryDirectory()
        let configuration = try CofferConfiguration.resolve(flags: [.dbPath: dir.child("db.sqlite"), .mediaRoot: dir.child("media")], environment: [:])
        _ = try VolumeInitializer.initialize(configuration.layout)
        return (dir, dir.child("db.sqlite"))
    }

    /// A connection to a database that came from outside is defensive (it cannot be told to
    /// write the schema by hand), trusts no schema code and checks cell sizes. An ordinary connection can (the test that the difference is
    /// the configuration's).
    @Test func anUntrustedDatabaseIsOpenedDefensive() throws {
        let (dir, path) = try freshDatabase()
        defer { withExtendedLifetime(dir) {} }
        let rename = "PRAGMA writable_schema = ON; UPDATE sqlite_master SET sql = replace(sql, 'url', 'link') WHERE name = 'jobs'"
        let untrusted = try DatabaseQueue(path: path, configuration: DatabaseAccess.untrustedConfiguration())
        #expect(try untrusted.read { DatabaseAccess.isDefensive($0) })
        // Its schema code is not trusted, and cell sizes are checked as pages are read.
        #expect(try untrusted.read { try Int.fetchOne($0, sql: "PRAGMA trusted_schema") } == 0)
        #expect(try untrusted.read { try Int.fetchOne($0, sql: "PRAGMA cell_size_check") } == 1)
        #expect(throws: DatabaseError.self) { try untrusted.writeWithoutTransaction { try $0.execute(sql: rename) } }
        #expect(try untrusted.read { try String.fetchOne($0, sql: "SELECT sql FROM sqlite_master WHERE name = 'jobs'") }?.contains("url TEXT") == true)
        try untrusted.close()
        let ordinary = try DatabaseQueue(path: path)
        #expect(try ordinary.read { !DatabaseAccess.isDefensive($0) })
        try ordinary.writeWithoutTransaction { try $0.execute(sql: rename) }
        try ordinary.close()
    }

    @Test func everyConnectionGetsTheSeedPragmas() throws {
        let (dir, path) = try freshDatabase()
        defer { withExtendedLifetime(dir) {} }
        func pragmas(_ queue: DatabaseQueue) throws -> [String: String] {
            try queue.read { db in
                var values: [String: String] = [:]
                for name in ["foreign_keys", "journal_mode", "synchronous", "cache_size", "temp_store", "busy_timeout"] {
                    values[name] = try String.fetchOne(db, sql: "PRAGMA \(name)")
                }
                return values
            }
        }
        let written = try pragmas(try DatabaseAccess.openExisting(path, readOnly: false))
        #expect(written == [
            "foreign_keys": "1", "journal_mode": "wal", "synchronous": "1", // NORMAL
            "cache_size": "-10000", "temp_store": "2", // MEMORY
            "busy_timeout": String(Int(DatabaseAccess.busyTimeout * 1000)),
        ])
        let read = try pragmas(try DatabaseAccess.openExisting(path, readOnly: true))
        #expect(read["foreign_keys"] == "1")
        #expect(read["cache_size"] == "-2000") // Coffer's scans: a small cache, flat memory
        #expect(read["busy_timeout"] == written["busy_timeout"])
    }

    /// A check of a copy Coffer made reads its pages through a memory map, not one `pread` per
    /// page (359,000 of them for a 100 MB copy); the map is taken away after the check, and a
    /// check of the pipeline's own database (not mapped) reads every page from the file.
    /// Counted in the reads of the thread that runs the check (`/proc/thread-self/io`).
    @Test func aCheckOfACopyReadsItThroughAMap() throws {
        let dir = try TemporaryDirectory()
        let path = dir.child("copy.sqlite")
        let writer = try DatabaseQueue(path: path)
        try writer.write { db in
            try db.execute(sql: """
                CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT);
                CREATE INDEX t_a ON t (a); CREATE INDEX t_b ON t (b);
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
                INSERT INTO t (a, b) SELECT hex(randomblob(40)), hex(randomblob(40)) FROM n;
                """)
        }
        let pages = try writer.read { try Int.fetchOne($0, sql: "PRAGMA page_count") } ?? 0
        try writer.close()
        #expect(pages > 1000)
        func readCalls() throws -> Int {
            let text = try String(contentsOfFile: "/proc/thread-self/io", encoding: .utf8)
            let line = text.split(separator: "\n").first { $0.hasPrefix("syscr:") }
            return Int(line?.split(separator: " ").last ?? "") ?? -1
        }
        func check(mapped: Bool) throws -> (lines: [String], reads: Int, mapAfter: Int) {
            let queue = try DatabaseQueue(path: path, configuration: DatabaseAccess.untrustedConfiguration())
            defer { try? queue.close() }
            return try queue.read { db in
                let before = try readCalls()
                let lines = try DatabaseAccess.check(db, limit: 20, mapped: mapped)
                let reads = try readCalls() - before
                return (lines, reads, try Int.fetchOne(db, sql: "PRAGMA mmap_size") ?? -1)
            }
        }
        let read = try check(mapped: false)
        let mapped = try check(mapped: true)
        #expect(read.lines == ["ok"] && mapped.lines == ["ok"])
        #expect(read.reads >= pages, "an unmapped check reads every page: \(read.reads) reads, \(pages) pages")
        #expect(mapped.reads < pages / 10, "a mapped check: \(mapped.reads) reads, \(pages) pages")
        #expect(read.mapAfter == 0 && mapped.mapAfter == 0)
    }

    @Test func readOnlyConnectionCannotWrite() throws {
        let (dir, path) = try freshDatabase()
        defer { withExtendedLifetime(dir) {} }
        let queue = try DatabaseAccess.openExisting(path, readOnly: true)
        #expect(throws: DatabaseError.self) {
            try queue.writeWithoutTransaction { db in
                try db.execute(sql: "INSERT INTO jobs (id, url, status) VALUES ('a', 'u', 'QUEUED')")
            }
        }
    }

    @Test func aWriterWaitsForTheLockInsteadOfFailing() throws {
        let (dir, path) = try freshDatabase()
        defer { withExtendedLifetime(dir) {} }
        // Another process-like connection holds the write lock for a moment.
        let holder = try DatabaseQueue(path: path)
        let locked = DispatchSemaphore(value: 0)
        let thread = Thread {
            do { try holder.inDatabase { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                locked.signal()
                Thread.sleep(forTimeInterval: 0.8)
                try db.execute(sql: "INSERT INTO jobs (id, url, status) VALUES ('held', 'u', 'QUEUED'); COMMIT")
            } } catch { print("HOLDER", error); locked.signal() }
        }
        thread.start()
        locked.wait()
        let started = Date()
        let queue = try DatabaseAccess.openExisting(path, readOnly: false)
        try queue.write { db in try db.execute(sql: "INSERT INTO jobs (id, url, status) VALUES ('mine', 'u', 'QUEUED')") }
        #expect(Date().timeIntervalSince(started) > 0.3)
        #expect(try queue.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM jobs") } == 2)
    }

    @Test func missingOrForeignFilesFailWithoutCreatingAnything() throws {
        let dir = try TemporaryDirectory()
        let missing = #expect(throws: CofferError.self) { try DatabaseAccess.openExisting(dir.child("none.sqlite"), readOnly: true) }
        #expect(missing?.status == .failed)
        #expect(!FileManager.default.fileExists(atPath: dir.child("none.sqlite")))

        try "not a database at all, just text that is long enough to fill a header.....".write(
            toFile: dir.child("text.sqlite"), atomically: true, encoding: .utf8)
        let notADatabase = #expect(throws: CofferError.self) { try DatabaseAccess.openExisting(dir.child("text.sqlite"), readOnly: true) }
        #expect(notADatabase?.status == .failed)
        #expect(notADatabase?.hint?.contains("not a SQLite database") == true)
    }
}
