import CofferFixtures
import CofferKit
import Foundation
import GRDB
import Testing

@Suite struct TempCleanupTests {
    struct Case {
        var id: String
        var status: String?   // nil: the database does not know the job
        var finishedAgo: Double?
        var changedAgo: Double
        var removed: Bool
    }

    static let hour: Double = 3600, day: Double = 86400
    static let cases: [Case] = [
        Case(id: "c-recent", status: "COMPLETE", finishedAgo: 23 * hour, changedAgo: 23 * hour, removed: false),
        Case(id: "c-old", status: "COMPLETE", finishedAgo: 25 * hour, changedAgo: 25 * hour, removed: true),
        Case(id: "f-recent", status: "FAILED", finishedAgo: 6 * day, changedAgo: 6 * day, removed: false),
        Case(id: "f-old", status: "FAILED", finishedAgo: 8 * day, changedAgo: 8 * day, removed: true),
        Case(id: "x-old", status: "CANCELED", finishedAgo: 8 * day, changedAgo: 8 * day, removed: true),
        // An unfinished job's directory is never removed, however old everything in it is.
        Case(id: "q-old", status: "QUEUED", finishedAgo: 90 * day, changedAgo: 90 * day, removed: false),
        Case(id: "d-old", status: "DUBBING", finishedAgo: nil, changedAgo: 90 * day, removed: false),
        // A finished job without completed_at is aged by the newest change in its directory.
        Case(id: "c-no-end", status: "COMPLETE", finishedAgo: nil, changedAgo: 2 * day, removed: true),
        Case(id: "u-old", status: nil, finishedAgo: nil, changedAgo: 2 * day, removed: true),
        Case(id: "u-recent", status: nil, finishedAgo: nil, changedAgo: 2 * hour, removed: false),
    ]

    /// A volume with one temp directory per case: a 1000-byte file and a nested 24-byte one.
    func plant(_ volume: TestVolume) throws {
        let now = Date().timeIntervalSince1970
        try DatabaseQueue(path: volume.dbPath).write { db in
            for c in Self.cases {
                guard let status = c.status else { continue }
                try db.execute(sql: "INSERT INTO jobs (id, url, status, created_at, completed_at) VALUES (?, 'u', ?, ?, ?)",
                               arguments: [c.id, status, VolumeGenerator.timestamp(now - 100 * Self.day),
                                           c.finishedAgo.map { VolumeGenerator.timestamp(now - $0) }])
            }
        }
        for c in Self.cases {
            let dir = "\(volume.mediaRoot)/tmp/\(c.id)"
            try FileManager.default.createDirectory(atPath: dir + "/nested", withIntermediateDirectories: true)
            try Data(repeating: 7, count: 1000).write(to: URL(fileURLWithPath: dir + "/video.mkv"))
            try Data(repeating: 8, count: 24).write(to: URL(fileURLWithPath: dir + "/nested/part.wav"))
            for path in [dir + "/nested/part.wav", dir + "/video.mkv", dir + "/nested", dir] {
                FixtureFiles.setModified(Array(path.utf8), now - c.changedAgo)
            }
        }
    }

    func cleanup(_ volume: TestVolume, dryRun: Bool) throws -> CleanupReport {
        var cleanup = TempCleanup(configuration: try volume.configuration())
        cleanup.dryRun = dryRun
        return try cleanup.run()
    }

    func exists(_ volume: TestVolume, _ id: String) -> Bool {
        FileManager.default.fileExists(atPath: "\(volume.mediaRoot)/tmp/\(id)")
    }

