import CofferFixtures
@testable import CofferKit
import Foundation
import GRDB
import Testing

/// Real `kill -9` at random moments, real full disks: nothing half-written may be seen.
@Suite(.serialized) struct CrashTests {
    struct Volume {
        let scratch: Scratch
        let generated: GeneratedVolume
        var repo: String { scratch.child("repo") }
        var flags: [String] {
            ["--db", generated.dbPath, "--media-root", generated.mediaRoot, "--repo", repo,
             "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
        }
    }

    func volume(jobs: Int, maxFileBytes: Int, videoSizes: [Int] = [], in base: String? = nil) throws -> Volume {
        let scratch = try Scratch()
        var spec = VolumeSpec()
        spec.jobs = jobs
        spec.maxFileBytes = maxFileBytes
        spec.videoSizes = videoSizes
        let root = base ?? scratch.path
        let generated = try VolumeGenerator.generate(spec, dbPath: root + "/v/db.sqlite", mediaRoot: root + "/v/media")
        return Volume(scratch: scratch, generated: generated)
    }

    /// Starts coffer, kills it with SIGKILL after `delay` seconds (if it still runs).
    func killed(_ arguments: [String], after delay: Double, environment: [String: String] = [:]) throws -> Bool {
        let process = Process()
        process.executableURL = CofferBinary.url
        process.arguments = arguments
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        Thread.sleep(forTimeInterval: delay)
        let wasRunning = process.isRunning
        if wasRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return wasRunning && process.terminationReason == .uncaughtSignal
    }

    func verifyClean(_ repo: String) throws {
        var verifier = RepositoryVerifier(repository: repo)
        verifier.readData = true
        let report = try verifier.run()
        #expect(report.findings.isEmpty, "\(report.findings)")
    }

    @Test func backupKilledAtRandomMomentsLeavesEarlierSnapshotsIntact() throws {
        let v = try volume(jobs: 300, maxFileBytes: 256 * 1024, videoSizes: VolumeSpec.testVideoSizes)
        let started = Date()
        #expect(try CofferBinary.run(["backup", "--quiet"] + v.flags).status == 0)
        let duration = Date().timeIntervalSince(started)
        var kills = 0
        // The first run's time, taken while other tests may load the machine, can be far longer
        // than the next runs: a run that ends before its kill halves the window for the next.
        var window = duration
        var before = try Repository.open(v.repo).snapshots().snapshots.map(\.id)
        #expect(before.count == 1)
        for round in 0..<6 {
            let delay = Double.random(in: 0.05...max(0.1, window)) * (round % 2 == 0 ? 1 : 0.5)
            if try killed(["backup", "--full"] + v.flags, after: delay) { kills += 1 } else { window /= 2 }
            // Every snapshot listed is whole: its pack exists and every byte matches.
            try verifyClean(v.repo)
            let listed = try Repository.open(v.repo).snapshots()
            #expect(listed.damaged.isEmpty)
            // None listed before the kill is gone; at most the killed run's own was added.
            let after = listed.snapshots.map(\.id)
            #expect(Set(before).isSubset(of: Set(after)), "round \(round): \(before) before, \(after) after")
            #expect(after.count - before.count <= 1, "round \(round): \(before) before, \(after) after")
            before = after
        }
        #expect(kills > 0, "no run was killed while working: the volume is too small for this machine")
        // The lock died with its holders, and the next run sweeps what they left in tmp/.
        let next = try CofferBinary.run(["backup", "--quiet"] + v.flags)
        #expect(next.status == 0, "\(next.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: v.repo + "/tmp").isEmpty)
        try verifyClean(v.repo)
    }

