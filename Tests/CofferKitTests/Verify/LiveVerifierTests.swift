import CofferFixtures
import CofferKit
import Foundation
import GRDB
import Testing

@Suite struct LiveVerifierTests {
    @Test(arguments: VolumeSpec.SchemaStyle.allCases)
    func aGeneratedVolumeIsClean(schema: VolumeSpec.SchemaStyle) throws {
        let volume = try TestVolume(jobs: 60, schema: schema)
        let report = try volume.verify(full: true)
        #expect(report.findings.isEmpty, "\(report.findingList)")
        #expect(report.status == .ok)
        #expect(report.schema?.version == (schema == .coffer ? SchemaMigrations.latestVersion : 1))
        #expect(report.schema?.hasHistory == (schema == .coffer))
        #expect(report.counts.jobs == volume.generated.jobs)
        #expect(report.counts.mediaRows == volume.generated.mediaRows)
        #expect(report.counts.events == volume.generated.events)
        #expect(report.counts.libraryFiles == volume.generated.completeJobIDs.count)
        #expect(report.counts.tempDirectories == volume.generated.tempDirectories)
        #expect(report.databaseCheck == "integrity_check")
    }

    /// A path the database holds outside MEDIA_ROOT is a finding (backup skips it, restore
    /// cannot move it), even when the file is there: a MEDIA_ROOT pointed at the wrong folder
    /// gives one per reference instead of "no findings".
    @Test func pathsOutsideTheMediaRootAreFindings() throws {
        let volume = try TestVolume(jobs: 30, hostile: false)
        let elsewhere = volume.directory.child("elsewhere.mkv")
        FileManager.default.createFile(atPath: elsewhere, contents: Data("x".utf8))
        let queue = try DatabaseQueue(path: volume.dbPath)
        let jobID = try queue.write { db -> String in
            let id = try String.fetchOne(db, sql: "SELECT job_id FROM media WHERE video_path IS NOT NULL ORDER BY job_id LIMIT 1")!
            try db.execute(sql: "UPDATE media SET video_path = ?, file_size_bytes = 1 WHERE job_id = ?", arguments: [elsewhere, id])
            return id
        }
        try queue.close()
        let report = try volume.verify()
        let outside = report.findings.filter { $0.kind == .outsideMediaRoot }
        #expect(outside.count == 1 && outside.first?.jobID == jobID && outside.first?.path == elsewhere, "\(report.findingList)")
        #expect(outside.first?.severity == .error && report.status == .findings)

        // MEDIA_ROOT pointed at an empty folder: every reference is outside it.
        let empty = volume.directory.child("empty-root")
        try FileManager.default.createDirectory(atPath: empty + "/library", withIntermediateDirectories: true)
        let wrong = try LiveVerifier(configuration: try volume.configuration([.mediaRoot: empty])).run()
        #expect(wrong.findings.filter { $0.kind == .outsideMediaRoot }.count == wrong.counts.referencedFiles)
        #expect(wrong.counts.referencedFiles > 20)
    }

    /// Hostile names (newlines, quotes, a 255-byte name, bytes that are not UTF-8 stored as a
    /// BLOB) are matched to their rows, not reported as orphans or missing.
    @Test func hostileNamesAreReconciled() throws {
        let volume = try TestVolume(jobs: 50)
        let names = volume.generated.filePaths.map { $0.split(separator: UInt8(ascii: "/")).suffix(2).joined(separator: [UInt8(ascii: "/")]).map { $0 } }
        #expect(volume.generated.filePaths.contains { $0.split(separator: UInt8(ascii: "/")).last?.count == 255 })
        #expect(volume.generated.filePaths.contains { (try? FileSystem.status($0).get().size) == 0 })
        #expect(volume.generated.filePaths.contains { !PathText.isUTF8($0) })
        #expect(names.contains { $0.contains(UInt8(ascii: "\n")) })
        #expect(names.contains { $0.first == UInt8(ascii: "=") || $0.contains(UInt8(ascii: "/")) && $0.split(separator: UInt8(ascii: "/")).last?.first == UInt8(ascii: "=") })
        #expect(names.contains { $0.isEmpty == false && String(decoding: $0, as: UTF8.self).contains("e\u{0301}") })
        let report = try volume.verify()
        #expect(report.findings.isEmpty, "\(report.findingList)")
    }

