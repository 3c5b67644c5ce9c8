import CofferFixtures
@testable import CofferKit
import Foundation
import GRDB
import Testing

/// The realistic release in fixtures/ (a rebuild of jobs, then a column and an index).
let cliReleaseFolder = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("fixtures/migrations/release-2.1").path

@Suite struct MigrateCLITests {
    struct Volume {
        let scratch: Scratch
        let generated: GeneratedVolume
        var flags: [String] {
            ["--db", generated.dbPath, "--media-root", generated.mediaRoot, "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
        }
    }

    func volume(jobs: Int = 40) throws -> Volume {
        let scratch = try Scratch()
        var spec = VolumeSpec()
        spec.jobs = jobs
        spec.maxFileBytes = 2048
        let generated = try VolumeGenerator.generate(spec, dbPath: scratch.child("v/db.sqlite"), mediaRoot: scratch.child("v/media"))
        return Volume(scratch: scratch, generated: generated)
    }

    func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test func statusPlanUpStatus() throws {
        let v = try volume()
        let release = ["--migrations", cliReleaseFolder]
        let status = try CofferBinary.run(["migrate", "status", "--json"] + release + v.flags)
        #expect(status.status == 1, "\(status.stderr)")
        let pending = try json(status.stdout)["pending"] as? [[String: Any]]
        #expect(pending?.compactMap { $0["identifier"] as? String } == ["0002_media_fts", "0003_jobs_paused", "0004_media_codec"])

        let plan = try CofferBinary.run(["migrate", "plan", "--json"] + release + v.flags)
        #expect(plan.status == 0, "\(plan.stdout)\(plan.stderr)")
        let migrations = try json(plan.stdout)["migrations"] as? [[String: Any]]
        #expect(migrations?.count == 3)
        #expect(migrations?.allSatisfy { $0["integrity_check"] as? String == "ok" } == true)

        let text = try CofferBinary.run(["migrate", "plan"] + release + v.flags)
        #expect(text.stdout.contains("changed table jobs"))
        #expect(text.stdout.contains("safe: `coffer migrate up`"))

        let before = try Data(contentsOf: URL(fileURLWithPath: v.generated.dbPath))
        let dry = try CofferBinary.run(["migrate", "up", "--dry-run"] + release + v.flags)
        #expect(dry.status == 0 && dry.stdout.contains("dry run on a copy"), "\(dry.stdout)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: v.generated.dbPath)) == before)

        let up = try CofferBinary.run(["migrate", "up"] + release + v.flags)
        #expect(up.status == 0, "\(up.stdout)\(up.stderr)")
        #expect(up.stdout.contains("the database is at version 4"))
        // The copy taken first, beside the database.
        let beside = try FileManager.default.contentsOfDirectory(atPath: v.scratch.child("v"))
        #expect(beside.filter { $0.hasPrefix("db.sqlite.pre-migrate-v1-") }.count == 1, "\(beside)")
        #expect(beside.allSatisfy { !$0.contains(".coffer-") }, "\(beside)")

        #expect(try CofferBinary.run(["migrate", "status", "--quiet"] + release + v.flags).status == 0)
        // Without the release folder, Coffer does not know what was applied: a problem, named.
        let unknown = try CofferBinary.run(["migrate", "status"] + v.flags)
        #expect(unknown.status == 1)
        #expect(unknown.stdout.contains("pass that release's --migrations folder"))
        #expect(try CofferBinary.run(["verify", "--quiet"] + v.flags).status == 0)
    }

    @Test func upSnapshotsIntoTheRepositoryFirst() throws {
        let v = try volume()
        let repo = v.scratch.child("repo")
        let up = try CofferBinary.run(["migrate", "up", "--json", "--repo", repo] + v.flags)
        #expect(up.status == 0, "\(up.stderr)")
        let snapshot = try #require(try json(up.stdout)["backup_snapshot"] as? String)
        let snapshots = try CofferBinary.run(["snapshots", "--json", "--repo", repo] + v.flags)
        #expect(snapshots.stdout.contains(snapshot))
        // The snapshot holds the database as it was: the pipeline's schema.
        let restored = try CofferBinary.run(["restore", "--snapshot", snapshot, "--only", "db", "--repo", repo,
                                             "--db", v.scratch.child("old/db.sqlite"), "--media-root", v.scratch.child("old/media")])
        // 1: the media were not restored, and the check after the restore says so.
        #expect(restored.status == 1, "\(restored.stderr)")
        let old = try DatabaseQueue(path: v.scratch.child("old/db.sqlite"))
        defer { try? old.close() }
        #expect(try old.read { try $0.tableExists("media_fts") } == false)
        #expect(try CofferBinary.run(["migrate", "up", "--no-backup", "--repo", repo] + v.flags).status == 64)
    }

    @Test func aFailureExitsTwoAndSaysHowToGoBack() throws {
        let v = try volume()
        let release = v.scratch.child("release")
        try FileManager.default.createDirectory(atPath: release, withIntermediateDirectories: true)
        try "CREATE TABLE ok_table (x);".write(toFile: release + "/0003_ok.sql", atomically: false, encoding: .utf8)
        try "UPDATE jobs SET retries = 1;\nSELECT * FROM missing_table;".write(toFile: release + "/0004_broken.sql", atomically: false, encoding: .utf8)
        let up = try CofferBinary.run(["migrate", "up", "--migrations", release] + v.flags)
        #expect(up.status == 2)
        #expect(up.stdout.contains("0004_broken [release]: FAILED (rolled back)"), "\(up.stdout)")
        #expect(up.stdout.contains("statement: SELECT * FROM missing_table"))
        #expect(up.stdout.contains("the database is at version 3"))
        #expect(up.stdout.contains("to go back to before the migration: stop the pipeline"))

        let plan = try CofferBinary.run(["migrate", "plan", "--migrations", release] + v.flags)
        #expect(plan.status == 1)
        #expect(plan.stdout.contains("no such table: missing_table"))
    }

    @Test func usageErrorsAndTheLock() throws {
        let v = try volume(jobs: 5)
        let bad = v.scratch.child("bad")
        try FileManager.default.createDirectory(atPath: bad, withIntermediateDirectories: true)
        try "SELECT 1;".write(toFile: bad + "/add column.sql", atomically: false, encoding: .utf8)
        let usage = try CofferBinary.run(["migrate", "status", "--migrations", bad] + v.flags)
        #expect(usage.status == 64)
        #expect(usage.stderr.contains("add column.sql"))
        #expect(usage.stderr.contains("hint: rename it"))

        // Another `migrate up` holds the database.
        let fd = open(v.generated.dbPath, O_RDONLY)
        #expect(flock(fd, LOCK_EX) == 0)
        let locked = try CofferBinary.run(["migrate", "up", "--no-backup"] + v.flags)
        close(fd)
        #expect(locked.status == 3)
        #expect(locked.stderr.contains("another `coffer migrate up`"))
        #expect(try CofferBinary.run(["migrate", "up", "--no-backup", "--quiet"] + v.flags).status == 0)
    }
}