    @Test func theRulesDecideAndADryRunTouchesNothing() throws {
        let volume = try TestVolume(jobs: 12, hostile: false)
        try plant(volume)
        let expected = Set(Self.cases.filter(\.removed).map(\.id))
        let before = try TreeSnapshot(volume.mediaRoot)

        let dry = try cleanup(volume, dryRun: true)
        #expect(Set(dry.removed.compactMap(\.jobID)) == expected, "\(dry.text())")
        #expect(dry.bytesFreed == Int64(expected.count * 1024))
        #expect(try TreeSnapshot(volume.mediaRoot) == before)

        let report = try cleanup(volume, dryRun: false)
        #expect(report.status == .ok)
        #expect(Set(report.removed.compactMap(\.jobID)) == expected, "\(report.text())")
        #expect(report.bytesFreed == Int64(expected.count * 1024))
        #expect(report.removed.allSatisfy { $0.files == 2 })
        #expect(report.removed.first { $0.jobID == "u-old" }?.status == nil)
        for c in Self.cases { #expect(exists(volume, c.id) == !c.removed, "\(c.id)") }
        #expect(report.unfinished >= 2)
        // Nothing else moved: the library and the database are as they were.
        #expect(try volume.verify().findings(.expiredTempDirectory).isEmpty)
        // A second run has nothing left to do.
        #expect(try cleanup(volume, dryRun: false).removed.isEmpty)
    }

    /// A directory a killed cleanup had set aside is not a job's: the next run removes it
    /// first, whatever its age, and says so; a dry run only counts it.
    @Test func whatAKilledCleanupSetAsideIsRemovedNext() throws {
        let volume = try TestVolume(jobs: 12, hostile: false)
        let aside = "\(volume.mediaRoot)/tmp/\(TempCleanup.removingPrefix)4242-7"
        try FileManager.default.createDirectory(atPath: aside + "/nested", withIntermediateDirectories: true)
        try Data(repeating: 1, count: 10).write(to: URL(fileURLWithPath: aside + "/nested/half.wav"))
        #expect(try volume.verify().findings(.unknownTempDirectory).contains { $0.message.contains("the next `coffer cleanup` finishes it") })
        let dry = try cleanup(volume, dryRun: true)
        #expect(dry.interrupted == 1 && FileManager.default.fileExists(atPath: aside))
        #expect(dry.text().contains("would finish removing 1 directory an interrupted cleanup had begun"), "\(dry.text())")
        let report = try cleanup(volume, dryRun: false)
        #expect(report.interrupted == 1 && report.status == .ok)
        #expect(!FileManager.default.fileExists(atPath: aside))
        #expect(report.removed.allSatisfy { !$0.path.contains(TempCleanup.removingPrefix) })
        #expect(try cleanup(volume, dryRun: false).interrupted == 0)
    }

    /// The directory's last change is looked at only when the rules need it: a finished job
    /// without `completed_at`, or an unknown job (a `stat` per directory otherwise).
    @Test func theLastChangeIsLookedAtOnlyWhenNeeded() {
        let now = Date(timeIntervalSince1970: 2_000_000_000)
        let old = now.timeIntervalSince1970 - 8 * 24 * 3600
        var looks = 0
        func lastChange() -> Double? { looks += 1; return old }
        #expect(TempRetention.decide(known: true, status: "DUBBING", finished: nil, lastChange: lastChange(), now: now) == .unfinished(status: "DUBBING"))
        #expect(TempRetention.decide(known: true, status: "COMPLETE", finished: now.timeIntervalSince1970 - 60, lastChange: lastChange(), now: now)
            == .kept(age: 60, limit: TempRetention.completed))
        #expect(looks == 0)
        #expect(TempRetention.decide(known: true, status: "FAILED", finished: nil, lastChange: lastChange(), now: now)
            == .expired(age: 8 * 24 * 3600, limit: TempRetention.failed))
        #expect(TempRetention.decide(known: false, status: nil, finished: nil, lastChange: lastChange(), now: now)
            == .expired(age: 8 * 24 * 3600, limit: TempRetention.unknown))
        #expect(looks == 2)
    }

    @Test func linksInTheTempRootAreNeitherFollowedNorRemoved() throws {
        let volume = try TestVolume(jobs: 6, hostile: false)
        let outside = volume.directory.child("precious")
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: outside + "/file"))
        let link = "\(volume.mediaRoot)/tmp/unknown-link"
        #expect(symlink(outside, link) == 0)
        FixtureFiles.setModified(Array(link.utf8), Date().timeIntervalSince1970 - 30 * Self.day)
        // And inside an expired directory, a link to the outside is removed as a link.
        let dir = "\(volume.mediaRoot)/tmp/unknown-dir"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        #expect(symlink(outside, dir + "/escape") == 0)
        FixtureFiles.setModified(Array((dir + "/escape").utf8), Date().timeIntervalSince1970 - 30 * Self.day)
        FixtureFiles.setModified(Array(dir.utf8), Date().timeIntervalSince1970 - 30 * Self.day)

        let report = try cleanup(volume, dryRun: false)
        #expect(report.removed.map(\.path) == [PathText.display(dir)], "\(report.text())")
        #expect(!FileManager.default.fileExists(atPath: dir))
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: link)) == outside)
        #expect(FileManager.default.fileExists(atPath: outside + "/file"))
    }

    @Test func aDirectoryWhoseNameIsNotUTF8IsHandledByItsBytes() throws {
        let volume = try TestVolume(jobs: 6, hostile: false)
        let name: PathBytes = Array("tmp/raw-".utf8) + [0xE9, 0xFF]
        let dir = PathBytes(volume.mediaRoot.utf8).appendingComponent(name)
        #expect(dir.withCPath { mkdir($0, 0o755) } == 0)
        FixtureFiles.setModified(dir, Date().timeIntervalSince1970 - 3 * Self.day)
        let report = try cleanup(volume, dryRun: false)
        #expect(report.removed.map(\.path) == [PathText.display(dir)], "\(report.text())")
        #expect(FileSystem.status(dir).isFailure)
    }

    @Test func aMissingTempRootIsNothingToDoAndAMissingDatabaseFails() throws {
        let volume = try TestVolume(jobs: 4, hostile: false)
        FileSystem.removeTree(volume.mediaRoot + "/tmp")
        let report = try cleanup(volume, dryRun: false)
        #expect(report.missingRoot && report.status == .ok)
        var cleanup = TempCleanup(configuration: try volume.configuration([.dbPath: volume.directory.child("nope.sqlite")]))
        cleanup.dryRun = false
        let error = #expect(throws: CofferError.self) { try cleanup.run() }
        #expect(error?.status == .failed)
    }
}

extension Result {
    var isFailure: Bool { if case .failure = self { true } else { false } }
}
