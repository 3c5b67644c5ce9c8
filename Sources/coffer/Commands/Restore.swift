import ArgumentParser
import CofferKit

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restore a snapshot into a fresh volume (a database path and a media root).",
        discussion: Help.text("""
            The targets must be missing or empty (or --force). Everything is staged beside the
            targets, re-hashed, and renamed into place only when all of it matches; paths in the
            database are rewritten from the snapshot's MEDIA_ROOT to the new one; the restored
            volume is then verified (integrity_check, foreign keys, reconciliation).

            Exit codes: 0 restored and verified clean, 1 restored but the check found something,
            2 failed (targets untouched), 3 a backup holds the repository or another restore or
            drill is writing into the same folder, 64 usage, 130 stopped by SIGINT or SIGTERM (targets
            untouched, staging removed).

            Example: coffer restore --repo /backup/coffer --snapshot latest --db /new/db.sqlite --media-root /new/media
            """))

    @OptionGroup var options: GlobalOptions

    @Option(help: "The snapshot: an id, a unique prefix of one, or latest (the newest of this volume, or of the only volume in the repository).")
    var snapshot = "latest"

    @Option(help: "Restore only the database (db) or only the media (media).")
    var only: String?

    @Flag(help: "Write into targets that are not empty (replaces the database, overwrites files of the same name).")
    var force = false

    @Flag(help: "Check the snapshot and the targets, write nothing.")
    var dryRun = false

    func validate() throws {
        if let only, Restorer.Part(rawValue: only) == nil { throw ValidationError("--only must be db or media") }
    }

    func run() throws {
        try CofferCLI.run(options) { output in
            Interruption.cooperate()
            var restorer = Restorer(configuration: try options.configuration())
            restorer.snapshot = snapshot
            restorer.only = only.flatMap(Restorer.Part.init(rawValue:))
            restorer.force = force
            restorer.dryRun = dryRun
            restorer.logger = options.logger("coffer.restore")
            restorer.progress = Progress(label: "restore", enabled: !options.quiet && !options.json)
            let report = try restorer.run()
            return try output.report(report, status: report.status) { report.text() }
        }
    }
}
