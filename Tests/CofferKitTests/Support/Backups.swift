import CofferFixtures
@testable import CofferKit
import Crypto
import Foundation
import GRDB
import Testing

/// A volume with a repository beside it, and helpers to back up, restore and compare.
struct BackupFixture {
    let volume: TestVolume
    var repo: String { volume.directory.child("repo") }

    /// `videoSizes`: see ``VolumeSpec/videoSizes`` (``VolumeSpec/testVideoSizes`` for videos of
    /// real sizes among the small files).
    init(jobs: Int = 40, hostile: Bool = true, maxFileBytes: Int = 4096, videoSizes: [Int] = [], seed: UInt64 = 3, base: String? = nil) throws {
        volume = try TestVolume(jobs: jobs, seed: seed, hostile: hostile, maxFileBytes: maxFileBytes, videoSizes: videoSizes, base: base)
    }

    func configuration(_ extra: [SettingKey: String] = [:]) throws -> CofferConfiguration {
        try volume.configuration([.repo: repo].merging(extra) { $1 })
    }

    @discardableResult
    func backup(full: Bool = false, dryRun: Bool = false) throws -> BackupReport {
        var runner = BackupRunner(configuration: try configuration())
        runner.full = full
        runner.dryRun = dryRun
        return try runner.run()
    }

    func restore(into name: String, snapshot: String = "latest", only: Restorer.Part? = nil, force: Bool = false) throws -> RestoreReport {
        var restorer = Restorer(configuration: try configuration([
            .dbPath: volume.directory.child("\(name)/data/db.sqlite"), .mediaRoot: volume.directory.child("\(name)/media"),
        ]))
        restorer.snapshot = snapshot
        restorer.only = only
        restorer.force = force
        return try restorer.run()
    }

    func verifyRepository(readData: Bool = true, snapshot: String? = nil) throws -> RepositoryReport {
        var verifier = RepositoryVerifier(repository: repo)
        verifier.readData = readData
        verifier.snapshot = snapshot
        return try verifier.run()
    }

    func repository() throws -> Repository { try Repository.open(repo) }

    /// What the pipeline does between two nights: one more event, so the next backup's
    /// database copy differs from the last one's.
    /// Appends the byte `round` to one library file in `every` (those whose walk index is
    /// `round` modulo `every`): a night's changes, a new pack's worth.
    func touchLibrary(every: Int, round: Int) throws {
        var index = 0
        try DirectoryWalker(root: volume.mediaRoot + "/library").walk { entry in
            guard entry.kind == .regular else { return }
            index += 1
            if index % every == round % every {
                try FixtureFiles.append(PathBytes(volume.mediaRoot.utf8).appendingComponent(PathBytes("library/".utf8) + entry.relativePath), [UInt8(round)])
            }
        }
    }

    func addEvent(_ note: String = "next night") throws {
        let queue = try DatabaseQueue(path: volume.dbPath)
        try queue.write { db in
            try db.execute(sql: "INSERT INTO job_events (job_id, event, payload) SELECT id, 'progress', ? FROM jobs LIMIT 1", arguments: [note])
        }
        try queue.close()
    }

    /// The first file of `snapshot` of at least `minimumSize` bytes.
    func firstFile(in snapshot: Snapshot, minimumSize: Int64 = 10) throws -> Snapshot.File {
        var found: Snapshot.File?
        try repository().reader(for: snapshot).files { file in
            if found == nil, file.size >= minimumSize { found = file }
        }
        return try #require(found)
    }

    /// Reads every pack the records refer to both ways `verify --read-data` can: merged with
    /// the records in path order (``PackMerge``, which throws ``PackMerge/OutOfOrder`` when the
    /// order does not hold) and gathered in memory. Returns the merge's damage and counts and
    /// the in-memory way's.
    func readPacksBothWays() throws -> (merge: Result<PackMerge, Error>, inMemory: RepositoryReport, inMemoryDamage: [Int64]) {
        let repository = try repository()
        let all = try repository.snapshots().snapshots
        var packs: [String: Int64] = [:]
        var digests: [String: (size: Int64, sha256: String)] = [:]
        for snap in all {
            for pack in [snap.summary.pack] + (snap.summary.repacked ?? []) { digests[pack.name] = (pack.size, pack.sha256) }
            packs[snap.summary.database.pack] = try repository.storage.size(snap.summary.database.pack)
            try repository.reader(for: snap).files { packs[$0.pack] = try repository.storage.size($0.pack) }
        }
        let merge = PackMerge(repository: repository, snapshots: all, packs: packs, digests: digests, progress: nil)
        let merged = Result { try merge.run(); return merge }
        var report = RepositoryReport(repository: repo, readData: true)
        let damage = try RepositoryVerifier(repository: repo).readPacksInMemory(
            all: all, usable: packs, digests: digests, repository: repository, into: &report, snapshotsNeeding: { _ in [] })
        return (merged, report, damage.map(\.key.offset).sorted())
    }

    func packs() throws -> [String] { try repository().storage.list("packs").map { repo + "/" + $0 } }
}

/// Gives a record edited by hand a digest that matches it again, as someone rewriting it on
/// purpose would: for tests of the checks behind the digest. The edit must leave the summary's
/// end (its digest) where it was, last.
func resealRecord(_ path: String) throws {
    var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    let covered = bytes.count - (64 + SnapshotReader.digestEnd.utf8.count + 1)
    let digest = Digest.hex(SHA256.hash(data: bytes[0..<covered]))
    bytes.replaceSubrange(covered..<(covered + 64), with: Array(digest.utf8))
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// Runs a tool (`tar`, `bsdtar`, `sh`) in `directory`; its exit status.
func run(_ command: [String], in directory: String) throws -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: command[0])
    process.arguments = Array(command.dropFirst())
    process.currentDirectoryURL = URL(fileURLWithPath: directory)
    try process.run()
    process.waitUntilExit()
    return process.terminationStatus
}

/// Flips one byte of a file at `offset`.
func flipByte(_ path: String, at offset: Int64) throws {
    chmod(path, 0o644)
    let fd = open(path, O_RDWR)
    defer { close(fd) }
    var byte: UInt8 = 0
    _ = pread(fd, &byte, 1, off_t(offset))
    byte ^= 0x5A
    _ = pwrite(fd, &byte, 1, off_t(offset))
}

/// A small tmpfs mounted for one test, unmounted when released: a real disk that fills. Needs
/// root (the tests that use it are enabled only for root); `nil`, saying so, where the machine
/// does not allow the mount.
final class SmallDisk {
    let path: String

    /// `options` are more tmpfs mount options (`nr_inodes=N`: a disk that runs out of files).
    init?(megabytes: Int, in path: String, options: String = "") throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        let mounting = try Process.run(URL(fileURLWithPath: "/bin/mount"),
                                       arguments: ["-t", "tmpfs", "-o", "size=\(megabytes)m" + (options.isEmpty ? "" : "," + options), "tmpfs", path])
        mounting.waitUntilExit()
        guard mounting.terminationStatus == 0 else {
            print("skipped: this machine does not allow mounting a tmpfs")
            return nil
        }
        self.path = path
    }

    deinit { _ = try? Process.run(URL(fileURLWithPath: "/bin/umount"), arguments: ["-l", path]).waitUntilExit() }
}
