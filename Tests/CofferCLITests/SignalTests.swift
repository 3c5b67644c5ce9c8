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
        /// From the signal to the exit.
        var secondsToExit: Double = 0
    }

    /// Runs coffer, sends `signal` once `ready()` holds (polled), waits for the exit.
    func stop(_ arguments: [String], with signal: Int32, environment: [String: String] = ["COFFER_TEST_CHECK_DELAY": "0.02"],
              when ready: () -> Bool) throws -> Stopped {
        try stop(arguments, with: signal, environment: environment) { _ in ready() }
    }

    /// The same, `ready` given what the command has written to stderr so far (its `--verbose`
    /// log says which part of the work it is in).
    func stop(_ arguments: [String], with signal: Int32, environment: [String: String] = ["COFFER_TEST_CHECK_DELAY": "0.02"],
              whenLogged ready: (String) -> Bool) throws -> Stopped {
        let folder = try Scratch()
        let log = folder.child("stderr")
        #expect(FileManager.default.createFile(atPath: log, contents: nil))
        let process = Process()
        process.executableURL = CofferBinary.url
        process.arguments = arguments
        process.environment = CofferBinary.cleanEnvironment(environment)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        func logged() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        try process.run()
        var signalled = false
        var sent = Date()
        let deadline = Date().addingTimeInterval(60)
        while process.isRunning, Date() < deadline {
            if ready(logged()) {
                sent = Date()
                kill(process.processIdentifier, signal)
                signalled = true
                break
            }
            usleep(2000)
        }
        process.waitUntilExit()
        let seconds = Date().timeIntervalSince(sent)
        return withExtendedLifetime(folder) {
            Stopped(status: process.terminationStatus, stderr: logged(), signalled: signalled, secondsToExit: seconds)
        }
    }

    /// How long the part of the work between two `--verbose` log lines took, in a run of `arguments`.
    func seconds(from first: String, to last: String, running arguments: [String]) throws -> Double {
        let run = try CofferBinary.run(arguments)
        #expect(run.status == 0, "\(run.stderr)")
        func at(_ message: String) -> Double {
            let line = run.stderr.split(separator: "\n").first { $0.hasSuffix("] " + message) } ?? ""
            let value = line.split(separator: " ").first { $0.hasPrefix("seconds=") }?.dropFirst(8)
            return value.flatMap { Double($0) } ?? .nan
        }
        return at(last) - at(first)
    }

    /// Adds `events` rows to the volume's job_events: a database whose integrity_check and
    /// reconciliation take a while (600,000 events: 0.5 s to check here).
    func grow(_ dbPath: String, events: Int) throws {
        let queue = try DatabaseQueue(path: dbPath)
        defer { try? queue.close() }
        try queue.write { db in
            try db.execute(sql: """
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
                INSERT INTO job_events (job_id, ts, event, payload)
                SELECT (SELECT id FROM jobs WHERE rowid >= 1 + i % 50 ORDER BY rowid LIMIT 1), datetime('now', printf('-%d seconds', i)),
                       'progress', printf('{"step":%d,"note":"%s"}', i, hex(randomblob(16)))
                FROM n
                """, arguments: [events])
        }
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

    /// A stop that lands in the database copy's integrity_check ends the check there (and the
    /// compression and reconciliation beside it), instead of after it: on a large database the
    /// check takes seconds per gigabyte, and the operator's Ctrl-C would wait for it.
    @Test func aStoppedBackupDoesNotFinishCheckingTheDatabase() throws {
        let scratch = try Scratch()
        let v = try volume(scratch, jobs: 50, maxFileBytes: 1024)
        try grow(v.dbPath, events: 600_000)
        let repo = scratch.child("repo")
        let flags = ["backup", "--full", "--verbose", "--db", v.dbPath, "--media-root", v.mediaRoot, "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
        // How long the check takes when nobody stops it (into a repository of its own).
        let check = try seconds(from: "database copied", to: "database copy checked", running: flags + ["--repo", scratch.child("other")])
        let stopped = try stop(flags + ["--repo", repo], with: SIGINT, environment: [:]) { $0.contains("database copied") }
        #expect(stopped.signalled, "the backup ended before its database was copied")
        #expect(stopped.secondsToExit < check / 2, "exit \(stopped.secondsToExit) s after the signal; the check takes \(check) s")
        #expect(stopped.status == 130, "\(stopped.stderr)")
        #expect(stopped.stderr.contains("error: backup: interrupted by SIGINT"), "\(stopped.stderr)")
        #expect(!stopped.stderr.contains("database copy checked"), "the check ran to its end: \(stopped.stderr)")
        #expect(!stopped.stderr.contains("database copy compressed"), "the compression ran to its end: \(stopped.stderr)")
        #expect(!stopped.stderr.contains("reconciliation done"), "the reconciliation ran to its end: \(stopped.stderr)")
        #expect(contents(repo + "/tmp").isEmpty && contents(repo + "/packs").isEmpty && contents(repo + "/snapshots").isEmpty)
        #expect(contents(PathText.parent(v.dbPath)).allSatisfy { !$0.contains(".coffer-") }, "\(contents(PathText.parent(v.dbPath)))")
    }

    /// The same in a restore: the staged database's check ends where the stop lands.
    @Test func aStoppedRestoreDoesNotFinishCheckingTheDatabase() throws {
        let scratch = try Scratch()
        let v = try volume(scratch, jobs: 50, maxFileBytes: 1024)
        try grow(v.dbPath, events: 600_000)
        let repo = scratch.child("repo")
        let common = ["--repo", repo, "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
        #expect(try CofferBinary.run(["backup", "--quiet", "--db", v.dbPath, "--media-root", v.mediaRoot] + common).status == 0)
        let other = scratch.child("other")
        let check = try seconds(from: "database extracted, paths rewritten", to: "database extracted and checked",
                                running: ["restore", "--verbose", "--db", other + "/db.sqlite", "--media-root", other + "/media"] + common)
        let target = scratch.child("new")
        let args = ["restore", "--verbose", "--db", target + "/db.sqlite", "--media-root", target + "/media"] + common
        let stopped = try stop(args, with: SIGINT, environment: [:]) { $0.contains("paths rewritten") }
        #expect(stopped.signalled, "the restore ended before its database was extracted")
        #expect(stopped.secondsToExit < check / 2, "exit \(stopped.secondsToExit) s after the signal; the check takes \(check) s")
        #expect(stopped.status == 130, "\(stopped.stderr)")
        #expect(stopped.stderr.contains("error: restore: interrupted by SIGINT"), "\(stopped.stderr)")
        #expect(!stopped.stderr.contains("database extracted and checked"), "the check ran to its end: \(stopped.stderr)")
        #expect(FileManager.default.fileExists(atPath: target) == false, "nothing left at the target: \(contents(target))")
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
