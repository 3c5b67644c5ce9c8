import ArgumentParser
import CofferKit

struct Cleanup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove temp directories past the pipeline's retention.",
        discussion: Help.text("""
            The pipeline's rules: a COMPLETE job's temp directory goes 24 hours after it finished,
            a FAILED or CANCELED job's after 7 days, one whose job the database does not know after
            24 hours without a change. A directory of a job that is not finished is never touched,
            and each job is looked up again right before its directory is removed. Symlinks in the
            temp root are neither followed nor removed. The database is only read.

            Exit codes: 0 done (or nothing to do), 1 a directory could not be removed completely,
            2 failed (the database or temp root cannot be read; nothing removed), 64 usage.

            Example: coffer cleanup --dry-run
            """))

    @OptionGroup var options: GlobalOptions
    @OptionGroup var metrics: MetricsOptions

    @Flag(help: "Report what would be removed, remove nothing.")
    var dryRun = false

    func run() throws {
        try CofferCLI.run(options, metrics: metrics, command: "cleanup") { output in
            var cleanup = TempCleanup(configuration: try options.configuration())
            cleanup.dryRun = dryRun
            cleanup.logger = options.logger("coffer.cleanup")
            let report = try cleanup.run()
            return try output.report(report, status: report.status) { report.text() }
        }
    }
}
