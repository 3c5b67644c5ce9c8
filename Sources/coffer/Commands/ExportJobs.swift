import ArgumentParser
import CofferKit

struct ExportJobs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-jobs",
        abstract: "Export old finished jobs (with their media rows and events) to CSV, optionally purging them.",
        discussion: Help.text("""
            Selects COMPLETE, FAILED and CANCELED jobs (--status narrows) created before now minus
            --older-than, never an unfinished job. Writes jobs.csv, media.csv, job_events.csv and
            manifest.json into a new folder under --out, which appears whole or not at all.
            CSV: RFC 4180, UTF-8, CRLF, a header row, every column in schema order; NULL is an
            empty unquoted field, the empty string is "" (PostgreSQL's COPY ... CSV convention).
            BLOBs and TEXT that is not UTF-8 are written as \\x and hex, listed in the manifest.

            --purge deletes the exported jobs, their media rows and events, in one transaction, only
            after the files were fsynced, read back and counted; if the database changed since the
            export, nothing is deleted (exit 2) and running again finishes the work.
            --delete-media then removes the files those rows referred to and the jobs' temp folders.

            Exit codes: 0 done, 2 failed (nothing purged), 3 another export into --out is running,
            64 usage, 130 stopped by SIGINT or SIGTERM before the export was published (nothing
            written, nothing purged).

            Example: coffer export-jobs --older-than 30d --out /archive/jobs --purge
            """))

    @OptionGroup var options: GlobalOptions
    @OptionGroup var metrics: MetricsOptions

    @Option(help: ArgumentHelp("Only jobs created longer ago than this: 45s, 90m, 12h, 30d, 2w.", valueName: "duration"))
    var olderThan = "30d"

    @Option(help: ArgumentHelp("The folder that receives the export folder (created if missing).", valueName: "dir"))
    var out: String

    @Option(help: ArgumentHelp("Only these finished statuses, comma-separated.", valueName: "S,..."))
    var status: String?

    @Flag(help: "Delete the exported jobs from the database once the export is safely on disk.")
    var purge = false

    @Flag(help: "With --purge: also delete those jobs' media files and temp folders, after the commit.")
    var deleteMedia = false

    @Flag(help: "Prefix cells starting with = + - @ TAB or CR with ' (changes data: not usable with --purge).")
    var spreadsheetSafe = false

    @Flag(help: "Report what would be exported and purged, touch nothing.")
    var dryRun = false

    func run() throws {
        try CofferCLI.run(options, metrics: metrics, command: "export-jobs") { output in
            Interruption.cooperate()
            var exporter = JobExporter(configuration: try options.configuration(), olderThan: try RetentionAge(parsing: olderThan),
                                       outDirectory: out)
            if let status { exporter.statuses = status.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).uppercased() } }
            exporter.purge = purge
            exporter.deleteMedia = deleteMedia
            exporter.spreadsheetSafe = spreadsheetSafe
            exporter.dryRun = dryRun
            exporter.logger = options.logger("coffer.export")
            let report = try exporter.run()
            _ = try output.report(report, status: report.status) { report.text() }
            return report.status
        }
    }
}
