import CofferFixtures
import CofferKit
import Foundation
import Testing

/// One interface across commands: help with exit codes and examples, --json documents that
/// parse and match JSON.md, --quiet, --verbose, progress only on a terminal.
@Suite struct InterfaceTests {
    static let commands = ["init", "config", "status", "verify", "backup", "snapshots", "restore", "drill", "cleanup",
                           "export-jobs", "import-jobs", "prune", "migrate status", "migrate plan", "migrate up"]

    @Test(arguments: commands)
    func helpHasExitCodesAndExamples(command: String) throws {
        let words = command.split(separator: " ").map(String.init)
        let help = try CofferBinary.run(["help"] + words)
        #expect(help.status == 0, "\(help.stderr)")
        #expect(help.stdout.contains("\nExit codes:\n  0   "), "\(help.stdout)")
        #expect(help.stdout.contains("\n  64  "), "\(help.stdout)")
        #expect(help.stdout.contains("\nExamples:\n  coffer \(command)"), "\(help.stdout)")
        for flag in ["--json", "--quiet", "--verbose"] { #expect(help.stdout.contains(flag), "\(command): \(flag)") }
        // The same text from --help.
        #expect(try CofferBinary.run(words + ["--help"]).stdout == help.stdout)
    }

    /// JSON.md's tables: section name -> documented top-level keys.
    static func documentedKeys() throws -> [String: Set<String>] {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let text = try String(contentsOf: root.appendingPathComponent("JSON.md"), encoding: .utf8)
        var sections: [String: Set<String>] = [:]
        var current: String?
        for line in text.split(separator: "\n") {
            if line.hasPrefix("### `"), line.hasSuffix("`") {
                current = String(line.dropFirst(5).dropLast())
                sections[current!] = []
            } else if let current, line.hasPrefix("| `"), let end = line.dropFirst(3).firstIndex(of: "`") {
                sections[current]!.insert(String(line.dropFirst(3)[..<end]))
            }
        }
        return sections
    }

    /// Every command's --json document parses, names its command, and lists only keys JSON.md documents.
    @Test func everyJSONDocumentParsesAndIsDocumented() throws {
        let documented = try Self.documentedKeys()
        let scratch = try Scratch()
        var spec = VolumeSpec()
        spec.jobs = 20
        let v = try VolumeGenerator.generate(spec, dbPath: scratch.child("v/db.sqlite"), mediaRoot: scratch.child("v/media"))
        let repo = scratch.child("repo"), out = scratch.child("out")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        let volume = ["--db", v.dbPath, "--media-root", v.mediaRoot, "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
        let flags = volume + ["--repo", repo]
        let restored = ["--db", scratch.child("r/db.sqlite"), "--media-root", scratch.child("r/media"), "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]
        var runs: [(section: String, command: String, arguments: [String])] = [
            ("init", "init", ["init", "--db", scratch.child("n/db.sqlite"), "--media-root", scratch.child("n/media")]),
            ("config", "config", ["config"] + flags),
            ("verify", "verify", ["verify"] + volume),
            ("backup", "backup", ["backup"] + flags),
            ("status", "status", ["status"] + flags),
            ("snapshots", "snapshots", ["snapshots", "--repo", repo]),
            ("verify --repo", "verify", ["verify", "--repo", repo, "--read-data"]),
            ("restore", "restore", ["restore", "--repo", repo] + restored),
            ("drill", "drill", ["drill"] + flags),
            ("cleanup", "cleanup", ["cleanup"] + flags),
            ("export-jobs", "export-jobs", ["export-jobs", "--older-than", "0d", "--out", out] + flags),
            ("prune", "prune", ["prune", "--keep-last", "3"] + flags),
            ("migrate status", "migrate status", ["migrate", "status"] + volume),
            ("migrate plan", "migrate plan", ["migrate", "plan"] + volume),
            ("migrate up", "migrate up", ["migrate", "up", "--no-backup"] + volume),
        ]
        var seen: Set<String> = []
        var index = 0
        while index < runs.count {
            let run = runs[index]
            index += 1
            let result = try CofferBinary.run(run.arguments + ["--json"])
            #expect(result.status == 0 || result.status == 1, "\(run.arguments): \(result.stderr)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
                                      "\(run.arguments): \(result.stdout)")
            #expect(object["command"] as? String == run.command, "\(run.arguments)")
            let keys = Set(object.keys)
            let allowed = try #require(documented[run.section], "JSON.md has no section \(run.section)")
            #expect(keys.isSubset(of: allowed), "\(run.section) prints keys JSON.md does not document: \(keys.subtracting(allowed).sorted())")
            seen.insert(run.section)
            if run.section == "export-jobs", let export = object["export"] as? String {
                runs.append(("import-jobs", "import-jobs", ["import-jobs", export, "--dry-run"] + restored))
            }
        }
        // A failure prints the error document instead.
        let failed = try CofferBinary.run(["backup", "--json", "--db", scratch.child("nowhere.sqlite"), "--media-root", v.mediaRoot, "--repo", repo])
        #expect(failed.status == 2)
        let error = try #require(try JSONSerialization.jsonObject(with: Data(failed.stdout.utf8)) as? [String: Any])
        #expect(Set(error.keys).isSubset(of: documented["error"] ?? []) && error["exit_code"] as? Int == 2, "\(error)")
        seen.insert("error")
        #expect(seen == Set(documented.keys), "JSON.md sections not exercised: \(Set(documented.keys).subtracting(seen))")
    }

    /// Runs coffer under a real pseudo-terminal (util-linux `script`): stdout and stderr are a
    /// tty, unless one of them is sent to a file (`stdoutTo`, `stderrTo`).
    func underTerminal(_ arguments: [String], stdoutTo: String? = nil, stderrTo: String? = nil) throws -> (status: Int32, output: String) {
        func quote(_ word: String) -> String { "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let quoted = ([CofferBinary.url.path] + arguments).map(quote)
            + (stdoutTo.map { [">" + quote($0)] } ?? []) + (stderrTo.map { ["2>" + quote($0)] } ?? [])
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        process.arguments = ["-q", "-e", "-f", "-c", quoted.joined(separator: " "), "/dev/null"]
        process.environment = ["PATH": "/usr/bin:/bin", "HOME": NSTemporaryDirectory(), "TERM": "xterm"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func progressOnlyOnATerminalAndNeverWhenQuiet() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else {
            print("skipped: util-linux's script is missing, no pseudo-terminal to test under")
            return
        }
        let scratch = try Scratch()
        var spec = VolumeSpec()
        spec.jobs = 30
        let v = try VolumeGenerator.generate(spec, dbPath: scratch.child("v/db.sqlite"), mediaRoot: scratch.child("v/media"))
        let repo = scratch.child("repo")
        let flags = ["--db", v.dbPath, "--media-root", v.mediaRoot, "--repo", repo, "--min-free-space-gb", "0", "--alert-free-space-gb", "0"]

        let terminal = try underTerminal(["backup"] + flags)
        #expect(terminal.status == 0, "\(terminal.output)")
        #expect(terminal.output.contains("\rbackup ") && terminal.output.contains("/s, ETA "), "\(terminal.output)")
        let verify = try underTerminal(["verify", "--repo", repo, "--read-data"])
        #expect(verify.output.contains("\rverify ") && verify.output.contains("ETA"), "\(verify.output)")
        // The 3 a.m. restore says how far it is and how long it will take.
        let restore = try underTerminal(["restore", "--repo", repo, "--db", scratch.child("r/db.sqlite"), "--media-root", scratch.child("r/media")])
        #expect(restore.status == 0, "\(restore.output)")
        #expect(restore.output.contains("\rrestore ") && restore.output.contains("/s, ETA "), "\(restore.output)")
        // The progress is on stderr: a terminal's stdout sent to a file (`coffer backup > report`)
        // gets the report alone, while stderr still shows the progress; stderr sent to a file
        // (a log) gets none, nor does the terminal.
        let report = scratch.child("report.txt")
        let toFile = try underTerminal(["backup", "--full"] + flags, stdoutTo: report)
        #expect(toFile.status == 0, "\(toFile.output)")
        #expect(toFile.output.contains("\rbackup ") && toFile.output.contains("/s, ETA "), "\(toFile.output)")
        let reported = try String(contentsOfFile: report, encoding: .utf8)
        #expect(!reported.isEmpty && !reported.contains("\r") && !reported.contains("ETA"), "\(reported)")
        let log = scratch.child("stderr.txt")
        let logged = try underTerminal(["backup", "--full"] + flags, stderrTo: log)
        #expect(logged.status == 0, "\(logged.output)")
        #expect(!logged.output.contains("ETA") && !logged.output.contains("\rbackup"), "\(logged.output)")
        let errors = try String(contentsOfFile: log, encoding: .utf8)
        #expect(!errors.contains("ETA") && !errors.contains("\r"), "\(errors)")

        // A pipe (cron, a script): the report, no progress, no carriage returns.
        let piped = try CofferBinary.run(["backup", "--full"] + flags)
        #expect(piped.status == 0)
        #expect(!piped.stderr.contains("ETA") && !piped.stderr.contains("\r") && !piped.stdout.contains("\r"), "\(piped.stderr)")
        // --quiet on a terminal: nothing at all when all is well.
        let quiet = try underTerminal(["backup", "--full", "--quiet"] + flags)
        #expect(quiet.status == 0)
        #expect(quiet.output.isEmpty, "\(quiet.output)")
        // --json on a terminal: the document alone.
        let json = try underTerminal(["backup", "--json"] + flags)
        #expect(!json.output.contains("ETA"))
        #expect(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) is [String: Any], "\(json.output)")
    }

    /// Errors read `error: operation path: cause` then `hint: ...` on stderr, nothing on stdout.
    @Test func errorsNameTheOperationThePathAndTheNextStep() throws {
        let scratch = try Scratch()
        let missing = scratch.child("nowhere/db.sqlite")
        let result = try CofferBinary.run(["verify", "--db", missing, "--media-root", scratch.path])
        #expect(result.status == 2)
        #expect(result.stdout.isEmpty)
        let lines = result.stderr.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("error: open database \(missing): ") == true, "\(result.stderr)")
        #expect(lines.dropFirst().first?.hasPrefix("hint: ") == true, "\(result.stderr)")
    }
}
