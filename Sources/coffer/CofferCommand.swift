import ArgumentParser
import CofferKit
import Logging

@main
struct CofferCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coffer",
        abstract: "Back up, verify, restore and archive the media pipeline's database and media tree.",
        discussion: """
            Settings come from flags, then the environment, then --config FILE, then defaults;
            `coffer config` shows each value and its source.

            Exit codes: 0 done / nothing found, 1 findings, 2 failed (nothing half-done),
            3 locked by another run, 64 usage or configuration error, 130 interrupted.
            """,
        version: CofferVersion.description,
        subcommands: [Init.self, ConfigCommand.self, Status.self, Verify.self, Backup.self, Snapshots.self, Restore.self, DrillCommand.self, Cleanup.self, ExportJobs.self, ImportJobs.self, Prune.self, Migrate.self]
    )

    /// Logs go to stderr, so stdout holds only a command's report (or its JSON document).
    static func main() {
        #if os(Linux)
        // Buffers of 4 MiB and more (an object store's upload parts and read windows) are mapped
        // and unmapped on their own: one released goes back to the system instead of staying in
        // malloc's heaps beside the next (peak memory of an S3 restore: 71 → 59 MiB).
        _ = glibcMallopt(-3 /* M_MMAP_THRESHOLD */, 4 << 20)
        #endif
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        Interruption.install()
        do {
            var command = try parseAsRoot(nil)
            try command.run()
        } catch {
            // A usage error the parser found (an unknown flag, a missing option), with --json:
            // stdout still holds one JSON document, as for Coffer's own usage errors. (Those
            // come back as an ExitCode, their document already printed.)
            if !(error is ExitCode), exitCode(for: error).rawValue == ExitCode.validationFailure.rawValue,
               CommandLine.arguments.dropFirst().contains("--json") {
                let document = ErrorDocument(error: message(for: error), hint: "`coffer help` lists the commands and their options",
                                             exitCode: ExitCode.validationFailure.rawValue)
                print((try? Formatting.json(document)) ?? "{}")
            }
            exit(withError: error)
        }
    }
}

#if os(Linux)
/// glibc's `mallopt` (malloc.h is not part of Swift's Glibc module).
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif
