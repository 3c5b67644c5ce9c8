import CofferFixtures
import CofferKit
import Foundation
import Testing

@Suite struct CLITests {
    /// A generated volume and the flags that point at it (thresholds 0: the machine's free
    /// space must not decide these tests).
    func volume(_ scratch: Scratch, problems: Bool = false) throws -> [String] {
        var spec = VolumeSpec()
        spec.jobs = 40
        let generated = try VolumeGenerator.generate(spec, dbPath: scratch.child("db.sqlite"), mediaRoot: scratch.child("media"))
        if problems { _ = try ProblemPlanter.plantAll(in: generated) }
        return ["--db", generated.dbPath, "--media-root", generated.mediaRoot, "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
    }

    func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test func cleanupRemovesWhatVerifyCallsOverdueAndDryRunOnlyTells() throws {
        let scratch = try Scratch()
        let flags = try volume(scratch, problems: true)
        let before = try json(try CofferBinary.run(["verify", "--json"] + flags).stdout)
        let overdue = (before["findings"] as? [[String: Any]] ?? []).filter { $0["kind"] as? String == "expired_temp_dir" }
        #expect(overdue.count == 1)

        let dry = try CofferBinary.run(["cleanup", "--dry-run", "--json"] + flags)
        #expect(dry.status == 0, "\(dry.stderr)")
        let dryReport = try json(dry.stdout)
        let planned = (dryReport["removed"] as? [[String: Any]] ?? []).compactMap { $0["path"] as? String }
        #expect(planned == overdue.compactMap { $0["path"] as? String })
        #expect(dryReport["dry_run"] as? Bool == true)
        #expect(FileManager.default.fileExists(atPath: planned.first ?? "/nonexistent"))

        let run = try CofferBinary.run(["cleanup"] + flags)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("removed 1 of"), "\(run.stdout)")
        #expect(!FileManager.default.fileExists(atPath: planned.first ?? "/"))
        let after = try json(try CofferBinary.run(["verify", "--json"] + flags).stdout)
        #expect(!(after["findings"] as? [[String: Any]] ?? []).contains { $0["kind"] as? String == "expired_temp_dir" })
        // The unknown job's directory is recent: kept until it has not changed for 24 hours.
        #expect((after["findings"] as? [[String: Any]] ?? []).contains { $0["kind"] as? String == "unknown_temp_dir" })
        // Quiet and clean: nothing on stdout for cron.
        let quiet = try CofferBinary.run(["cleanup", "--quiet"] + flags)
        #expect(quiet.status == 0 && quiet.stdout.isEmpty)
    }