    /// The 255-byte name stays 255 bytes whatever container the seed draws for it (`.webm`
    /// is a byte longer than `.mkv`: seed 2 once made a 256-byte name and failed to generate).
    @Test(arguments: 1...6 as ClosedRange<UInt64>)
    func theLongNameIsExactly255BytesForEverySeed(seed: UInt64) throws {
        let volume = try TestVolume(jobs: 2, seed: seed)
        let longest = volume.generated.filePaths.map { $0.split(separator: UInt8(ascii: "/")).last?.count ?? 0 }.max()
        #expect(longest == 255)
    }

    @Test func everyPlantedProblemIsFoundWithItsJobAndPath() throws {
        let volume = try TestVolume(jobs: 60)
        let planted = try ProblemPlanter.plantAll(in: volume.generated)
        let report = try volume.verify()
        #expect(report.status == .findings)
        for problem in planted {
            let matches = report.findings(problem.kind).filter { finding in
                (problem.jobID == nil || finding.jobID == problem.jobID)
                    && (problem.path == nil || finding.path == PathText.display(problem.path!))
            }
            #expect(matches.count == 1, "\(problem.kind) \(problem.jobID ?? "") not found in:\n\(report.findingList)")
        }
        // Nothing else: each finding is one that was planted.
        #expect(report.findings.count == planted.count, "\(report.findingList)")
        let sizeMismatch = try #require(report.findings(.sizeMismatch).first)
        #expect(sizeMismatch.actual != sizeMismatch.expected)
        #expect(report.summary.errors == 5 && report.summary.warnings == 4)
    }

    @Test func orphansWithNamesThatAreNotUTF8AreShownExactly() throws {
        let volume = try TestVolume(jobs: 12, hostile: false)
        let library = PathBytes((volume.mediaRoot + "/library/").utf8)
        let orphan = library + [0x66, 0xFF, 0x0A, 0x67] // "f\xFF\ng"
        var random = RandomSource(seed: 1)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
        defer { buffer.deallocate() }
        try FixtureFiles.write(orphan, size: 10, random: &random, buffer: buffer)
        let report = try volume.verify()
        #expect(report.findings.map(\.kind) == [.orphanFile])
        #expect(report.findings.first?.path == volume.mediaRoot + "/library/f\\xFF\\ng")
    }

    @Test func relativeAndUntidyPathsInTheDatabaseAreResolved() throws {
        let volume = try TestVolume(jobs: 12, hostile: false)
        let queue = try DatabaseQueue(path: volume.dbPath)
        try queue.write { db in
            // Relative to MEDIA_ROOT, and with a doubled slash and a "./" component.
            let rows = try Row.fetchAll(db, sql: "SELECT id, video_path FROM media WHERE video_path LIKE ? LIMIT 2",
                                        arguments: [volume.mediaRoot + "/library/%"])
            let first: String = rows[0]["video_path"], second: String = rows[1]["video_path"]
            try db.execute(sql: "UPDATE media SET video_path = ? WHERE id = ?",
                           arguments: [String(first.dropFirst(volume.mediaRoot.count + 1)), rows[0]["id"]])
            try db.execute(sql: "UPDATE media SET video_path = ? WHERE id = ?",
                           arguments: [second.replacingOccurrences(of: "/library/", with: "//library/./"), rows[1]["id"]])
        }
        let report = try volume.verify()
        #expect(report.findings.isEmpty, "\(report.findingList)")
    }

    @Test func expiredTempDirectoriesFollowTheRetentionRules() throws {
        let volume = try TestVolume(jobs: 12, hostile: false)
        let now = Date().timeIntervalSince1970
        let cases: [(id: String, status: String, finishedAgo: Double?, expired: Bool)] = [
            ("c-recent", "COMPLETE", 23 * 3600, false),
            ("c-old", "COMPLETE", 25 * 3600, true),
            ("f-recent", "FAILED", 6 * 86400, false),
            ("f-old", "FAILED", 8 * 86400, true),
            ("x-old", "CANCELED", 8 * 86400, true),
            ("q-old", "QUEUED", nil, false), // never an unfinished job's directory
            ("d-old", "DUBBING", nil, false),
        ]
        try DatabaseQueue(path: volume.dbPath).write { db in
            for c in cases {
                try db.execute(sql: "INSERT INTO jobs (id, url, status, created_at, completed_at) VALUES (?, 'u', ?, ?, ?)",
                               arguments: [c.id, c.status, VolumeGenerator.timestamp(now - 30 * 86400),
                                           c.finishedAgo.map { VolumeGenerator.timestamp(now - $0) }])
            }
        }
        for c in cases { try FileManager.default.createDirectory(atPath: "\(volume.mediaRoot)/tmp/\(c.id)", withIntermediateDirectories: false) }
        let report = try volume.verify()
        let expired = Set(report.findings(.expiredTempDirectory).compactMap(\.jobID))
        #expect(expired == Set(cases.filter(\.expired).map(\.id)), "\(report.findingList)")
        // The COMPLETE jobs here have no media row, which is a finding of its own.
        #expect(report.findings.count == expired.count + 2, "\(report.findingList)")
    }

