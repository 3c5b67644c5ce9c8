import CofferFixtures
import CofferKit
import Foundation
import Testing

/// What an operator leaves unattended: `drill` and `--metrics-file`.
@Suite struct OperatorCLITests {
    func json(_ text: String) throws -> [String: Any] { try jsonObject(text) }

    func volume(_ scratch: Scratch, jobs: Int = 20) throws -> (flags: [String], repo: String) { try cliVolume(scratch, jobs: jobs) }

    /// Every file below `root` with its bytes (a tree to compare before and after).
    func tree(_ root: String) -> [String: Data] {
        var out: [String: Data] = [:]
        let enumerator = FileManager.default.enumerator(atPath: root)
        while let relative = enumerator?.nextObject() as? String {
            var isDirectory: ObjCBool = false
            let path = root + "/" + relative
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
                out[relative] = FileManager.default.contents(atPath: path)
            }
        }
        return out
    }

    func leftovers(_ folder: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix(".coffer-drill") }
    }

    @Test func aDrillRestoresChecksReportsAndRemovesItsScratch() throws {
        let scratch = try Scratch()
        let (flags, _) = try volume(scratch)
        #expect(try CofferBinary.run(["backup", "--quiet"] + flags).status == 0)
        let before = tree(scratch.child("v"))

        let drill = try CofferBinary.run(["drill", "--json"] + flags)
        #expect(drill.status == 0, "\(drill.stdout) \(drill.stderr)")
        let report = try json(drill.stdout)
        #expect(report["status"] as? String == "ok")
        #expect((report["files_rehashed"] as? Int ?? 0) > 10)
        #expect(report["restore_seconds"] as? Double != nil)
        #expect((report["snapshot_age_seconds"] as? Double ?? -1) >= 0)
        #expect((report["findings"] as? [Any])?.isEmpty == true)
        // Beside MEDIA_ROOT by default, and gone afterwards; the live volume untouched.
        #expect((report["scratch"] as? String)?.hasPrefix(scratch.child("v") + "/.coffer-drill-") == true)
        #expect(try leftovers(scratch.child("v")).isEmpty)
        #expect(tree(scratch.child("v")) == before)

        let text = try CofferBinary.run(["drill", "--scratch", scratch.path] + flags)
        #expect(text.status == 0)
        #expect(text.stdout.contains("RTO:") && text.stdout.contains("RPO:") && text.stdout.contains("drill passed"), "\(text.stdout)")
        #expect(try leftovers(scratch.path).isEmpty)

        let missing = try CofferBinary.run(["drill", "--scratch", scratch.child("nowhere")] + flags)
        #expect(missing.status == 64)
        #expect(missing.stderr.contains("nowhere") && missing.stderr.contains("hint:"))
    }

    /// A drill killed with `kill -9` cannot remove its scratch (a restored copy of the volume,
    /// beside MEDIA_ROOT): the next drill does, and leaves alone the scratch of a drill whose
    /// process still runs.
    @Test func aKilledDrillsScratchIsRemovedByTheNext() throws {
        let scratch = try Scratch()
        let (flags, _) = try cliVolume(scratch, jobs: 200)
        #expect(try CofferBinary.run(["backup", "--quiet"] + flags).status == 0)
        let parent = scratch.child("v")
        // Slowed (a pause at each of its checks for a stop), so that it is killed mid-restore.
        let process = try CofferBinary.start(["drill", "--quiet"] + flags, environment: ["COFFER_TEST_CHECK_DELAY": "0.01"])
        let started = try process.whileRunning(attempts: 1000, every: 0.01) {
            try leftovers(parent).contains { name in
                (try? FileManager.default.contentsOfDirectory(atPath: parent + "/" + name))?.isEmpty == false
            }
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(started && process.terminationReason == .uncaughtSignal, "the drill ended before it was killed")
        let killed = try leftovers(parent)
        #expect(killed.count == 1, "\(killed)")
        // A drill that is still running (this test's own pid stands for it) keeps its scratch.
        let live = parent + "/.coffer-drill-20260101T000000Z-0000-\(getpid())"
        #expect(mkdir(live, 0o700) == 0)

        let next = try CofferBinary.run(["drill", "--json"] + flags)
        #expect(next.status == 0, "\(next.stdout) \(next.stderr)")
        #expect(try leftovers(parent) == [(live as NSString).lastPathComponent])
    }

    /// A drill restores beside MEDIA_ROOT: it refuses to push that filesystem below
    /// MIN_FREE_SPACE_GB (the pipeline would stop taking jobs). Findings the snapshot already
    /// recorded (a file gone before the backup) are the source's, not a failed restore.
    @Test func aDrillKeepsTheFreeSpaceReserveAndCountsWhatTheSnapshotAlreadyHad() throws {
        let scratch = try Scratch()
        let (flags, _) = try volume(scratch)
        let library = scratch.child("v/media/library")
        let victim = try #require(FileManager.default.enumerator(atPath: library)?.allObjects.compactMap { $0 as? String }
            .first { name in var d: ObjCBool = false; return FileManager.default.fileExists(atPath: library + "/" + name, isDirectory: &d) && !d.boolValue })
        try FileManager.default.removeItem(atPath: library + "/" + victim)
        #expect(try CofferBinary.run(["backup", "--quiet"] + flags).status == 1)

        let drill = try CofferBinary.run(["drill", "--json"] + flags)
        #expect(drill.status == 0, "\(drill.stdout)")
        #expect((try json(drill.stdout)["inherited"] as? Int ?? 0) >= 1)

        let greedy = flags.filter { !$0.hasSuffix("-gb") && $0 != "0" } + ["--min-free-space-gb", "100000", "--alert-free-space-gb", "100000"]
        let refused = try CofferBinary.run(["drill"] + greedy)
        #expect(refused.status == 2, "\(refused.stderr)")
        #expect(refused.stderr.contains("MIN_FREE_SPACE_GB") && refused.stderr.contains("hint: give --scratch"), "\(refused.stderr)")
        #expect(try leftovers(scratch.child("v")).isEmpty)
    }

    @Test func aDrillOfADamagedSnapshotFailsAndStillRemovesItsScratch() throws {
        let scratch = try Scratch()
        let (flags, repo) = try volume(scratch)
        #expect(try CofferBinary.run(["backup", "--quiet"] + flags).status == 0)
        let pack = try #require(try FileManager.default.contentsOfDirectory(atPath: repo + "/packs").first)
        let path = repo + "/packs/" + pack
        chmod(path, 0o644)
        // A byte in the middle of the first media file's data (after the first 512-byte headers).
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        try handle.seek(toOffset: 3 * 512 + 20)
        let byte = try #require(try handle.read(upToCount: 1))
        try handle.seek(toOffset: 3 * 512 + 20)
        try handle.write(contentsOf: Data([byte[0] ^ 0x5A]))
        try handle.close()

        let metrics = scratch.child("coffer.prom")
        let drill = try CofferBinary.run(["drill", "--json", "--metrics-file", metrics] + flags)
        #expect(drill.status == 1, "\(drill.stdout) \(drill.stderr)")
        let report = try json(drill.stdout)
        let findings = try #require(report["findings"] as? [[String: Any]])
        #expect(findings.contains { $0["kind"] as? String == "restore_failed" }, "\(findings)")
        #expect(try leftovers(scratch.child("v")).isEmpty)
        let text = try String(contentsOfFile: metrics, encoding: .utf8)
        #expect(text.contains("coffer_last_exit_code{command=\"drill\",repository=\"\(repo)\"} 1"), "\(text)")
        #expect(!text.contains("coffer_last_success_timestamp_seconds{command=\"drill\""), "\(text)")
    }

    /// node_exporter's textfile collector reads the file as Prometheus does; python's
    /// prometheus_client parser stands in for it (make test installs it).
    func parse(_ file: String) throws -> [String: [String: Double]]? {
        let python = "/usr/bin/python3"
        let script = """
            import json, sys
            from prometheus_client.parser import text_string_to_metric_families
            out = {}
            for family in text_string_to_metric_families(open(sys.argv[1]).read()):
                assert family.type == "gauge", family.name
                for sample in family.samples:
                    key = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    out.setdefault(sample.name, {})[key] = sample.value
            print(json.dumps(out))
            """
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: python)
        probe.arguments = ["-c", "import prometheus_client"]
        probe.standardError = FileHandle.nullDevice
        guard FileManager.default.isExecutableFile(atPath: python), (try? probe.run()) != nil else {
            print("skipped the Prometheus parse: /usr/bin/python3 is missing (make test installs python3-prometheus-client)")
            return nil
        }
        probe.waitUntilExit()
        guard probe.terminationStatus == 0 else {
            print("skipped the Prometheus parse: python3-prometheus-client is not installed (make test installs it)")
            return nil
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", script, file]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "the metrics file does not parse")
        return try JSONSerialization.jsonObject(with: data) as? [String: [String: Double]]
    }

    @Test func commandsShareOneMetricsFileAndEachKeepsTheOthersSeries() throws {
        let scratch = try Scratch()
        let (flags, repo) = try volume(scratch)
        let metrics = scratch.child("textfile/coffer.prom")
        // A monitoring problem does not cost the backup: a warning names it, the backup runs.
        let early = try CofferBinary.run(["backup", "--quiet", "--metrics-file", metrics] + flags)
        #expect(early.status == 0)
        #expect(early.stderr.contains("warning: no metrics this run") && early.stderr.contains(scratch.child("textfile")), "\(early.stderr)")
        try FileManager.default.createDirectory(atPath: scratch.child("textfile"), withIntermediateDirectories: false)
        // Never another file: not a .prom name (a typo naming the pipeline's .env), or a .prom
        // file that is not Prometheus text.
        let env = scratch.child("textfile/pipeline.env")
        try "DB_PATH=/srv/db.sqlite\n".write(toFile: env, atomically: true, encoding: .utf8)
        let foreign = scratch.child("textfile/other.prom")
        try "this is not a metrics file\n".write(toFile: foreign, atomically: true, encoding: .utf8)
        for target in [env, foreign] {
            let result = try CofferBinary.run(["backup", "--quiet", "--metrics-file", target] + flags)
            #expect(result.status == 0 && result.stderr.contains("warning: no metrics this run"), "\(result.stderr)")
        }
        #expect(try String(contentsOfFile: env, encoding: .utf8) == "DB_PATH=/srv/db.sqlite\n")
        #expect(try String(contentsOfFile: foreign, encoding: .utf8) == "this is not a metrics file\n")
        try FileManager.default.removeItem(atPath: env)
        try FileManager.default.removeItem(atPath: foreign)
        // A dry run records nothing (it would pass for a success).
        #expect(try CofferBinary.run(["backup", "--dry-run", "--quiet", "--metrics-file", metrics] + flags).status == 0)
        #expect(!FileManager.default.fileExists(atPath: metrics))

        #expect(try CofferBinary.run(["backup", "--quiet", "--metrics-file", metrics] + flags).status == 0)
        #expect(try CofferBinary.run(["verify", "--repo", repo, "--read-data", "--quiet", "--metrics-file", metrics]).status == 0)
        #expect(try CofferBinary.run(["verify", "--quiet", "--metrics-file", metrics] + flags.filter { $0 != "--repo" && $0 != repo }).status == 0)
        #expect(try CofferBinary.run(["cleanup", "--quiet", "--metrics-file", metrics] + flags).status == 0)
        #expect(try CofferBinary.run(["prune", "--keep-last", "5", "--quiet", "--metrics-file", metrics] + flags).status == 0)
        let exportDir = scratch.child("exports")
        try FileManager.default.createDirectory(atPath: exportDir, withIntermediateDirectories: false)
        let export = try CofferBinary.run(["export-jobs", "--older-than", "0d", "--out", exportDir, "--quiet", "--metrics-file", metrics] + flags)
        #expect(export.status == 0, "\(export.stderr)")

        let text = try String(contentsOfFile: metrics, encoding: .utf8)
        // Readable by node_exporter.
        #expect((try FileManager.default.attributesOfItem(atPath: metrics)[.posixPermissions] as? Int) == 0o644)
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: scratch.child("textfile"))).contains { $0 != "coffer.prom" },
                "no temporary file left beside it")
        let backupKey = "command=backup,repository=\(repo)"
        if let parsed = try parse(metrics) {
            #expect(parsed["coffer_last_exit_code"]?[backupKey] == 0, "\(text)")
            #expect(parsed["coffer_last_exit_code"]?["command=verify,repository=\(repo)"] == 0)
            #expect(parsed["coffer_last_exit_code"]?["command=verify"] == 0)
            #expect(parsed["coffer_last_exit_code"]?["command=cleanup"] == 0)
            #expect(parsed["coffer_last_exit_code"]?["command=prune,repository=\(repo)"] == 0)
            #expect(parsed["coffer_last_exit_code"]?["command=export-jobs"] == 0)
            #expect((parsed["coffer_last_files"]?[backupKey] ?? 0) > 10)
            #expect((parsed["coffer_last_bytes_written"]?[backupKey] ?? 0) > 0)
            #expect((parsed["coffer_last_bytes_read"]?["command=verify,repository=\(repo)"] ?? 0) > 0)
            #expect(parsed["coffer_last_success_timestamp_seconds"]?[backupKey] != nil)
        }
        let success = try #require(text.split(separator: "\n").first { $0.hasPrefix("coffer_last_success_timestamp_seconds{command=\"backup\"") })
        _ = success

        // A backup that recorded a problem (a file gone) wrote its snapshot: exit 1, the last
        // snapshot time moves, the last success does not.
        let snapshotLine = { (text: String) in text.split(separator: "\n").first { $0.hasPrefix("coffer_last_snapshot_timestamp_seconds{command=\"backup\"") } }
        let before = try #require(snapshotLine(text))
        Thread.sleep(forTimeInterval: 0.01)
        let library = scratch.child("v/media/library")
        let victim = try #require(FileManager.default.enumerator(atPath: library)?.allObjects.compactMap { $0 as? String }
            .first { name in var d: ObjCBool = false; return FileManager.default.fileExists(atPath: library + "/" + name, isDirectory: &d) && !d.boolValue })
        try FileManager.default.removeItem(atPath: library + "/" + victim)
        let partial = try CofferBinary.run(["backup", "--quiet", "--metrics-file", metrics] + flags)
        #expect(partial.status == 1)
        #expect(partial.stdout.contains("missing"), "--quiet still reports what went wrong: \(partial.stdout)")
        let afterPartial = try String(contentsOfFile: metrics, encoding: .utf8)
        #expect(try #require(snapshotLine(afterPartial)) != before)
        #expect(afterPartial.split(separator: "\n").contains(success))

        // A failed backup (the database is gone) updates its exit code and run time, keeps its
        // last success and last snapshot, and leaves the other series alone.
        try FileManager.default.moveItem(atPath: scratch.child("v/db.sqlite"), toPath: scratch.child("v/db.moved"))
        let failed = try CofferBinary.run(["backup", "--quiet", "--metrics-file", metrics] + flags)
        #expect(failed.status == 2)
        let after = try String(contentsOfFile: metrics, encoding: .utf8)
        #expect(after.contains("coffer_last_exit_code{command=\"backup\",repository=\"\(repo)\"} 2"), "\(after)")
        #expect(after.split(separator: "\n").contains(success), "the last success is kept")
        #expect(after.contains("coffer_last_exit_code{command=\"cleanup\"} 0"))
        #expect(after.contains("coffer_last_exit_code{command=\"prune\",repository=\"\(repo)\"} 0"))
        if let parsed = try parse(metrics) { #expect(parsed["coffer_last_exit_code"]?[backupKey] == 2) }
    }
}
