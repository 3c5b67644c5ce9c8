import ArgumentParser
import CofferKit

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the live volume: database checks, schema, and media rows against the files.",
        discussion: """
            Read-only. PRAGMA quick_check (integrity_check with --full), foreign_key_check, the
            schema version, every path the media rows hold, file sizes, COMPLETE jobs without
            video, library files no row refers to, temp directories of unknown or long-finished
            jobs, and free space against the thresholds.

            Exit codes: 0 nothing found, 1 findings, 2 could not run (e.g. not a database).

            Example: coffer verify --db /app/data/db.sqlite --media-root /media --json
            """)

    @OptionGroup var options: GlobalOptions

    @Flag(help: "Run PRAGMA integrity_check instead of quick_check (slower, also checks indexes).")
    var full = false

    func run() throws {
        try CofferCLI.run(options) { output in
            let configuration = try options.configuration()
            var verifier = LiveVerifier(configuration: configuration)
            verifier.full = full
            verifier.logger = options.logger("coffer.verify")
            let report = try verifier.run()
            try output.json(report)
            if report.status == .ok || !options.quiet {
                output.text(report.text(limit: options.verbose ? nil : 20))
            }
            return report.status
        }
    }
}
