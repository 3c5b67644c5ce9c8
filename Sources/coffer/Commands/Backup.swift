import ArgumentParser
import CofferKit

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Take one consistent snapshot of the database and the media into the repository.",
        discussion: Help.text("""
            The database is copied with SQLite's online backup API while the pipeline writes;
            then library/ and every file the copy refers to are stored. Files unchanged since the
            previous snapshot (path, size, mtime, inode) are not read again. One run at a time per
            repository. Silent under cron unless something is wrong (--quiet).

            Exit codes: 0 done, 1 done but a file was missing, unreadable or changed while read
            (recorded in the snapshot), 2 failed (no snapshot written), 3 another run holds the lock,
            64 usage, 130 stopped by SIGINT or SIGTERM (nothing written, the lock released).

            Example: coffer backup --repo /backup/coffer --tag nightly
            """))

    @OptionGroup var options: GlobalOptions
    @OptionGroup var metrics: MetricsOptions

    @Flag(help: "Read and store every file again: a self-contained pack.")
    var full = false

    @Option(help: "A label kept with the snapshot (repeatable).")
    var tag: [String] = []

    @Flag(help: "Check and estimate, write nothing.")
    var dryRun = false

    func run() throws {
        try CofferCLI.run(options, metrics: metrics, command: "backup", repositoryLabel: true) { output in
            Interruption.cooperate()
            var runner = BackupRunner(configuration: try options.configuration())
            runner.full = full
            runner.tags = tag
            runner.dryRun = dryRun
            runner.logger = options.logger("coffer.backup")
            runner.progress = Progress(label: "backup", enabled: !options.quiet && !options.json)
            let report = try runner.run()
            var shell = report
            shell.problems = []
            return try output.report(report, shell: shell, list: "problems", elements: report.problems, status: report.status) {
                report.text(limit: options.verbose ? nil : 20)
            }
        }
    }
}
