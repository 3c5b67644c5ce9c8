import CofferFixtures
@testable import CofferKit
import Foundation
import GRDB
import Testing

/// SIGINT and SIGTERM in the middle of the work: the command stops at its next safe point,
/// undoes what it started (temporary files, staging, transactions), releases its locks and
/// exits 130. COFFER_TEST_CHECK_DELAY slows every safe point so the signal lands inside.
@Suite(.serialized) struct SignalTests {
    struct Stopped {
        var status: Int32
        var stderr: String
        /// The condition held and the signal was sent while the command ran.
        var signalled: Bool
    }

    /// Runs coffer, sends `signal` once `ready()` holds (polled), waits for the exit.
    func stop(_ arguments: [String], with signal: Int32, environment: [String: String] = ["COFFER_TEST_CHECK_DELAY": "0.02"],
              when ready: () -> Bool) throws -> Stopped {
        let process = Process()
        process.executableURL = CofferBinary.url
        process.arguments = arguments
        process.environment = ["PATH": "/usr/bin:/bin", "HOME": NSTemporaryDirectory()].merging(environment) { $1 }
        let err = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = err
        try process.run()
        var signalled = false
        let deadline = Date().addingTimeInterval(60)
        while process.isRunning, Date() < deadline {
            if ready() {
                kill(process.processIdentifier, signal)
                signalled = true
                break
            }
            usleep(2000)
        }
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return Stopped(status: process.terminationStatus, stderr: stderr, signalled: signalled)
    }

    func volume(_ scratch: Scratch, jobs: Int, maxFileBytes: Int) throws -> GeneratedVolume {
        var spec = VolumeSpec()
        spec.jobs = jobs
        spec.maxFileBytes = maxFileBytes
        return try VolumeGenerator.generate(spec, dbPath: scratch.child("v/db.sqlite"), mediaRoot: scratch.child("v/media"))
    }

