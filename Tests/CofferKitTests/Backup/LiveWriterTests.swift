import CofferFixtures
@testable import CofferKit
import Foundation
import GRDB
import Testing

@Suite struct LiveWriterTests {
    /// The pipeline keeps committing while the backup runs: the backup finishes, the writer
    /// is not stopped, and the copy is one consistent cut.
    @Test func backupFinishesWhileAWriterCommitsContinuously() throws {
        let fixture = try BackupFixture(jobs: 400, hostile: false, maxFileBytes: 64 * 1024)
        let writer = try DatabaseQueue(path: fixture.volume.dbPath, configuration: DatabaseAccess.configuration(readOnly: false))
        final class State: @unchecked Sendable {
            let lock = NSLock()
            var running = true
            var commits = 0
            var failure: Error?
        }
        let state = State()
        let thread = Thread {
            var n = 0
            while state.lock.withLock({ state.running }) {
                do {
                    try writer.write { db in
                        try db.execute(sql: "INSERT INTO jobs (id, url, status) VALUES (?, 'https://load', 'QUEUED')", arguments: ["load-\(n)"])
                        try db.execute(sql: "INSERT INTO job_events (job_id, event, payload) VALUES (?, 'queued', '{}')", arguments: ["load-\(n)"])
                    }
                    n += 1
                    state.lock.withLock { state.commits = n }
                } catch {
                    state.lock.withLock { state.failure = error; state.running = false }
                }
            }
        }
        thread.start()
        while state.lock.withLock({ state.commits }) < 20 { Thread.sleep(forTimeInterval: 0.005) }
        let before = state.lock.withLock { state.commits }
        let report = try fixture.backup()
        let during = state.lock.withLock { state.commits } - before
        state.lock.withLock { state.running = false }
        while thread.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
        #expect(state.failure == nil)
        #expect(report.status == .ok, "\(report.problems)")
        #expect(during > 0, "the writer made no progress during the backup")

        // The copy is a consistent cut: every queued job has its event, and the counts recorded
        // in the snapshot are those of the restored database.
        let restored = try fixture.restore(into: "cut")
        let db = fixture.volume.directory.child("cut/data/db.sqlite")
        let queue = try DatabaseQueue(path: db)
        let (jobs, events, orphans) = try queue.read { db in
            (try Int.fetchOne(db, sql: "SELECT count(*) FROM jobs WHERE url = 'https://load'")!,
             try Int.fetchOne(db, sql: "SELECT count(*) FROM job_events WHERE event = 'queued'")!,
             try Int.fetchOne(db, sql: "SELECT count(*) FROM jobs j WHERE url = 'https://load' AND NOT EXISTS (SELECT 1 FROM job_events e WHERE e.job_id = j.id)")!)
        }
        #expect(jobs >= before && jobs == events && orphans == 0)
        let snapshot = try fixture.repository().resolve("latest")
        #expect(snapshot.summary.database.rowCounts["jobs"] == (try queue.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM jobs") }))
        #expect(restored.verify?.findings.isEmpty == true, "\(restored.verify?.findingList ?? "")")
    }

    /// Rows committed but still only in the write-ahead log (no checkpoint yet: the pipeline's
    /// connection is open) are in the copy: a copy of the database file alone would lose them.
    @Test func rowsStillOnlyInTheWriteAheadLogAreInTheCopy() throws {
        let fixture = try BackupFixture(jobs: 20, hostile: false)
        var configuration = DatabaseAccess.configuration(readOnly: false)
        configuration.prepareDatabase { try $0.execute(sql: "PRAGMA wal_autocheckpoint = 0") }
        let writer = try DatabaseQueue(path: fixture.volume.dbPath, configuration: configuration)
        let mainFileBefore = try Data(contentsOf: URL(fileURLWithPath: fixture.volume.dbPath))
        try writer.write { db in
            for n in 0..<600 {
                try db.execute(sql: "INSERT INTO jobs (id, url, status) VALUES (?, 'https://wal', 'QUEUED')", arguments: ["wal-\(n)"])
            }
        }
        // The premise: the rows are in the log, the database file has not changed.
        #expect(try Data(contentsOf: URL(fileURLWithPath: fixture.volume.dbPath)) == mainFileBefore)
        #expect((try FileSystem.status(fixture.volume.dbPath + "-wal").get().size) > 0)
        let total = try writer.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM jobs")! }

        #expect(try fixture.backup().status == .ok)
        let snapshot = try fixture.repository().resolve("latest")
        #expect(snapshot.summary.database.rowCounts["jobs"] == total)
        _ = try fixture.restore(into: "wal")
        let restored = try DatabaseQueue(path: fixture.volume.directory.child("wal/data/db.sqlite"))
        #expect(try restored.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM jobs WHERE url = 'https://wal'") } == 600)
        try writer.close()
    }

