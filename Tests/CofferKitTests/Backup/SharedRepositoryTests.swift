import CofferFixtures
@testable import CofferKit
import Foundation
import Testing

/// Two volumes (two pipelines) backed up into one repository. `latest` is the newest snapshot
/// of the volume a command is configured for, or of the only volume there is; of several, none
/// of them this one, it is refused rather than guessed: a restore must not bring back another
/// machine's data. `status` ages this volume's newest snapshot, not another's.
@Suite struct SharedRepositoryTests {
    /// Volume `a` backs up first, then `b` (newer) into `a`'s repository.
    func twoVolumes() throws -> (a: BackupFixture, b: BackupFixture, aSnapshot: String, bSnapshot: String) {
        let a = try BackupFixture(jobs: 6, hostile: false)
        let b = try BackupFixture(jobs: 8, hostile: false, seed: 9)
        try a.backup()
        Thread.sleep(forTimeInterval: 0.01) // b's snapshot is the newer, by its time
        var runner = BackupRunner(configuration: try b.configuration([.repo: a.repo]))
        #expect(try runner.run().status == .ok)
        let all = try a.repository().snapshots().snapshots
        #expect(all.count == 2)
        let of = { (fixture: BackupFixture) in all.first { $0.header.dbPath == fixture.volume.dbPath }!.id }
        return (a, b, of(a), of(b))
    }