    func contents(_ folder: String) -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] }

    @Test(arguments: [SIGINT, SIGTERM])
    func aStoppedBackupLeavesNoPackAndNoLock(signal: Int32) throws {
        let scratch = try Scratch()
        let v = try volume(scratch, jobs: 60, maxFileBytes: 64 * 1024)
        let repo = scratch.child("repo")
        let flags = ["--db", v.dbPath, "--media-root", v.mediaRoot, "--repo", repo, "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
        let stopped = try stop(["backup"] + flags, with: signal) { contents(repo + "/tmp").contains { $0.contains("packs_") } }
        #expect(stopped.signalled, "the backup ended before its pack was being written")
        #expect(stopped.status == 130, "\(stopped.stderr)")
        #expect(stopped.stderr.contains("error: backup: interrupted by \(signal == SIGINT ? "SIGINT" : "SIGTERM")"), "\(stopped.stderr)")
        #expect(stopped.stderr.contains("hint:"))
        #expect(contents(repo + "/tmp").isEmpty, "temporary files removed: \(contents(repo + "/tmp"))")
        #expect(contents(repo + "/packs").isEmpty && contents(repo + "/snapshots").isEmpty)
        // The lock went with the process: the next run goes straight through.
        let next = try CofferBinary.run(["backup", "--quiet"] + flags)
        #expect(next.status == 0, "\(next.stderr)")
    }

    @Test func aStoppedRestoreLeavesTheTargetsUntouched() throws {
        let scratch = try Scratch()
        let v = try volume(scratch, jobs: 60, maxFileBytes: 64 * 1024)
        let repo = scratch.child("repo")
        let common = ["--repo", repo, "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
        #expect(try CofferBinary.run(["backup", "--quiet", "--db", v.dbPath, "--media-root", v.mediaRoot] + common).status == 0)
        let target = scratch.child("new")
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false)
        let args = ["restore", "--db", target + "/data/db.sqlite", "--media-root", target + "/media"] + common
        let stopped = try stop(args, with: SIGTERM) { contents(target).contains { $0.hasPrefix(".coffer-restore-media.") } }
        #expect(stopped.signalled)
        #expect(stopped.status == 130, "\(stopped.stderr)")
        #expect(contents(target).filter { $0 != "data" }.isEmpty, "staging removed, no media target: \(contents(target))")
        #expect(contents(target + "/data").isEmpty, "\(contents(target + "/data"))")
        #expect(try CofferBinary.run(args + ["--quiet"]).status == 0)
    }

    @Test func aStoppedExportPublishesNothingAndPurgesNothing() throws {
        let scratch = try Scratch()
        let v = try volume(scratch, jobs: 200, maxFileBytes: 1024)
        let out = scratch.child("exports")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        func jobs() throws -> Int {
            let queue = try DatabaseQueue(path: v.dbPath)
            defer { try? queue.close() }
            return try queue.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM jobs") ?? 0 }
        }
        let before = try jobs()
        let args = ["export-jobs", "--older-than", "0d", "--purge", "--out", out, "--db", v.dbPath, "--media-root", v.mediaRoot,
                    "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
        let stopped = try stop(args, with: SIGINT, environment: ["COFFER_TEST_CHECK_DELAY": "0.3"]) {
            contents(out).contains { $0.hasPrefix(".coffer-export-tmp-") }
        }
        #expect(stopped.signalled)
        #expect(stopped.status == 130, "\(stopped.stderr)")
        // Only the lock file stays (flock on it died with the process); no export, no temporary folder.
        #expect(contents(out) == [".coffer-export.lock"], "\(contents(out))")
        #expect(try jobs() == before)
        let again = try CofferBinary.run(args + ["--quiet"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try jobs() < before)
    }

    @Test func aStoppedMigrationRollsBackToAWholeVersion() throws {
        let scratch = try Scratch()
        let v = try volume(scratch, jobs: 50, maxFileBytes: 1024)
        let args = ["migrate", "up", "--no-backup", "--quiet", "--migrations", cliReleaseFolder, "--db", v.dbPath, "--media-root", v.mediaRoot]
        let started = Date()
        // Each migration holds its transaction open 0.5 s: the signal lands inside the second or third.
        let stopped = try stop(args, with: SIGINT, environment: ["COFFER_TEST_MIGRATION_PAUSE": "0.5"]) {
            Date().timeIntervalSince(started) > 1.2
        }
        #expect(stopped.signalled)
        #expect(stopped.status == 130, "\(stopped.stderr)")
        let queue = try DatabaseQueue(path: v.dbPath)
        let (history, integrity) = try queue.read { db in
            (try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid"),
             try String.fetchAll(db, sql: "PRAGMA integrity_check"))
        }
        try queue.close()
        let all = ["0001_seed", "0002_media_fts", "0003_jobs_paused", "0004_media_codec"]
        #expect(history.count < all.count && Array(all.prefix(history.count)) == history, "\(history)")
        #expect(integrity == ["ok"])
        #expect(contents(PathText.parent(v.dbPath)).allSatisfy { !$0.contains(".coffer-") }, "\(contents(PathText.parent(v.dbPath)))")
        // The lock on the database went with the process; a rerun finishes.
        #expect(try CofferBinary.run(args).status == 0)
    }

    /// `migrate plan` works on a full copy of the database beside it: stopped, it removes it.
    @Test func aStoppedPlanRemovesItsCopy() throws {
        let scratch = try Scratch()
        let v = try volume(scratch, jobs: 50, maxFileBytes: 1024)
        let folder = PathText.parent(v.dbPath)
        let args = ["migrate", "plan", "--quiet", "--migrations", cliReleaseFolder, "--db", v.dbPath, "--media-root", v.mediaRoot]
        let stopped = try stop(args, with: SIGINT, environment: ["COFFER_TEST_MIGRATION_PAUSE": "0.5"]) {
            self.contents(folder).contains { $0.contains(".coffer-plan-") }
        }
        #expect(stopped.signalled)
        #expect(stopped.status == 130, "\(stopped.stderr)")
        #expect(contents(folder).allSatisfy { !$0.contains(".coffer-") }, "\(contents(folder))")
    }

    @Test func aStoppedDrillRemovesItsScratch() throws {
        let scratch = try Scratch()
        let v = try volume(scratch, jobs: 60, maxFileBytes: 64 * 1024)
        let flags = ["--db", v.dbPath, "--media-root", v.mediaRoot, "--repo", scratch.child("repo"),
                     "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
        #expect(try CofferBinary.run(["backup", "--quiet"] + flags).status == 0)
        let parent = PathText.parent(v.mediaRoot)
        let stopped = try stop(["drill"] + flags, with: SIGTERM) { contents(parent).contains { $0.hasPrefix(".coffer-drill-") } }
        #expect(stopped.signalled)
        #expect(stopped.status == 130, "\(stopped.stderr)")
        #expect(!contents(parent).contains { $0.hasPrefix(".coffer-drill-") }, "\(contents(parent))")
    }
}
