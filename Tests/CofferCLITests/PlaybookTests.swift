import CofferFixtures
import CofferKit
import Foundation
import Testing

/// Every ```sh block of every playbook runs, in order, against a generated volume in a temp
/// folder, with the playbooks' example paths replaced by temp ones: the runbooks cannot rot.
/// Blocks in other languages (cron lines, systemd units, alert rules, `text`) are shown, not run.
@Suite struct PlaybookTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("playbooks")

    static var playbooks: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0.hasSuffix(".md") }.sorted()
    }

    /// The fenced blocks of a Markdown file: (language, text).
    static func blocks(_ markdown: String) -> [(language: String, text: String)] {
        var blocks: [(String, String)] = []
        var current: (language: String, lines: [String])?
        for line in markdown.components(separatedBy: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("```") {
                if let open = current {
                    blocks.append((open.language, open.lines.joined(separator: "\n")))
                    current = nil
                } else {
                    current = (String(trimmed.dropFirst(3)), [])
                }
            } else if current != nil {
                current!.lines.append(line)
            }
        }
        return blocks
    }

    @Test func thereAreTheFourRunbooksAndMore() {
        for name in ["nightly-backup.md", "disaster-recovery.md", "retention.md", "upgrade.md"] {
            #expect(Self.playbooks.contains(name), "\(name)")
        }
    }

    @Test(arguments: playbooks)
    func everyCommandBlockRuns(playbook: String) throws {
        let markdown = try String(contentsOf: Self.folder.appendingPathComponent(playbook), encoding: .utf8)
        let runnable = Self.blocks(markdown).filter { $0.language == "sh" }
        #expect(!runnable.isEmpty, "\(playbook) has no ```sh block")
        #expect(markdown.contains("Exit") || markdown.contains("exit"), "\(playbook) says nothing about exit codes")

        let scratch = try Scratch()
        var spec = VolumeSpec()
        spec.jobs = 40
        let volume = try VolumeGenerator.generate(spec, dbPath: scratch.child("srv/data/db.sqlite"), mediaRoot: scratch.child("srv/media"))
        let env = scratch.child("srv/pipeline.env")
        try """
            DB_PATH=\(volume.dbPath)
            MEDIA_ROOT=\(volume.mediaRoot)
            MIN_FREE_SPACE_GB=0
            ALERT_FREE_SPACE_GB=0

            """.write(toFile: env, atomically: true, encoding: .utf8)
        let repo = scratch.child("backup/coffer")
        let replacements: [(String, String)] = [
            ("/srv/pipeline-2.1/migrations", cliReleaseFolder),
            ("/srv/pipeline/.env", env),
            ("/backup/coffer", repo),
            ("/var/lib/node_exporter/textfile_collector", scratch.child("textfile")),
            ("/archive/jobs", scratch.child("archive/jobs")),
        ]
        func coffer(_ arguments: [String]) throws {
            let result = try CofferBinary.run(arguments)
            #expect(result.status == 0, "setup: \(arguments): \(result.stderr)")
        }
        // What each story starts from.
        switch playbook {
        case "disaster-recovery.md":
            try coffer(["backup", "--quiet", "--config", env, "--repo", repo])
            // The disk is lost: a bare machine, only the .env deployed again.
            try FileManager.default.removeItem(atPath: scratch.child("srv/data"))
            try FileManager.default.removeItem(atPath: volume.mediaRoot)
        case "retention.md":
            // Set up with the nightly backup (nightly-backup.md): the repository and the metrics folder.
            try FileManager.default.createDirectory(atPath: scratch.child("textfile"), withIntermediateDirectories: true)
            try coffer(["backup", "--quiet", "--config", env, "--repo", repo])
            try coffer(["backup", "--quiet", "--config", env, "--repo", repo])
        default:
            break
        }

        let bin = CofferBinary.url.deletingLastPathComponent().path
        for (number, block) in runnable.enumerated() {
            var script = block.text
            for (from, to) in replacements { script = script.replacingOccurrences(of: from, with: to) }
            let (status, output) = try runScript("/bin/bash", ["-e", "-o", "pipefail", "-c", script],
                                                 environment: ["PATH": "\(bin):/usr/bin:/bin", "HOME": scratch.path], in: scratch.path)
            #expect(status == 0, "\(playbook), block \(number + 1) exited \(status):\n\(script)\n---\n\(output)")
            guard status == 0 else { return }
        }
        // Each story ends where it says it does.
        switch playbook {
        case "disaster-recovery.md":
            #expect(FileManager.default.fileExists(atPath: volume.dbPath))
            #expect(try CofferBinary.run(["verify", "--config", env]).status == 0)
        case "nightly-backup.md":
            let metrics = try String(contentsOfFile: scratch.child("textfile/coffer.prom"), encoding: .utf8)
            for command in ["backup", "drill", "verify"] { #expect(metrics.contains("coffer_last_exit_code{command=\"\(command)\""), "\(command)") }
        case "upgrade.md":
            let status = try CofferBinary.run(["migrate", "status", "--config", env, "--migrations", cliReleaseFolder])
            #expect(status.status == 0, "\(status.stdout)")
        default:
            break
        }
    }
}

/// `make demo`'s story (scripts/demo) runs to its end with the exit code it expects at every
/// step (it stops at any other), and recovers the volume onto a new disk, its paths rewritten.
@Suite struct DemoTests {
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/sqlite3"), "the demo edits the volume with the sqlite3 shell (`make test` installs it)"))
    func theDemoRunsItsStoryToTheEnd() throws {
        let scratch = try Scratch()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/demo").path
        let (status, output) = try runScript(script, [], environment: ["PATH": "/usr/bin:/bin", "HOME": scratch.path, "TMPDIR": scratch.path,
                                                                         "COFFER_BIN": CofferBinary.url.deletingLastPathComponent().path])
        #expect(status == 0, "\(output)")
        #expect(output.contains("(exit 2)"), "the status of the lost volume")
        #expect(output.range(of: #"restored snapshot \S+ in [0-9.]+ s: [0-9]+ files .* [1-9][0-9]* paths rewritten"#, options: .regularExpression) != nil, "\(output)")
        #expect(output.contains("Everything stays in \(scratch.path)/coffer-demo."), "its scratch under TMPDIR, removed with the test's")
    }
}