    @Test func restoreKilledAtRandomMomentsLeavesTargetsWholeOrAbsent() throws {
        let v = try volume(jobs: 300, maxFileBytes: 256 * 1024, videoSizes: VolumeSpec.testVideoSizes)
        #expect(try CofferBinary.run(["backup", "--quiet"] + v.flags).status == 0)
        // How long a restore takes, from the second of two (the pack left the page cache as
        // the backup wrote it: the first reads it from the disk, the killed runs from memory).
        var duration = Double.infinity
        for name in ["probe-cold", "probe"] {
            let started = Date()
            let probe = try CofferBinary.run(["restore", "--quiet", "--repo", v.repo, "--db", v.scratch.child("\(name)/db.sqlite"),
                                              "--media-root", v.scratch.child("\(name)/media"), "--min-free-space-gb", "0", "--alert-free-space-gb", "0"])
            #expect(probe.status == 0, "\(probe.stderr)")
            duration = min(duration, Date().timeIntervalSince(started))
        }
        let expected = try TreeSnapshot(v.scratch.child("probe/media"))
        let expectedJobs = try tableRows(v.scratch.child("probe/db.sqlite"), "jobs")

        var kills = 0
        for round in 0..<5 {
            let db = v.scratch.child("r\(round)/db.sqlite"), media = v.scratch.child("r\(round)/media")
            let args = ["restore", "--quiet", "--repo", v.repo, "--db", db, "--media-root", media,
                        "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
            // A run that ended before its signal halves the window for the next.
            if try killed(args, after: Double.random(in: 0.02...max(0.05, duration))) { kills += 1 } else { duration /= 2 }
            let landed = (media: FileManager.default.fileExists(atPath: media), db: FileManager.default.fileExists(atPath: db))
            if landed.media {
                #expect(try TreeSnapshot(media) == expected, "round \(round): a partial media tree is visible")
            }
            if landed.db {
                #expect(try tableRows(db, "jobs") == expectedJobs, "round \(round): a partial database is visible")
            }
            // Running again finishes the work: as it was first typed when nothing landed (what
            // the killed run staged is swept, not in the way), with --force over what did.
            let again = try CofferBinary.run(args + (landed.media || landed.db ? ["--force"] : []))
            #expect(again.status == 0, "round \(round): \(again.stderr)\(again.stdout)")
            #expect(try TreeSnapshot(media) == expected)
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: v.scratch.child("r\(round)"))
            #expect(leftovers.sorted() == ["db.sqlite", "media"], "\(leftovers)")
        }
        #expect(kills > 0, "no restore was killed while it ran")
    }

    /// A restore killed between its two renames (its media in place, its database not yet):
    /// the same command run again puts the database in place and checks the result, with no
    /// `--force` needed and nothing left over. A restore of another snapshot into those
    /// targets is refused meanwhile, naming the one to finish, and changes nothing.
    @Test func aRestoreKilledBetweenItsTwoRenamesIsFinishedByTheNextRun() throws {
        let v = try volume(jobs: 40, maxFileBytes: 4096)
        #expect(try CofferBinary.run(["backup", "--quiet"] + v.flags).status == 0)
        let first = try #require(try FileManager.default.contentsOfDirectory(atPath: v.repo + "/snapshots").first?.dropLast(".jsonl".count))
        #expect(try CofferBinary.run(["backup", "--quiet", "--full"] + v.flags).status == 0)
        let target = v.scratch.child("new")
        let db = target + "/data/db.sqlite", media = target + "/media"
        let targets = ["--repo", v.repo, "--db", db, "--media-root", media, "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
        let args = ["restore", "--snapshot", String(first)] + targets
        let process = Process()
        process.executableURL = CofferBinary.url
        process.arguments = args
        process.environment = ProcessInfo.processInfo.environment.merging(["COFFER_TEST_PAUSE_BETWEEN_RENAMES": "30"]) { $1 }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: media), process.isRunning, Date() < deadline { usleep(2000) }
        usleep(50_000)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal, "the restore ended before it was killed")
        #expect(FileManager.default.fileExists(atPath: media) && !FileManager.default.fileExists(atPath: db), "\((try? FileManager.default.contentsOfDirectory(atPath: target + "/data")) ?? [])")

        let before = (data: try FileManager.default.contentsOfDirectory(atPath: target + "/data").sorted(), media: try TreeSnapshot(media))
        let other = try CofferBinary.run(["restore"] + targets)
        #expect(other.status == 2)
        #expect(other.stderr.contains("a restore of snapshot \(first) was stopped while it put these targets in place"), "\(other.stderr)")
        #expect(other.stderr.contains("coffer restore --snapshot \(first)"), "\(other.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: target + "/data").sorted() == before.data)
        #expect(try TreeSnapshot(media) == before.media)

        let again = try CofferBinary.run(args)
        #expect(again.status == 0, "\(again.stderr)\(again.stdout)")
        #expect(again.stderr.contains("finished the restore of snapshot"), "\(again.stderr)")
        #expect(again.stdout.contains("no findings"), "\(again.stdout)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: target + "/data") == ["db.sqlite"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: target).sorted() == ["data", "media"])
        let verify = try CofferBinary.run(["verify", "--full", "--db", db, "--media-root", media, "--min-free-space-gb", "0", "--alert-free-space-gb", "0"])
        #expect(verify.status == 0, "\(verify.stdout)")
    }

