import CofferFixtures
import CofferKit
import Foundation
import GRDB
import Testing

/// A damaged database is reported (exit 1, or 2 when it cannot be read at all), never a crash.
@Suite struct DamagedDatabaseTests {
    /// Overwrites `count` bytes at `offset` with a pattern.
    func scribble(_ path: String, at offset: UInt64, count: Int) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seek(toOffset: offset)
        handle.write(Data((0..<count).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }))
    }

    func pageSize(_ path: String) throws -> Int {
        try DatabaseQueue(path: path).read { try Int.fetchOne($0, sql: "PRAGMA page_size")! }
    }

    /// The root page of an index or table.
    func rootPage(_ path: String, _ name: String) throws -> Int {
        try DatabaseQueue(path: path).read { try Int.fetchOne($0, sql: "SELECT rootpage FROM sqlite_master WHERE name = ?", arguments: [name])! }
    }

    @Test func aCorruptedTablePageIsFound() throws {
        let volume = try TestVolume(jobs: 200, hostile: false)
        let size = try pageSize(volume.dbPath)
        let page = try rootPage(volume.dbPath, "job_events")
        // Keep the page header's first bytes, scramble the cell pointers and content.
        try scribble(volume.dbPath, at: UInt64((page - 1) * size + 8), count: size - 8)
        for full in [false, true] {
            do {
                let report = try volume.verify(full: full)
                #expect(report.status == .findings)
                #expect(report.findings.contains { $0.kind == .integrity || $0.kind == .databaseUnreadable }, "\(report.findingList)")
            } catch let error as CofferError {
                #expect(error.status == .failed)
            }
        }
    }

    @Test func aCorruptedIndexIsFoundByTheFullCheck() throws {
        let volume = try TestVolume(jobs: 300, hostile: false)
        let size = try pageSize(volume.dbPath)
        let page = try rootPage(volume.dbPath, "idx_jobs_status")
        // The cells sit at the end of the page: scramble the second half, keep the structure.
        try scribble(volume.dbPath, at: UInt64((page - 1) * size + size / 2), count: size / 2)
        let report = try volume.verify(full: true)
        #expect(report.status == .findings)
        #expect(report.findings.contains { $0.kind == .integrity || $0.kind == .databaseUnreadable }, "\(report.findingList)")
    }

    /// The damage travels through a backup (recorded as a problem) and is reported again by the
    /// check after a restore, from the integrity_check the restore runs on the staged copy.
    @Test func aCorruptedIndexSurvivesBackupAndIsReportedAfterRestore() throws {
        let fixture = try BackupFixture(jobs: 300, hostile: false)
        let size = try pageSize(fixture.volume.dbPath)
        let page = try rootPage(fixture.volume.dbPath, "idx_jobs_status")
        try scribble(fixture.volume.dbPath, at: UInt64((page - 1) * size + size / 2), count: size / 2)
        let backup = try fixture.backup()
        #expect(backup.problems.contains { $0.kind == "database" }, "\(backup.problems)")
        let restored = try fixture.restore(into: "after")
        #expect(restored.status == .findings)
        #expect(restored.verify?.databaseCheck == "integrity_check")
        #expect(restored.verify?.findings.contains { $0.kind == .integrity } == true, "\(restored.verify?.findingList ?? "")")
        // The restore ran integrity_check beside the other database checks: its lines still come first.
        #expect(restored.verify?.findings.first?.kind == .integrity, "\(restored.verify?.findingList ?? "")")
        // Checking the restored file directly finds the damage too (as integrity_check lines,
        // or as the check failing on the malformed page).
        var direct = LiveVerifier(configuration: try fixture.volume.configuration([
            .dbPath: fixture.volume.directory.child("after/data/db.sqlite"), .mediaRoot: fixture.volume.directory.child("after/media")]))
        direct.full = true
        let directFindings = try direct.run().findings
        #expect(directFindings.contains { $0.kind == .integrity || $0.kind == .databaseUnreadable }, "\(directFindings)")
    }

    /// A query that fails on damage becomes a finding; the other checks still run.
    @Test func aFailingQueryIsAFindingAndTheRestGoesOn() throws {
        let volume = try TestVolume(jobs: 200, hostile: false)
        let size = try pageSize(volume.dbPath)
        let page = try rootPage(volume.dbPath, "media")
        try scribble(volume.dbPath, at: UInt64((page - 1) * size), count: size)
        let report = try volume.verify()
        let failedSteps = report.findings(.databaseUnreadable).map { $0.message.components(separatedBy: " failed")[0] }
        #expect(failedSteps.contains("quick_check"), "\(failedSteps)")
        #expect(failedSteps.contains("reconcile media rows"), "\(failedSteps)")
        #expect(report.findings(.databaseUnreadable).allSatisfy { $0.actual?.contains("malformed") == true })
        // The library was still walked and the jobs still counted.
        #expect(report.counts.libraryFiles == volume.generated.completeJobIDs.count)
        #expect(report.counts.jobs == 200)
    }

    /// SQLite opens an empty file as an empty database: that must not pass as a volume.
    @Test func anEmptyDatabaseFileIsNotAHealthyVolume() throws {
        let volume = try TestVolume(jobs: 5, hostile: false)
        #expect(truncate(volume.dbPath, 0) == 0)
        let report = try volume.verify()
        #expect(report.status == .findings)
        #expect(report.findings(.schema).compactMap(\.actual).contains("missing table jobs"), "\(report.findingList)")
    }

    /// Garbage that passes for rows (a damaged page, a hand-edited file) can hold NULL where
    /// the schema says NOT NULL: verify and status report, they do not crash.
    @Test func nullsWhereTheSchemaForbidsThemDoNotCrash() throws {
        let volume = try TestVolume(jobs: 10, hostile: false)
        let queue = try DatabaseQueue(path: volume.dbPath)
        try queue.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA writable_schema = ON")
            try db.execute(sql: "UPDATE sqlite_master SET sql = replace(sql, 'status TEXT NOT NULL', 'status TEXT') WHERE name = 'jobs'")
            try db.execute(sql: "PRAGMA writable_schema = OFF")
        }
        try queue.close()
        try DatabaseQueue(path: volume.dbPath).write { db in
            try db.execute(sql: "INSERT INTO jobs (id, url, status) VALUES ('null-status', 'u', NULL)")
        }
        try FileManager.default.createDirectory(atPath: volume.mediaRoot + "/tmp/null-status", withIntermediateDirectories: false)
        let report = try volume.verify()
        #expect(report.findings.contains { $0.kind == .schema }, "\(report.findingList)")
        _ = try VolumeStatus.read(try volume.configuration())
    }

    @Test func aDestroyedHeaderCannotBeVerified() throws {
        let volume = try TestVolume(jobs: 5, hostile: false)
        try scribble(volume.dbPath, at: 0, count: 100)
        let error = #expect(throws: CofferError.self) { try volume.verify() }
        #expect(error?.status == .failed)
    }

    @Test func aTruncatedDatabaseIsReported() throws {
        let volume = try TestVolume(jobs: 300, hostile: false)
        let size = try FileSystem.status(volume.dbPath).get().size
        #expect(truncate(volume.dbPath, off_t(size / 2)) == 0)
        do {
            let report = try volume.verify()
            #expect(report.status == .findings, "\(report.findingList)")
        } catch let error as CofferError {
            #expect(error.status == .failed)
        }
    }
}