    @Test func aFinishedJobWithoutCompletionTimeIsAgedByItsDirectory() throws {
        let volume = try TestVolume(jobs: 12, hostile: false)
        try DatabaseQueue(path: volume.dbPath).write { db in
            try db.execute(sql: "INSERT INTO jobs (id, url, status) VALUES ('no-end', 'u', 'COMPLETE')")
            try db.execute(sql: "INSERT INTO media (job_id) VALUES ('no-end')")
        }
        let dir = "\(volume.mediaRoot)/tmp/no-end"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        #expect(try volume.verify().findings(.expiredTempDirectory).isEmpty)
        FixtureFiles.setModified(Array(dir.utf8), Date().timeIntervalSince1970 - 2 * 86400)
        let report = try volume.verify()
        #expect(report.findings(.expiredTempDirectory).map(\.jobID) == ["no-end"])
        // Its media row has no video: that is a finding of its own.
        #expect(report.findings(.completeWithoutMedia).map(\.jobID) == ["no-end"])
    }

    @Test func freeSpaceIsCheckedAgainstBothThresholds() throws {
        let volume = try TestVolume(jobs: 8, hostile: false)
        let low = try volume.verify([.minFreeSpaceGB: "900000000", .alertFreeSpaceGB: "900000000"])
        #expect(low.findings.map(\.kind) == [.diskSpaceLow])
        #expect(low.findings.first?.severity == .error)
        let alert = try volume.verify([.minFreeSpaceGB: "0", .alertFreeSpaceGB: "900000000"])
        #expect(alert.findings.map(\.kind) == [.diskSpaceAlert])
        #expect(alert.findings.first?.severity == .warning)
        #expect(alert.status == .findings)
    }

    @Test func anUnknownSchemaIsAFinding() throws {
        let volume = try TestVolume(jobs: 8, hostile: false)
        try DatabaseQueue(path: volume.dbPath).write { db in
            try db.execute(sql: "CREATE TABLE surprise (id INTEGER PRIMARY KEY)")
            try db.execute(sql: "DROP INDEX idx_events_ts")
        }
        let report = try volume.verify()
        #expect(report.schema?.version == nil)
        let actual = Set(report.findings(.schema).compactMap(\.actual))
        #expect(actual == ["unexpected table surprise", "missing index idx_events_ts on job_events(ts)"])
    }

    @Test func aDatabaseWithoutTheSeedTablesIsReportedNotCrashedOn() throws {
        let volume = try TestVolume(jobs: 8, hostile: false)
        try DatabaseQueue(path: volume.dbPath).writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA foreign_keys = OFF; DROP TABLE media")
        }
        let report = try volume.verify()
        #expect(report.findings.contains { $0.kind == .schema && $0.message == "reconciliation skipped" })
        #expect(report.status == .findings)
    }

    @Test func aMissingLibraryOrTempRootIsAFinding() throws {
        let volume = try TestVolume(jobs: 5, hostile: false)
        try FileManager.default.removeItem(atPath: volume.mediaRoot)
        let report = try volume.verify()
        let missingRoots = report.findings(.missingFile).filter { $0.jobID == nil }.compactMap(\.path)
        #expect(Set(missingRoots) == [volume.mediaRoot + "/library", volume.mediaRoot + "/tmp"], "\(report.findingList)")
    }

    @Test func aSparseVideoOverFourGiBIsCheckedBySize() throws {
        let volume = try TestVolume(jobs: 6, hostile: false, largeFile: true)
        #expect(volume.generated.bytes > Int64(1) << 32)
        #expect(try volume.verify().findings.isEmpty)
        let big = try #require(volume.generated.filePaths.first { (try? FileSystem.status($0).get().size) ?? 0 > Int64(1) << 32 })
        try FixtureFiles.append(big, [1])
        let report = try volume.verify()
        #expect(report.findings(.sizeMismatch).first?.actual == "\((Int64(1) << 32) + 4098) bytes")
    }
}