    /// Every job and event id in the database, and in the complete exports under `out`.
    func whereRowsAre(_ v: Volume, out: String) throws -> (database: Set<String>, exported: Set<String>) {
        let database = try DatabaseQueue(path: v.generated.dbPath).read { db in
            Set(try String.fetchAll(db, sql: "SELECT 'job:' || id FROM jobs UNION ALL SELECT 'event:' || id FROM job_events"))
        }
        var exported = Set<String>()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: out)) ?? [] where name.hasPrefix("jobs-") {
            let folder = out + "/" + name
            let manifest = try JSONDecoder().decode(ExportManifest.self, from: Data(contentsOf: URL(fileURLWithPath: folder + "/manifest.json")))
            try JobExporter.readBack(folder, manifest: manifest) // whole, or this throws
            for (file, prefix) in [("jobs.csv", "job:"), ("job_events.csv", "event:")] {
                let fd = try RawIO.openForReading(folder + "/" + file)
                defer { close(fd) }
                let reader = CSVReader(fd: fd, path: file)
                _ = try reader.next()
                while let row = try reader.next() {
                    if case .text(let id) = row[0] { exported.insert(prefix + String(decoding: id, as: UTF8.self)) }
                }
            }
        }
        return (database, exported)
    }

    @Test func exportPurgeKilledAtRandomMomentsLosesNothing() throws {
        let v = try volume(jobs: 3000, maxFileBytes: 16)
        try DatabaseQueue(path: v.generated.dbPath).write { db in
            try db.execute(sql: "UPDATE jobs SET created_at = datetime('now', '-90 days') WHERE status IN ('COMPLETE', 'FAILED', 'CANCELED')")
        }
        let everything = try whereRowsAre(v, out: v.scratch.child("none")).database
        let out = v.scratch.child("exports")
        let arguments = ["export-jobs", "--quiet", "--older-than", "30d", "--out", out, "--purge", "--db", v.generated.dbPath,
                         "--media-root", v.generated.mediaRoot]
        // How long one run takes, on a copy of the database.
        let probeDB = v.scratch.child("probe.sqlite")
        try FileManager.default.copyItem(atPath: v.generated.dbPath, toPath: probeDB)
        let started = Date()
        let probe = try CofferBinary.run(["export-jobs", "--quiet", "--out", v.scratch.child("probe-out"), "--purge", "--db", probeDB,
                                          "--media-root", v.generated.mediaRoot])
        #expect(probe.status == 0, "\(probe.stderr)")
        let duration = Date().timeIntervalSince(started)
        var kills = 0
        // The probe's time, taken while other tests may load the machine, can be far longer
        // than a run's: a run that ends before its kill halves the window for the next.
        var window = max(0.02, duration)
        for _ in 0..<6 {
            if try killed(arguments, after: Double.random(in: 0.001...window)) { kills += 1 } else { window = max(0.01, window / 2) }
            let (database, exported) = try whereRowsAre(v, out: out)
            #expect(everything.subtracting(database).subtracting(exported).isEmpty, "rows lost after a kill")
            #expect(database.isSubset(of: everything))
        }
        #expect(kills > 0, "no run was killed while working: the volume is too small for this machine")
        // Running again finishes the work: no old finished job is left, nothing is lost, no temp folder stays.
        let final = try CofferBinary.run(arguments)
        #expect(final.status == 0, "\(final.stderr)")
        let (database, exported) = try whereRowsAre(v, out: out)
        #expect(everything.subtracting(database).subtracting(exported).isEmpty)
        let leftovers = try DatabaseQueue(path: v.generated.dbPath).read { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM jobs WHERE status IN ('COMPLETE', 'FAILED', 'CANCELED')")
        }
        #expect(leftovers == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: out).allSatisfy { !$0.hasPrefix(".coffer-export-tmp-") })
    }

    /// import-jobs loads an export in one transaction: killed at any moment, the database holds
    /// all of the export's rows or none of them, and is sound; the next run imports it whole.
    @Test func importKilledAtRandomMomentsImportsAllOrNothing() throws {
        let v = try volume(jobs: 6000, maxFileBytes: 16)
        let db = v.generated.dbPath
        try DatabaseQueue(path: db).write { db in
            try db.execute(sql: "UPDATE jobs SET created_at = datetime('now', '-90 days') WHERE status IN ('COMPLETE', 'FAILED', 'CANCELED')")
        }
        let everything = try whereRowsAre(v, out: v.scratch.child("none")).database
        let out = v.scratch.child("exports")
        let export = try CofferBinary.run(["export-jobs", "--quiet", "--older-than", "30d", "--out", out, "--purge", "--db", db,
                                           "--media-root", v.generated.mediaRoot])
        #expect(export.status == 0, "\(export.stderr)")
        let purged = try whereRowsAre(v, out: v.scratch.child("none")).database
        #expect(purged.count < everything.count / 2)
        let folder = out + "/" + (try #require(try FileManager.default.contentsOfDirectory(atPath: out).first { $0.hasPrefix("jobs-") }))
        // The purged database, whole in one file, to start each round from.
        let queue = try DatabaseQueue(path: db)
        try queue.writeWithoutTransaction { _ = try $0.checkpoint(.truncate) }
        try queue.close()
        let baseline = v.scratch.child("purged.sqlite")
        try FileManager.default.copyItem(atPath: db, toPath: baseline)
        func startOver() throws {
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: db + suffix) }
            try FileManager.default.copyItem(atPath: baseline, toPath: db)
        }
        let arguments = ["import-jobs", "--quiet", folder, "--db", db, "--media-root", v.generated.mediaRoot]
        let started = Date()
        let probe = try CofferBinary.run(arguments)
        #expect(probe.status == 0, "\(probe.stderr)")
        #expect(try whereRowsAre(v, out: v.scratch.child("none")).database == everything)
        var window = max(0.02, Date().timeIntervalSince(started))
        var kills = 0
        for _ in 0..<8 {
            try startOver()
            if try killed(arguments, after: Double.random(in: 0.001...window)) { kills += 1 } else { window = max(0.01, window / 2) }
            let rows = try whereRowsAre(v, out: v.scratch.child("none")).database
            #expect(rows == purged || rows == everything, "a killed import left \(rows.count) rows: neither \(purged.count) nor \(everything.count)")
            let check = try DatabaseQueue(path: db).read { try String.fetchAll($0, sql: "PRAGMA integrity_check") }
            #expect(check == ["ok"])
        }
        #expect(kills > 0, "no import was killed while working: the volume is too small for this machine")
        // Whatever the last kill left, running again finishes the import, once.
        let final = try CofferBinary.run(arguments)
        #expect(final.status == 0, "\(final.stderr)")
        #expect(try whereRowsAre(v, out: v.scratch.child("none")).database == everything)
    }

    /// cleanup killed at random moments: every temp directory is whole under its own name or
    /// set aside whole for removal (never half-emptied, which would also reset its age); the
    /// next run removes what was set aside and finishes the work.
    @Test func cleanupKilledAtRandomMomentsLeavesNoDirectoryHalfEmptied() throws {
        let v = try volume(jobs: 200, maxFileBytes: 16)
        let tmp = v.generated.mediaRoot + "/tmp"
        let old = Date().timeIntervalSince1970 - 2 * 86400
        // Directories of jobs the database does not know, unchanged for two days: due. Two
        // changed an hour ago: kept.
        for index in 0..<82 {
            let dir = tmp + String(format: "/01900000-0000-7000-8000-%012d", index)
            try FileManager.default.createDirectory(atPath: dir + "/parts", withIntermediateDirectories: true)
            for part in 0..<150 {
                let path = dir + "/parts/\(part).wav"
                try Data(repeating: UInt8(part & 0xFF), count: 64).write(to: URL(fileURLWithPath: path))
                FixtureFiles.setModified(Array(path.utf8), index < 80 ? old : old + 86400 + 82800)
            }
            for path in [dir + "/parts", dir] { FixtureFiles.setModified(Array(path.utf8), index < 80 ? old : old + 86400 + 82800) }
        }
        var before: [String: TreeSnapshot] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: tmp) { before[name] = try TreeSnapshot(tmp + "/" + name) }
        let arguments = ["cleanup", "--quiet", "--db", v.generated.dbPath, "--media-root", v.generated.mediaRoot]
        let plan = try CofferBinary.run(["cleanup", "--json", "--dry-run", "--db", v.generated.dbPath, "--media-root", v.generated.mediaRoot])
        let due = try JSONDecoder().decode(CleanupReport.self, from: Data(plan.stdout.utf8)).removed.map { ($0.path as NSString).lastPathComponent }
        #expect(due.count >= 80)
        // How long one run takes, on a copy of the temp root.
        let copy = v.scratch.child("copy")
        try FileManager.default.createDirectory(atPath: copy + "/media/library", withIntermediateDirectories: true)
        let cp = try Process.run(URL(fileURLWithPath: "/bin/cp"), arguments: ["-a", tmp, copy + "/media/tmp"])
        cp.waitUntilExit()
        #expect(cp.terminationStatus == 0)
        let started = Date()
        #expect(try CofferBinary.run(["cleanup", "--quiet", "--db", v.generated.dbPath, "--media-root", copy + "/media"]).status == 0)
        var window = max(0.02, Date().timeIntervalSince(started) / 2)
        var kills = 0, setAside = 0, midway = 0
        let dueSet = Set(due)
        for _ in 0..<6 {
            if try killed(arguments, after: Double.random(in: 0.001...window)) { kills += 1 } else { window = max(0.01, window / 2) }
            let names = try FileManager.default.contentsOfDirectory(atPath: tmp)
            for name in names {
                if name.hasPrefix(TempCleanup.removingPrefix) { setAside += 1; continue }
                let original = try #require(before[name], "\(name) appeared")
                #expect(try TreeSnapshot(tmp + "/" + name) == original, "\(name) was half-emptied by a killed cleanup")
            }
            // Killed while removing: some due directories gone, some not, or one set aside.
            let dueLeft = names.filter(dueSet.contains).count
            if names.contains(where: { $0.hasPrefix(TempCleanup.removingPrefix) }) || (dueLeft > 0 && dueLeft < dueSet.count) { midway += 1 }
        }
        #expect(kills > 0 && midway > 0, "no cleanup was killed while removing (\(kills) kills): the volume is too small for this machine")
        let final = try CofferBinary.run(["cleanup", "--json", "--db", v.generated.dbPath, "--media-root", v.generated.mediaRoot])
        #expect(final.status == 0, "\(final.stderr)")
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: tmp))
        #expect(left == Set(before.keys).subtracting(due), "set aside: \(setAside)")
        for name in left { #expect(try TreeSnapshot(tmp + "/" + name) == before[name]) }
    }

    /// Grows a few files of the library, so that the next backup adds a pack.
    func touchSome(_ v: Volume, round: Int) throws {
        var index = 0
        try DirectoryWalker(root: v.generated.mediaRoot + "/library").walk { entry in
            guard entry.kind == .regular else { return }
            index += 1
            if index % 3 == round % 3 {
                try FixtureFiles.append(PathBytes(v.generated.mediaRoot.utf8).appendingComponent(PathBytes("library/".utf8) + entry.relativePath), [UInt8(round & 0xFF)])
            }
        }
    }

    @Test func pruneKilledAtRandomMomentsLeavesASoundRepository() throws {
        let v = try volume(jobs: 200, maxFileBytes: 256 * 1024, videoSizes: VolumeSpec.testVideoSizes)
        let prune = ["prune", "--quiet", "--keep-last", "2"] + v.flags
        for round in 0..<3 {
            try touchSome(v, round: round)
            #expect(try CofferBinary.run(["backup", "--quiet", "--full"] + v.flags).status == 0)
        }
        let started = Date()
        let probe = try CofferBinary.run(prune)
        #expect(probe.status == 0, "\(probe.stderr)")
        let duration = Date().timeIntervalSince(started)
        var kills = 0
        for round in 3..<9 {
            try touchSome(v, round: round)
            #expect(try CofferBinary.run(["backup", "--quiet"] + v.flags).status == 0)
            if try killed(prune, after: Double.random(in: 0.01...max(0.05, duration))) { kills += 1 }
            // Whatever moment it died at: every listed snapshot is whole, every byte checks out.
            try verifyClean(v.repo)
            #expect(try Repository.open(v.repo).snapshots().damaged.isEmpty)
        }
        #expect(kills > 0, "no prune was killed while working: the volume is too small for this machine")
        // The next prune finishes the work: two snapshots, no pack they do not need.
        let final = try CofferBinary.run(prune)
        #expect(final.status == 0, "\(final.stderr)")
        let repository = try Repository.open(v.repo)
        let kept = try repository.snapshots().snapshots
        #expect(kept.count == 2)
        var needed = Set<String>()
        for snap in kept {
            needed.insert(snap.summary.database.pack)
            try repository.reader(for: snap).files { needed.insert($0.pack) }
        }
        #expect(Set(try repository.storage.list("packs")) == needed)
        try verifyClean(v.repo)
        let restored = try CofferBinary.run(["restore", "--quiet", "--repo", v.repo, "--db", v.scratch.child("r/db.sqlite"),
                                             "--media-root", v.scratch.child("r/media"), "--min-free-space-gb", "0", "--alert-free-space-gb", "0"])
        // 1: its check reports the grown videos whose rows still hold the old size; that is the volume, not the restore.
        #expect(restored.status == 0 || restored.status == 1, "\(restored.stderr)")
        #expect(try TreeSnapshot(v.scratch.child("r/media/library")) == TreeSnapshot(v.generated.mediaRoot + "/library"))
    }

    @Test func migrateUpKilledAtRandomMomentsLeavesAWholeVersion() throws {
        let v = try volume(jobs: 100, maxFileBytes: 1024)
        // Padded so every migration takes a while: 20,000 more jobs, media rows and events.
        let queue = try DatabaseQueue(path: v.generated.dbPath, configuration: DatabaseAccess.configuration(readOnly: false))
        try queue.write { db in
            try db.execute(sql: """
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
                INSERT INTO jobs (id, url, status, created_at) SELECT 'pad-' || i, 'https://example.com/v/' || i, 'COMPLETE', '2026-01-01 00:00:00' FROM n
                """)
            try db.execute(sql: "INSERT INTO media (job_id, source_title, source_uploader) SELECT id, 'Padded ' || id || ' café 🎉', 'Jürgen' FROM jobs WHERE id LIKE 'pad-%'")
            try db.execute(sql: "INSERT INTO job_events (job_id, event) SELECT id, 'finished' FROM jobs WHERE id LIKE 'pad-%'")
        }
        try queue.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
        func counts(_ db: Database) throws -> [Int] {
            try ["jobs", "media", "job_events"].map { try Int.fetchOne(db, sql: "SELECT count(*) FROM \($0)") ?? -1 }
        }
        let expected = try queue.read(counts)
        try queue.close()
        let template = v.scratch.child("template.sqlite")
        try FileManager.default.copyItem(atPath: v.generated.dbPath, toPath: template)
        func reset() throws {
            for suffix in ["", "-wal", "-shm"] { unlink(v.generated.dbPath + suffix) }
            try FileManager.default.copyItem(atPath: template, toPath: v.generated.dbPath)
        }
        let arguments = ["migrate", "up", "--no-backup", "--quiet", "--migrations", cliReleaseFolder,
                         "--db", v.generated.dbPath, "--media-root", v.generated.mediaRoot]
        // Each migration holds its transaction open 0.4 s more, so kills land inside them.
        let pause = ["COFFER_TEST_MIGRATION_PAUSE": "0.4"]
        let started = Date()
        #expect(try CofferBinary.run(arguments, environment: pause).status == 0)
        let duration = Date().timeIntervalSince(started)

        let all = ["0001_seed", "0002_media_fts", "0003_jobs_paused", "0004_media_codec"]
        var kills = 0
        var seen: Set<Int> = []
        for round in 0..<6 {
            try reset()
            // Spread over the whole run: before, inside and between the migrations.
            let delay = duration * (Double(round) + Double.random(in: 0.2...0.8)) / 6
            if try killed(arguments, after: delay, environment: pause) { kills += 1 }
            let db = try DatabaseQueue(path: v.generated.dbPath, configuration: DatabaseAccess.configuration(readOnly: false))
            let state = try db.read { db -> (history: [String], recorded: Int, fts: Bool, paused: Bool, codec: Bool, integrity: String, orphans: Int, counts: [Int]) in
                let history = try db.tableExists("grdb_migrations") ? try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid") : []
                let recorded = try db.tableExists("coffer_migrations") ? try Int.fetchOne(db, sql: "SELECT count(*) FROM coffer_migrations") ?? 0 : 0
                let jobsSQL = try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE name = 'jobs'") ?? ""
                return (history, recorded, try db.tableExists("media_fts"), jobsSQL.contains("'PAUSED'"),
                        try db.columns(in: "media").contains { $0.name == "video_codec" },
                        try String.fetchAll(db, sql: "PRAGMA integrity_check").joined(separator: "; "),
                        try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").count, try counts(db))
            }
            try db.close()
            // A whole version: the history is a prefix of the migrations, and the schema is that version's.
            #expect(Array(all.prefix(state.history.count)) == state.history, "\(state.history)")
            #expect(state.recorded == state.history.count)
            #expect(state.fts == state.history.contains("0002_media_fts"))
            #expect(state.paused == state.history.contains("0003_jobs_paused"))
            #expect(state.codec == state.history.contains("0004_media_codec"))
            #expect(state.integrity == "ok")
            #expect(state.orphans == 0)
            #expect(state.counts == expected, "no row may be lost")
            seen.insert(state.history.count)
            // A rerun finishes the job.
            #expect(try CofferBinary.run(arguments).status == 0)
        }
        let db = try DatabaseQueue(path: v.generated.dbPath)
        #expect(try db.read(counts) == expected)
        try db.close()
        print("migrate up: \(kills) of 6 runs killed (a full run took \(String(format: "%.2f", duration)) s), versions seen after a kill: \(seen.sorted())")
        #expect(kills >= 4)
        #expect(seen.contains { $0 >= 1 && $0 < all.count }, "a kill between the first and the last migration")
    }

    @Test func twoConcurrentBackupsOneRunsOneIsRefused() throws {
        let v = try volume(jobs: 300, maxFileBytes: 256 * 1024)
        // The first is slowed (a pause at each of its checks for a stop), so the second surely
        // starts while it runs: once the first has written itself into the lock file.
        let first = try CofferBinary.start(["backup", "--quiet"] + v.flags, environment: ["COFFER_TEST_CHECK_DELAY": "0.01"])
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL) } }
        let holding = first.whileRunning(attempts: 600, every: 0.01) {
            ((try? String(contentsOfFile: v.repo + "/lock", encoding: .utf8)) ?? "").contains("\"pid\":\(first.processIdentifier)")
        }
        #expect(holding, "the first backup never took the lock")
        let second = try CofferBinary.run(["backup", "--quiet"] + v.flags)
        let stillRunning = first.isRunning
        first.waitUntilExit()
        #expect(stillRunning, "the first backup ended before the second was refused: the test proves nothing")
        #expect(first.terminationStatus == 0)
        #expect(second.status == 3, "\(second.status): \(second.stderr)")
        #expect(second.stderr.contains("error: lock repository \(v.repo): held by coffer backup, pid \(first.processIdentifier) on \(ProcessInfo.processInfo.hostName), started 20"),
                "\(second.stderr)")
        let snapshots = try Repository.open(v.repo).snapshots()
        #expect(snapshots.snapshots.count == 1)
        #expect(snapshots.damaged.isEmpty)
        try verifyClean(v.repo)
    }

    /// A backup killed while its database copy sits beside the database (a dry run, or a
    /// backup into a bucket, make it there: a hidden folder named by the run's pid) leaves a
    /// copy as large as the database on the pipeline's disk; the next run removes it, and
    /// leaves a live run's alone.
    @Test func aKilledRunsCopyBesideTheDatabaseIsRemovedByTheNext() throws {
        let v = try volume(jobs: 3000, maxFileBytes: 16)
        let folder = (v.generated.dbPath as NSString).deletingLastPathComponent
        func scratchFolders() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasPrefix(".coffer-backup-") }.sorted()
        }
        let process = try CofferBinary.start(["backup", "--dry-run", "--quiet"] + v.flags, environment: ["COFFER_TEST_CHECK_DELAY": "0.01"])
        // Killed once its copy is there.
        let copied = process.whileRunning(attempts: 400, every: 0.01) {
            guard let name = scratchFolders().first else { return false }
            return ((try? FileManager.default.contentsOfDirectory(atPath: folder + "/" + name)) ?? []).contains { $0.hasSuffix(".sqlite") }
        }
        let stillRunning = process.isRunning
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(stillRunning && copied, "the run ended, or made no copy, before the kill")
        let left = scratchFolders()
        #expect(left.count == 1, "\(left)")
        let live = folder + "/.coffer-backup-\(getpid()).AbCdEf"
        try FileManager.default.createDirectory(atPath: live, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: live) }

        let next = try CofferBinary.run(["backup", "--dry-run", "--quiet"] + v.flags)
        #expect(next.status == 0, "\(next.stderr)")
        #expect(scratchFolders() == [(live as NSString).lastPathComponent], "the killed run's copy is removed, a live run's stays")
    }

    /// A small tmpfs stands in for a full disk (needs root to mount; skipped otherwise).
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"))
    func aFullDiskFailsCleanly() throws {
        let v = try volume(jobs: 400, maxFileBytes: 128 * 1024)
        let mount = v.scratch.child("small")
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: false)
        guard try run(["/bin/mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", mount]) == 0 else {
            print("skipped: this machine does not allow mounting a tmpfs")
            return
        }
        defer { _ = try? run(["/bin/umount", "-l", mount]) }
        let repo = mount + "/repo"
        var flags = v.flags
        flags[flags.firstIndex(of: "--repo")! + 1] = repo
        // An earlier snapshot (of a small volume) already in the repository.
        let small = try volume(jobs: 4, maxFileBytes: 2048)
        var smallFlags = small.flags
        smallFlags[smallFlags.firstIndex(of: "--repo")! + 1] = repo
        #expect(try CofferBinary.run(["backup", "--quiet"] + smallFlags).status == 0)
        let packs = try FileManager.default.contentsOfDirectory(atPath: repo + "/packs")
        let records = try FileManager.default.contentsOfDirectory(atPath: repo + "/snapshots")
        #expect(packs.count == 1 && records.count == 1)

        // Too big for the disk: refused up front, naming the path and the space.
        let refused = try CofferBinary.run(["backup"] + flags)
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("error: check free space in \(repo)"), "\(refused.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: repo + "/packs") == packs)
        #expect(try FileManager.default.contentsOfDirectory(atPath: repo + "/snapshots") == records)

        // Restore onto a disk too small: refused, nothing written.
        #expect(try CofferBinary.run(["backup", "--quiet"] + v.flags).status == 0)
        let restore = try CofferBinary.run(["restore", "--repo", v.repo, "--db", mount + "/new/db.sqlite", "--media-root", mount + "/new/media"])
        #expect(restore.status == 2)
        #expect(restore.stderr.contains("free space"), "\(restore.stderr)")
        #expect(!FileManager.default.fileExists(atPath: mount + "/new/media"))

        // A disk that fills in the middle of a run (another writer takes the space after the
        // check): BackupRestoreTests.aDiskThatFillsDuringARunFailsCleanly.
    }

    /// A file size limit (`ulimit -f`) below what a run writes. SIGXFSZ would kill coffer in
    /// the middle of a write (exit 153, no message); it is ignored, so the write fails with
    /// EFBIG and is reported and undone like a full disk: exit 2 naming the file and the limit,
    /// no pack, no record, no scratch left, no restored target. The database copy's write
    /// fails inside SQLite, whose own message says only "not an error": its errno is reported.
    @Test func aFileSizeLimitFailsCleanly() throws {
        let prlimit = "/usr/bin/prlimit"
        guard FileManager.default.isExecutableFile(atPath: prlimit) else {
            print("skipped: prlimit (util-linux) is not installed")
            return
        }
        let v = try volume(jobs: 60, maxFileBytes: 256 * 1024)
        #expect(try CofferBinary.run(["backup", "--quiet"] + v.flags).status == 0)
        let packs = try FileManager.default.contentsOfDirectory(atPath: v.repo + "/packs")
        let records = try FileManager.default.contentsOfDirectory(atPath: v.repo + "/snapshots")
        let databaseBytes = try #require(FileSystem.status(v.generated.dbPath).get().size)
        // SIGXFSZ as a shell under cron has it (the test runner may ignore it, and an ignored
        // signal stays ignored across exec).
        func limited(_ bytes: Int64, _ arguments: [String]) throws -> CofferBinary.Result {
            try CofferBinary.run(arguments, wrapper: ["/usr/bin/env", "--default-signal=XFSZ", prlimit, "--fsize=\(bytes)"])
        }
        func expectFailedCleanly(_ result: CofferBinary.Result, writing what: String) throws {
            #expect(result.status == 2 && !result.crashed, "\(result.status) \(result.stderr)")
            #expect(result.stderr.contains("error: \(what)") && result.stderr.contains("File too large"), "\(result.stderr)")
            #expect(result.stderr.contains("ulimit -f"), "\(result.stderr)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: v.repo + "/packs") == packs)
            #expect(try FileManager.default.contentsOfDirectory(atPath: v.repo + "/snapshots") == records)
            #expect(try FileManager.default.contentsOfDirectory(atPath: v.repo + "/tmp").isEmpty)
        }
        // The pack outgrows the limit (the database copy does not).
        try expectFailedCleanly(try limited(max(databaseBytes * 2, 1 << 20), ["backup", "--full"] + v.flags), writing: "write ")
        // The database copy outgrows it.
        try expectFailedCleanly(try limited(databaseBytes / 2, ["backup", "--full"] + v.flags), writing: "write the database copy ")
        // A restored file outgrows it.
        let target = v.scratch.child("new")
        let restore = try limited(64 * 1024, ["restore", "--repo", v.repo, "--db", target + "/db.sqlite", "--media-root", target + "/media"])
        try expectFailedCleanly(restore, writing: "write ")
        #expect(!FileManager.default.fileExists(atPath: target + "/media"))
        #expect(!FileManager.default.fileExists(atPath: target + "/db.sqlite"))
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: target)) ?? []).isEmpty)
        try verifyClean(v.repo)

        // An export with --purge: the database cannot be opened (its -shm outgrows the limit),
        // then a CSV outgrows it. Either way nothing is purged and no CSV is left.
        let live = try DatabaseQueue(path: v.generated.dbPath)
        try live.write { db in
            try db.execute(sql: "UPDATE jobs SET status = 'COMPLETE', created_at = datetime('now', '-90 days')")
            try db.execute(sql: """
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20)
                INSERT INTO job_events (job_id, event, payload) SELECT id, 'progress', hex(randomblob(200)) FROM jobs, n
                """)
        }
        let rows = try live.read { try Int.fetchOne($0, sql: "SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM job_events)") }
        try live.close()
        let out = v.scratch.child("export")
        for (bytes, what) in [(Int64(4096), "error: open database"), (256 * 1024, "File too large")] {
            let export = try limited(bytes, ["export-jobs", "--older-than", "30d", "--purge", "--out", out,
                                             "--db", v.generated.dbPath, "--media-root", v.generated.mediaRoot])
            #expect(export.status == 2 && !export.crashed, "\(bytes): \(export.status) \(export.stderr)")
            #expect(export.stderr.contains(what) && export.stderr.contains("ulimit -f"), "\(export.stderr)")
            let left = (try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []
            #expect(left.allSatisfy { $0 == ".coffer-export.lock" }, "\(left)")
            let after = try DatabaseQueue(path: v.generated.dbPath)
            #expect(try after.read { try Int.fetchOne($0, sql: "SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM job_events)") } == rows)
            try after.close()
        }
    }

    func run(_ command: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}
