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
}
