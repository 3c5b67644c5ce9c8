import CofferFixtures
import CofferKit
import Foundation
import GRDB
import Testing

@Suite struct VolumeStatusTests {
    @Test func reportsJobsSizesAndTheOldestUnfinishedJob() throws {
        let volume = try TestVolume(jobs: 30, hostile: false)
        let now = Date()
        try DatabaseQueue(path: volume.dbPath).write { db in
            try db.execute(sql: "INSERT INTO jobs (id, url, status, created_at) VALUES ('stuck', 'u', 'DUBBING', ?)",
                           arguments: [VolumeGenerator.timestamp(now.timeIntervalSince1970 - 3 * 86400)])
        }
        let status = try VolumeStatus.read(try volume.configuration(), now: now)
        #expect(status.jobsByStatus.values.reduce(0, +) == volume.generated.jobs + 1)
        #expect(status.jobsByStatus["DUBBING"] == (volume.generated.jobsByStatus["DUBBING"] ?? 0) + 1)
        #expect(status.oldestUnfinishedJob?.id == "stuck")
        #expect(abs((status.oldestUnfinishedJob?.ageSeconds ?? 0) - 3 * 86400) < 2)
        #expect(status.dbBytes > 0)
        #expect(status.status == .ok)
        #expect(status.text().contains("stuck DUBBING, 3 d 0 h old"))
    }

    /// Either threshold crossed is exit 1 ("a threshold was crossed"), as in `verify`.
    @Test func exitsWithFindingsBelowEitherThreshold() throws {
        let volume = try TestVolume(jobs: 5, hostile: false)
        #expect(try VolumeStatus.read(try volume.configuration()).status == .ok)
        let alert = try VolumeStatus.read(try volume.configuration([.alertFreeSpaceGB: "900000000"]))
        #expect(alert.findings.map(\.kind) == [.diskSpaceAlert])
        #expect(alert.status == .findings)
        let low = try VolumeStatus.read(try volume.configuration([.minFreeSpaceGB: "900000000", .alertFreeSpaceGB: "900000000"]))
        #expect(low.status == .findings)
    }

    @Test func walSizeIsShownWhileAWriterHasUncheckpointedPages() throws {
        let volume = try TestVolume(jobs: 5, hostile: false)
        let writer = try DatabaseQueue(path: volume.dbPath)
        try writer.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 0")
            try db.execute(sql: "INSERT INTO jobs (id, url, status) VALUES ('w', 'u', 'QUEUED')")
        }
        let status = try VolumeStatus.read(try volume.configuration())
        #expect(status.walBytes > 0)
        try writer.close()
    }

    @Test func showsTheAgeOfTheNewestSnapshot() throws {
        let fixture = try BackupFixture(jobs: 6, hostile: false)
        let empty = try VolumeStatus.read(try fixture.configuration())
        #expect(empty.newestSnapshot == nil)
        #expect(empty.text().contains(": no snapshot"))
        #expect(!FileManager.default.fileExists(atPath: fixture.repo))
        let report = try fixture.backup()
        let later = Date().addingTimeInterval(7200)
        let status = try VolumeStatus.read(try fixture.configuration(), now: later)
        #expect(status.newestSnapshot?.id == report.snapshot)
        #expect(abs((status.newestSnapshot?.ageSeconds ?? 0) - 7200) < 60)
        #expect(status.text().contains("newest snapshot \(report.snapshot!), 2 h 0 min old"))
    }
}
