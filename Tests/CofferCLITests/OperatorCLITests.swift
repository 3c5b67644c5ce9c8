import CofferFixtures
import CofferKit
import Foundation
import Testing

/// What an operator leaves unattended: `drill` and `--metrics-file`.
@Suite struct OperatorCLITests {
    func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    func volume(_ scratch: Scratch, jobs: Int = 20) throws -> (flags: [String], repo: String) {
        var spec = VolumeSpec()
        spec.jobs = jobs
        let generated = try VolumeGenerator.generate(spec, dbPath: scratch.child("v/db.sqlite"), mediaRoot: scratch.child("v/media"))
        let repo = scratch.child("repo")
        return (["--db", generated.dbPath, "--media-root", generated.mediaRoot, "--repo", repo,
                 "--min-free-space-gb", "0", "--alert-free-space-gb", "0"], repo)
    }

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
        // Its folder must exist: a usage error before anything runs.
        let early = try CofferBinary.run(["backup", "--metrics-file", metrics] + flags)
        #expect(early.status == 64)
        #expect(early.stderr.contains("textfile") && !FileManager.default.fileExists(atPath: repo))
        try FileManager.default.createDirectory(atPath: scratch.child("textfile"), withIntermediateDirectories: false)

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

        // A failed backup (the repository's lock held... here: the database is gone) updates its
        // exit code and run time, keeps its last success, and leaves the other series alone.
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