    @Test func latestIsTheConfiguredVolumesNewest() throws {
        let (a, b, aSnapshot, bSnapshot) = try twoVolumes()
        let repository = try a.repository()
        #expect(try repository.resolve("latest", volume: .init(dbPath: a.volume.dbPath, mediaRoot: a.volume.mediaRoot)).id == aSnapshot)
        #expect(try repository.resolve("latest", volume: .init(dbPath: b.volume.dbPath, mediaRoot: b.volume.mediaRoot)).id == bSnapshot)
        // A's paths on a host with no snapshot (renamed, or a container made anew): a's.
        let renamed = Repository.Volume(host: "another-host", dbPath: a.volume.dbPath, mediaRoot: a.volume.mediaRoot)
        #expect(try repository.resolve("latest", volume: renamed).id == aSnapshot)
        #expect(try repository.newestOfVolume(renamed)?.id == aSnapshot)

        // A restore into new targets (a new machine): not guessed; the error names both.
        let error = #expect(throws: CofferError.self) { try a.restore(into: "new") }
        #expect(error?.status == .usage)
        #expect(error?.message.contains("2 volumes") == true, "\(String(describing: error))")
        for id in [aSnapshot, bSnapshot] { #expect(error?.hint?.contains(id) == true, "\(String(describing: error?.hint))") }
        #expect(!FileManager.default.fileExists(atPath: a.volume.directory.child("new")))
        // Named, it restores.
        #expect(try a.restore(into: "new", snapshot: aSnapshot).snapshot == aSnapshot)

        // The drill and verify of volume a take a's newest.
        var drill = Drill(configuration: try a.configuration())
        drill.scratch = a.volume.directory.path
        #expect(try drill.run().snapshot == aSnapshot)
        var verifier = RepositoryVerifier(repository: a.repo)
        verifier.snapshot = "latest"
        verifier.volume = .init(dbPath: a.volume.dbPath, mediaRoot: a.volume.mediaRoot)
        #expect(try verifier.run().snapshots == [aSnapshot])
    }

    /// Prune's rules count each volume's snapshots apart: `--keep-last 1` run for a busy
    /// volume keeps the other volume's only snapshot, whose bytes all stay restorable.
    @Test func pruneKeepsEachVolumesSnapshotsByItsOwnCount() throws {
        let (a, b, _, bSnapshot) = try twoVolumes()
        for round in 1...3 {
            try a.touchLibrary(every: 3, round: round)
            try a.addEvent("round \(round)")
            try a.backup()
        }
        let aNewest = try #require(try a.repository().snapshots().snapshots.last { $0.header.dbPath == a.volume.dbPath }).id
        var pruner = Pruner(repository: a.repo, policy: KeepPolicy(last: 1))
        let report = try pruner.run()
        #expect(report.kept.map(\.id).sorted() == [aNewest, bSnapshot].sorted(), "\(report.text())")
        #expect(report.forgotten.count == 3)
        #expect(try a.verifyRepository().findings.isEmpty)
        var restorer = Restorer(configuration: try b.configuration([
            .repo: a.repo, .dbPath: b.volume.directory.child("back/db.sqlite"), .mediaRoot: b.volume.directory.child("back/media"),
        ]))
        restorer.snapshot = bSnapshot
        #expect(try restorer.run().snapshot == bSnapshot)
        var recorded = Set<PathBytes>()
        let repository = try a.repository()
        try repository.reader(for: try repository.resolve(bSnapshot)).files { recorded.insert($0.path) }
        let restored = try TreeSnapshot(b.volume.directory.child("back/media"))
        #expect(restored.items == (try TreeSnapshot(b.volume.mediaRoot) { !recorded.contains($0) }).items)
        #expect(restored.items.count == recorded.count && !recorded.isEmpty)
        #expect(try tableRows(b.volume.directory.child("back/db.sqlite"), "jobs") == tableRows(b.volume.dbPath, "jobs"))
    }

    /// Two hosts back up the same paths (two machines set up alike): a third host with those
    /// paths does not get either's by default, nor does its status show either's age.
    @Test func twoHostsWithTheSamePathsAreNotGuessedBetween() throws {
        let a = try BackupFixture(jobs: 5, hostile: false)
        try a.backup()
        try a.addEvent()
        try a.backup()
        let repository = try a.repository()
        let all = try repository.snapshots().snapshots
        #expect(all.count == 2)
        // The older one was taken by another host (its header rewritten and sealed again).
        let record = a.repo + "/snapshots/\(all[0].id).jsonl"
        chmod(record, 0o644)
        let text = try String(contentsOfFile: record, encoding: .utf8)
        let host = ProcessInfo.processInfo.hostName
        let quoted = "\"host\":\"\(host)\""
        #expect(text.contains(quoted))
        try text.replacingOccurrences(of: quoted, with: "\"host\":\"twin-host\"").write(toFile: record, atomically: true, encoding: .utf8)
        try resealRecord(record)
        let paths = (a.volume.dbPath, a.volume.mediaRoot)
        // This host: its own newest. The twin: its own.
        #expect(try repository.resolve("latest", volume: .init(dbPath: paths.0, mediaRoot: paths.1)).id == all[1].id)
        #expect(try repository.resolve("latest", volume: .init(host: "twin-host", dbPath: paths.0, mediaRoot: paths.1)).id == all[0].id)
        // A third host with the same paths: refused, and no age in its status.
        let third = Repository.Volume(host: "third-host", dbPath: paths.0, mediaRoot: paths.1)
        let error = #expect(throws: CofferError.self) { try repository.resolve("latest", volume: third) }
        #expect(error?.status == .usage)
        #expect(try repository.newestOfVolume(third) == nil)
    }

    @Test func statusAgesThisVolumesNewestSnapshot() throws {
        let (a, b, aSnapshot, _) = try twoVolumes()
        #expect(try VolumeStatus.read(try a.configuration()).newestSnapshot?.id == aSnapshot)
        // A volume never backed up into it has none, whatever the others have.
        let c = try BackupFixture(jobs: 3, hostile: false, seed: 11)
        let status = try VolumeStatus.read(try c.configuration([.repo: a.repo]))
        #expect(status.newestSnapshot == nil)
        #expect(status.text().contains("no snapshot of this volume"))
        withExtendedLifetime(b) {}
    }

    /// With one volume in the repository, `latest` is its newest wherever the restore goes.
    @Test func oneVolumesLatestRestoresAnywhere() throws {
        let a = try BackupFixture(jobs: 5, hostile: false)
        try a.backup()
        let id = try a.repository().snapshots().snapshots[0].id
        #expect(try a.restore(into: "elsewhere").snapshot == id)
    }
}
