import ArgumentParser
import CofferKit

struct DrillCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drill",
        abstract: "Rehearse a restore: restore a snapshot into a scratch folder, check it, report RTO and RPO, remove it.",
        discussion: Help.text("""
            Restores the snapshot into a fresh hidden folder (.coffer-drill-ID-PID) inside
            --scratch, or beside MEDIA_ROOT by default: the filesystem a real restore would use.
            Checks what a switch-over would need (integrity_check, foreign keys, reconciliation of
            the media rows with the restored files), reads every restored file back and re-hashes
            it against the snapshot, reports the restore time (RTO) and the snapshot's age (RPO),
            and removes the scratch folder whatever happened (and any a killed drill left). It
            refuses to start when the copy would push that filesystem below MIN_FREE_SPACE_GB. The live volume and the repository
            are only read. Meant for a weekly timer: a backup never restored is not a backup.

            Exit codes: 0 the drill passed, 1 the restore failed (a damaged pack, a write error) or
            its result is not sound (findings listed; those the snapshot had already recorded when
            it was taken are counted apart), 2 could not run (no room for the scratch copy without
            going below MIN_FREE_SPACE_GB there, an unreadable repository), 3 the repository is
            locked by a prune, 64 usage, 130 stopped by SIGINT or SIGTERM (scratch removed).

            Example: coffer drill --repo /backup/coffer --metrics-file /var/lib/node_exporter/textfile_collector/coffer.prom
            """))

    @OptionGroup var options: GlobalOptions
    @OptionGroup var metrics: MetricsOptions

    @Option(help: "The snapshot: an id, a unique prefix of one, or latest (the newest of this volume, or of the only volume in the repository).")
    var snapshot = "latest"

    @Option(help: ArgumentHelp("An existing folder to restore into (default: the folder holding MEDIA_ROOT).", valueName: "dir"))
    var scratch: String?

    func run() throws {
        try CofferCLI.run(options, metrics: metrics, command: "drill", repositoryLabel: true) { output in
            Interruption.cooperate()
            var drill = Drill(configuration: try options.configuration())
            drill.snapshot = snapshot
            drill.scratch = scratch
            drill.logger = options.logger("coffer.drill")
            drill.progress = Progress(label: "drill", enabled: !options.quiet && !options.json)
            let report = try drill.run()
            return try output.report(report, status: report.status) { report.text() }
        }
    }
}
