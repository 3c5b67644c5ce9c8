import ArgumentParser
import CofferKit

struct ImportJobs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import-jobs",
        abstract: "Load a jobs export (from export-jobs) back into the database.",
        discussion: Help.text("""
            Verifies the manifest's SHA-256 digests and row counts first, then inserts jobs, media
            rows and events in one transaction. Rows already in the database (same id; for media,
            the same job) are reported and left as they are, never duplicated. Any other failure
            rolls everything back.

            Exit codes: 0 done, 2 failed (nothing imported), 64 usage.

            Example: coffer import-jobs /archive/jobs/jobs-20261125T030000Z-3fa9c1d2 --dry-run
            """))

    @OptionGroup var options: GlobalOptions

    @Argument(help: ArgumentHelp("The export folder (jobs-...).", valueName: "export-dir"))
    var exportDirectory: String

    @Flag(help: "Verify the export and report what would be imported, write nothing.")
    var dryRun = false

    func run() throws {
        try CofferCLI.run(options) { output in
            var importer = JobImporter(configuration: try options.configuration(), exportDirectory: exportDirectory)
            importer.dryRun = dryRun
            importer.logger = options.logger("coffer.import")
            let report = try importer.run()
            _ = try output.report(report, status: report.status) { report.text() }
            return report.status
        }
    }
}