    @Test func exportJobsRefusesBadDurationsAndUnfinishedStatusesWithSixtyFour() throws {
        let scratch = try Scratch()
        let flags = try volume(scratch)
        for bad in [["--older-than", "30 days"], ["--older-than", "-3d"], ["--older-than", "9999999999999999d"], ["--status", "QUEUED"], ["--status", "COMPLETE,MUXING"],
                    ["--delete-media"], ["--purge", "--spreadsheet-safe"]] {
            let result = try CofferBinary.run(["export-jobs", "--out", scratch.child("out")] + bad + flags)
            #expect(result.status == 64, "\(bad): \(result.stderr)")
            // Coffer's own checks name the value and what to do; the argument parser's say "Error:" and the usage.
            #expect(result.stderr.contains("error:") && result.stderr.contains("hint:") || result.stderr.contains("Usage:"), "\(bad): \(result.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.child("out")))
        let dry = try CofferBinary.run(["export-jobs", "--out", scratch.child("out"), "--older-than", "1s", "--dry-run", "--json"] + flags)
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(try json(dry.stdout)["dry_run"] as? Bool == true)
        #expect(!FileManager.default.fileExists(atPath: scratch.child("out")))
    }

    /// One-letter relative paths everywhere (Foundation traps on some of them).
    /// The generator makes the events per job it is asked for (the large benchmark's 1 GB
    /// database), and refuses a range it cannot draw from.
    @Test func theFixturesGeneratorMakesTheEventsAsked() throws {
        let scratch = try Scratch()
        let generator = CofferBinary.url.deletingLastPathComponent().appendingPathComponent("coffer-fixtures").path
        func generate(_ name: String, _ events: String) throws -> CofferBinary.Result {
            try CofferBinary.run(["--db", scratch.child("\(name)/db.sqlite"), "--media-root", scratch.child("\(name)/media"),
                                  "--jobs", "20", "--events-per-job", events], executable: generator)
        }
        let fixed = try generate("fixed", "7")
        #expect(fixed.status == 0, "\(fixed.stderr)")
        #expect(fixed.stdout.contains("140 events"), "\(fixed.stdout)")
        let drawn = try generate("drawn", "2-4")
        #expect(drawn.status == 0, "\(drawn.stderr)")
        let count = Int(drawn.stdout.split(separator: " ").drop { !$0.hasSuffix("rows,") }.dropFirst().first ?? "") ?? -1
        #expect((40...80).contains(count), "\(drawn.stdout)")
        for bad in ["5-2", "x", "1-2-3", "-1"] {
            let refused = try generate("bad", bad)
            #expect(refused.status == 64, "\(bad): \(refused.stderr)")
            #expect(refused.stderr.contains("--events-per-job"), "\(refused.stderr)")
        }
    }

    @Test func oneLetterRelativePathsWork() throws {
        let scratch = try Scratch()
        let env = ["MIN_FREE_SPACE_GB": "0", "ALERT_FREE_SPACE_GB": "0"]
        let steps: [[String]] = [
            ["init", "--db", "d", "--media-root", "m"],
            ["backup", "--quiet", "--db", "d", "--media-root", "m", "--repo", "r"],
            ["restore", "--quiet", "--repo", "r", "--db", "x", "--media-root", "y"],
            ["export-jobs", "--quiet", "--db", "d", "--media-root", "m", "--out", "o"],
            ["cleanup", "--quiet", "--db", "d", "--media-root", "m"],
        ]
        for step in steps {
            let result = try CofferBinary.run(step, environment: env, workingDirectory: scratch.path)
            #expect(result.status == 0 && !result.crashed, "\(step): \(result.stderr)")
        }
        #expect(FileManager.default.fileExists(atPath: scratch.child("y/library")))
    }

    @Test func versionNamesTheLibraries() throws {
        let result = try CofferBinary.run(["--version"])
        #expect(result.status == 0)
        #expect(result.stdout.hasPrefix("coffer \(CofferVersion.coffer) (SQLite 3."))
        #expect(result.stdout.contains("libarchive 3."))
    }

    @Test func helpListsTheCommandsAndExitCodes() throws {
        let result = try CofferBinary.run(["--help"])
        #expect(result.status == 0)
        for command in ["init", "config", "verify", "status"] { #expect(result.stdout.contains("  \(command)")) }
        #expect(result.stdout.contains("64 usage"))
        let verify = try CofferBinary.run(["help", "verify"])
        #expect(verify.stdout.contains("Exit codes:\n  0   nothing found\n  1   findings\n  2   could not run"), "\(verify.stdout)")
    }

    @Test func configShowsEachValueAndItsSource() throws {
        let scratch = try Scratch()
        let file = scratch.child("coffer.env")
        try "MEDIA_ROOT=/from/file\nMIN_FREE_SPACE_GB=4\nALERT_FREE_SPACE_GB=8\n".write(toFile: file, atomically: true, encoding: .utf8)
        let result = try CofferBinary.run(["config", "--config", file, "--db", "/from/flag.sqlite", "--json"],
                                          environment: ["DB_PATH": "/from/env.sqlite", "MIN_FREE_SPACE_GB": "5"])
        #expect(result.status == 0, "\(result.stderr)")
        let settings = try #require(try json(result.stdout)["settings"] as? [[String: Any]])
        func find(_ key: String) -> (String?, String?) {
            let s = settings.first { $0["key"] as? String == key }
            return (s?["value"] as? String, s?["source"] as? String)
        }
        #expect(find("DB_PATH") == ("/from/flag.sqlite", "flag"))
        #expect(find("MIN_FREE_SPACE_GB") == ("5", "environment"))
        #expect(find("MEDIA_ROOT") == ("/from/file", "config file"))
        #expect(find("ALERT_FREE_SPACE_GB") == ("8", "config file"))
        #expect(find("TEMP_DIR_TEMPLATE") == ("{MEDIA_ROOT}/tmp/{jobId}", "default"))

        let text = try CofferBinary.run(["config", "--config", file], environment: ["DB_PATH": "/from/env.sqlite"])
        #expect(text.stdout.contains("DB_PATH                /from/env.sqlite  [environment]"))
        #expect(text.stdout.contains("MEDIA_ROOT             /from/file  [config file \(file):1]"))
    }

    @Test(arguments: [
        (["config"], ["MIN_FREE_SPACE_GB": "abc"], "MIN_FREE_SPACE_GB"),
        (["verify"], ["LIBRARY_PATH_TEMPLATE": "{MEDIA_ROOT}/{uploder}/{title}"], "LIBRARY_PATH_TEMPLATE"),
        (["status", "--alert-free-space-gb", "ten"], [:], "ALERT_FREE_SPACE_GB"),
        (["init", "--config", "/nonexistent/coffer.env"], [:], "/nonexistent/coffer.env"),
    ] as [([String], [String: String], String)])
    func badConfigurationExits64NamingIt(arguments: [String], environment: [String: String], name: String) throws {
        let result = try CofferBinary.run(arguments, environment: environment)
        #expect(result.status == 64)
        #expect(result.stderr.hasPrefix("error: "))
        #expect(result.stderr.contains(name))
        #expect(result.stdout.isEmpty)
    }

    @Test func usageErrorsExit64() throws {
        #expect(try CofferBinary.run(["verify", "--no-such-flag"]).status == 64)
        #expect(try CofferBinary.run(["status", "--quiet", "--verbose"]).status == 64)
    }

    @Test func initMakesAVolumeAndRefusesToRedoIt() throws {
        let scratch = try Scratch()
        let args = ["--db", scratch.child("data/db.sqlite"), "--media-root", scratch.child("media")]
        let first = try CofferBinary.run(["init"] + args)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains("schema version 2"))
        let before = try Data(contentsOf: URL(fileURLWithPath: scratch.child("data/db.sqlite")))
        let second = try CofferBinary.run(["init"] + args)
        #expect(second.status == 2)
        #expect(second.stderr.contains("error: create database \(scratch.child("data/db.sqlite")): a database already exists"))
        #expect(second.stderr.contains("hint: "))
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.child("data/db.sqlite"))) == before)
        let verify = try CofferBinary.run(["verify"] + args + ["--min-free-space-gb", "0", "--alert-free-space-gb", "0"])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }

    @Test func verifyOfACleanVolumeExitsZero() throws {
        let scratch = try Scratch()
        let flags = try volume(scratch)
        let result = try CofferBinary.run(["verify"] + flags)
        #expect(result.status == 0, "\(result.stdout)")
        #expect(result.stdout.contains("no findings"))
        let quiet = try CofferBinary.run(["verify", "--quiet"] + flags)
        #expect(quiet.status == 0)
        #expect(quiet.stdout.isEmpty && quiet.stderr.isEmpty)
    }

    @Test func verifyJSONIsOneDocumentWithEveryFinding() throws {
        let scratch = try Scratch()
        let result = try CofferBinary.run(["verify", "--json"] + (try volume(scratch, problems: true)))
        #expect(result.status == 1)
        let document = try json(result.stdout)
        #expect(document["exit_code"] as? Int == 1)
        let findings = try #require(document["findings"] as? [[String: Any]])
        #expect(findings.count == 9)
        for finding in findings {
            for key in ["kind", "severity", "job_id", "path", "expected", "actual", "message"] {
                #expect(finding.keys.contains(key), "\(key) missing in \(finding)")
            }
        }
        let summary = try #require(document["summary"] as? [String: Any])
        #expect(summary["errors"] as? Int == 5)
        #expect((summary["by_kind"] as? [String: Int])?["orphan_file"] == 2)
    }

    @Test func verifyHumanReportGroupsFindingsWithCounts() throws {
        let scratch = try Scratch()
        let result = try CofferBinary.run(["verify"] + (try volume(scratch, problems: true)))
        #expect(result.status == 1)
        #expect(result.stdout.contains("findings: 5 error(s), 4 warning(s)"))
        #expect(result.stdout.contains("\norphan_file (2, warning)\n"))
        #expect(result.stdout.contains("\nmissing_file (1, error)\n"))
    }

    /// `--verbose` logs each step of the work, with its time, on stderr; without it, none.
    @Test func verboseLogsTheStepsOnStderr() throws {
        let scratch = try Scratch()
        let flags = try volume(scratch) + ["--repo", scratch.child("repo")]
        let plain = try CofferBinary.run(["backup"] + flags)
        #expect(plain.status == 0, "\(plain.stderr)")
        #expect(!plain.stderr.contains("debug"), "\(plain.stderr)")
        let verbose = try CofferBinary.run(["backup", "--verbose"] + flags)
        #expect(verbose.status == 0, "\(verbose.stderr)")
        for step in ["database copied", "media collected", "media stored", "reconciliation done"] {
            #expect(verbose.stderr.contains(step), "\(step): \(verbose.stderr)")
        }
        #expect(!verbose.stdout.contains("debug"))
    }

    @Test func verifyCannotRunOnWhatIsNotADatabase() throws {
        let scratch = try Scratch()
        try Data(repeating: 0x41, count: 8192).write(to: URL(fileURLWithPath: scratch.child("db.sqlite")))
        let result = try CofferBinary.run(["verify", "--db", scratch.child("db.sqlite"), "--media-root", scratch.path, "--json"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("error: open database \(scratch.child("db.sqlite")): file is not a database"))
        #expect(try json(result.stdout)["exit_code"] as? Int == 2)

        // A usage error the argument parser finds, with --json: the error document too.
        for arguments in [["verify", "--json", "--bogus"], ["export-jobs", "--json", "--older-than", "30d"]] {
            let usage = try CofferBinary.run(arguments)
            #expect(usage.status == 64, "\(arguments)")
            let document = try json(usage.stdout)
            #expect(document["exit_code"] as? Int == 64 && (document["error"] as? String)?.isEmpty == false, "\(arguments): \(usage.stdout)")
        }
        let missing = try CofferBinary.run(["verify", "--db", scratch.child("none.sqlite"), "--media-root", scratch.path])
        #expect(missing.status == 2)
        #expect(!FileManager.default.fileExists(atPath: scratch.child("none.sqlite")))
    }

    @Test func aCorruptedDatabaseIsReportedNotCrashedOn() throws {
        let scratch = try Scratch()
        var spec = VolumeSpec()
        spec.jobs = 300
        spec.hostileNames = false
        let generated = try VolumeGenerator.generate(spec, dbPath: scratch.child("db.sqlite"), mediaRoot: scratch.child("media"))
        // Scramble every page after the first two, byte by byte in a pattern.
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: generated.dbPath))
        let size = try handle.seekToEnd()
        for offset in stride(from: UInt64(8192 + 300), to: size, by: 4096) {
            try handle.seek(toOffset: offset)
            handle.write(Data((0..<512).map { UInt8(truncatingIfNeeded: $0 * 7) }))
        }
        try handle.close()
        for extra in [[], ["--full"]] {
            let result = try CofferBinary.run(["verify", "--db", generated.dbPath, "--media-root", generated.mediaRoot] + extra)
            #expect(!result.crashed)
            #expect(result.status == 1 || result.status == 2, "\(result.status) \(result.stderr)")
        }
    }

    /// Runs as an unprivileged user (root reads every directory whatever its mode).
    @Test func aDirectoryThatCannotBeReadIsAFinding() throws {
        var wrapper: [String] = []
        if geteuid() == 0 {
            guard let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].first(where: FileManager.default.isExecutableFile) else {
                print("skipped: running as root and setpriv (util-linux) is missing to drop privileges")
                return
            }
            wrapper = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        }
        let scratch = try Scratch()
        let flags = try volume(scratch)
        // The unprivileged user may read the volume and write the database's folder (for -shm).
        #expect(chmod(scratch.path, 0o777) == 0)
        let locked = scratch.child("media/library/locked")
        try FileManager.default.createDirectory(atPath: locked, withIntermediateDirectories: false)
        #expect(chmod(locked, 0) == 0)
        defer { chmod(locked, 0o755) }
        let result = try CofferBinary.run(["verify", "--json"] + flags, wrapper: wrapper)
        #expect(result.status == 1, "\(result.stderr)")
        let findings = try #require(try json(result.stdout)["findings"] as? [[String: Any]])
        #expect(findings.count == 1)
        #expect(findings.first?["kind"] as? String == "unreadable_dir")
        #expect(findings.first?["path"] as? String == locked)
        #expect(findings.first?["actual"] as? String == "Permission denied")
    }

    @Test func statusExitsOneBelowEitherThreshold() throws {
        let scratch = try Scratch()
        let flags = try volume(scratch)
        let fine = try CofferBinary.run(["status", "--json"] + flags)
        #expect(fine.status == 0)
        let document = try json(fine.stdout)
        #expect((document["jobs_by_status"] as? [String: Int])?.values.reduce(0, +) == 40)
        #expect(document["db_bytes"] as? Int ?? 0 > 0)
        let low = try CofferBinary.run(["status"] + flags + ["--min-free-space-gb", "900000000", "--alert-free-space-gb", "900000000"])
        #expect(low.status == 1)
        #expect(low.stdout.contains("BELOW MINIMUM"))
        let alert = try CofferBinary.run(["status"] + flags + ["--min-free-space-gb", "0", "--alert-free-space-gb", "900000000"])
        #expect(alert.status == 1)
        #expect(alert.stdout.contains("below alert threshold"))
    }
}