    /// The copy of a database of thousands of pages finishes while a writer commits without
    /// pause, and is one cut. A copy made in steps (a few hundred pages at a time) starts again
    /// after every commit of another connection and, under this load, would never end: the
    /// deadline fails it.
    @Test func aLargeDatabaseIsCopiedWhileAWriterNeverPauses() throws {
        let directory = try TemporaryDirectory()
        let source = directory.path + "/busy.sqlite"
        let writer = try DatabaseQueue(path: source, configuration: DatabaseAccess.configuration(readOnly: false))
        try writer.write { db in
            try db.execute(sql: "CREATE TABLE a (n INTEGER PRIMARY KEY, filler BLOB); CREATE TABLE b (n INTEGER PRIMARY KEY)")
            for n in 0..<6000 {
                try db.execute(sql: "INSERT INTO a VALUES (?, zeroblob(4000)); INSERT INTO b VALUES (?)", arguments: [n, n])
            }
        }
        final class State: @unchecked Sendable {
            let lock = NSLock()
            var running = true
            var stopped = false
            var commits = 0
            var copy: Result<DatabaseCopy, Error>?
        }
        let state = State()
        let load = Thread {
            var n = 6000
            while state.lock.withLock({ state.running }) {
                try? writer.write { db in
                    try db.execute(sql: "INSERT INTO a VALUES (?, zeroblob(100)); INSERT INTO b VALUES (?)", arguments: [n, n])
                }
                n += 1
                state.lock.withLock { state.commits += 1 }
            }
            state.lock.withLock { state.stopped = true }
        }
        load.start()
        // The writer stopped and closed before the folder goes: a write after its removal
        // began left the folder behind (75 MB a run).
        defer {
            state.lock.withLock { state.running = false }
            while !state.lock.withLock({ state.stopped }) { Thread.sleep(forTimeInterval: 0.005) }
            try? writer.close()
            withExtendedLifetime(directory) {}
        }
        while state.lock.withLock({ state.commits }) < 50 { Thread.sleep(forTimeInterval: 0.005) }
        for round in 0..<3 {
            let target = directory.path + "/copy-\(round).sqlite"
            state.lock.withLock { state.copy = nil }
            Thread {
                let result = Result { try DatabaseCopy.take(from: source, to: target) }
                state.lock.withLock { state.copy = result }
            }.start()
            let deadline = Date().addingTimeInterval(60)
            while state.lock.withLock({ state.copy == nil }), Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            let copy = try #require(state.lock.withLock { state.copy }, "the copy did not finish in 60 s under load").get()
            #expect(copy.size > 6000 * 4000)
            let counts = try DatabaseQueue(path: target).read { db in
                (try Int.fetchOne(db, sql: "SELECT count(*) FROM a")!, try Int.fetchOne(db, sql: "SELECT count(*) FROM b")!,
                 try String.fetchOne(db, sql: "PRAGMA integrity_check")!)
            }
            #expect(counts.0 == counts.1 && counts.0 >= 6000 && counts.2 == "ok")
        }
        let committed = state.lock.withLock { state.commits }
        Thread.sleep(forTimeInterval: 0.05)
        #expect(state.lock.withLock { state.commits } > committed, "the writer stopped")
    }

    /// A file that grows while it is read is stored as read and recorded; the run says so.
    @Test func aFileChangingWhileReadIsRecorded() throws {
        let fixture = try BackupFixture(jobs: 6, hostile: false)
        let growing = PathBytes((fixture.volume.mediaRoot + "/library/live/recording.mkv").utf8)
        var random = RandomSource(seed: 5)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        try FixtureFiles.write(growing, size: 48 << 20, random: &random, buffer: buffer)
        final class Flag: @unchecked Sendable { let lock = NSLock(); var on = true }
        let flag = Flag()
        let appender = Thread {
            while flag.lock.withLock({ flag.on }) {
                try? FixtureFiles.append(growing, [UInt8](repeating: 7, count: 4096))
                usleep(200)
            }
        }
        appender.start()
        defer { flag.lock.withLock { flag.on = false } }
        Thread.sleep(forTimeInterval: 0.02)
        let report = try fixture.backup()
        flag.lock.withLock { flag.on = false }
        #expect(report.status == .findings)
        #expect(report.problems.contains { $0.kind == "changed" && $0.path == PathText.display(growing) }, "\(report.problems)")
        // What was stored is internally consistent: the repository verifies.
        #expect(try fixture.verifyRepository().findings.isEmpty)
    }

    /// Opt-in (COFFER_SLOW_TESTS=1): writes and reads 4 GiB.
    @Test func aSparseFileOverFourGiBSurvives() throws {
        guard ProcessInfo.processInfo.environment["COFFER_SLOW_TESTS"] == "1" else {
            print("skipped: set COFFER_SLOW_TESTS=1 to back up and restore a sparse file over 4 GiB")
            return
        }
        let fixture = try BackupFixture(jobs: 4, hostile: false)
        let big = PathBytes((fixture.volume.mediaRoot + "/library/huge/sparse.mkv").utf8)
        let size = (Int64(1) << 32) + 4097
        try FixtureFiles.writeSparse(big, size: size)
        #expect(try fixture.backup().status == .ok)
        #expect(try fixture.verifyRepository().findings.isEmpty)
        _ = try fixture.restore(into: "big")
        let restored = PathBytes(fixture.volume.directory.child("big/media/library/huge/sparse.mkv").utf8)
        #expect(try FileSystem.status(restored).get().size == size)
        for offset in [Int64(0), size - 19] {
            let a = try CofferKit.LocalStorage(root: "/").get(String(decoding: big.dropFirst(), as: UTF8.self), offset: offset, length: 19)
            let b = try CofferKit.LocalStorage(root: "/").get(String(decoding: restored.dropFirst(), as: UTF8.self), offset: offset, length: 19)
            #expect(a == b)
        }
    }
}
