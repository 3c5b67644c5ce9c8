import ArgumentParser
import CofferKit

struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Forget snapshots the keep rules do not keep, and free the bytes only they used.",
        discussion: Help.text("""
            restic's rules, per volume (host, DB_PATH, MEDIA_ROOT), newest first: --keep-last N
            keeps the N newest; --keep-daily N keeps the newest snapshot of each of the last N days
            that have snapshots; --keep-weekly (ISO weeks), --keep-monthly and --keep-yearly
            likewise. A snapshot kept by one rule counts for all. Days are counted in UTC.

            Packs nothing kept refers to are deleted; packs only partly referred to are rewritten
            with just the entries kept snapshots need (re-hashed on the way). A kill at any moment
            leaves a sound repository; the next prune finishes the work. The repository's
            references are verified afterwards.

            Exit codes: 0 done, 1 the check afterwards found something, 2 failed, 3 the repository
            is locked by another run, 64 usage (no rule given).

            Example: coffer prune --repo /backup/coffer --keep-daily 14 --keep-weekly 8 --keep-monthly 12 --dry-run
            """))

    @OptionGroup var options: GlobalOptions
    @OptionGroup var metrics: MetricsOptions

    @Option(help: "Keep the N newest snapshots.") var keepLast = 0
    @Option(help: "Keep the newest snapshot of each of the last N days with snapshots.") var keepDaily = 0
    @Option(help: "Keep the newest snapshot of each of the last N ISO weeks with snapshots.") var keepWeekly = 0
    @Option(help: "Keep the newest snapshot of each of the last N months with snapshots.") var keepMonthly = 0
    @Option(help: "Keep the newest snapshot of each of the last N years with snapshots.") var keepYearly = 0

    @Flag(help: "Report what would be forgotten and freed, change nothing.")
    var dryRun = false

    func validate() throws {
        if [keepLast, keepDaily, keepWeekly, keepMonthly, keepYearly].contains(where: { $0 < 0 }) {
            throw ValidationError("--keep-* values must be 0 or more")
        }
    }

    func run() throws {
        try CofferCLI.run(options, metrics: metrics, command: "prune", repositoryLabel: true) { output in
            let policy = KeepPolicy(last: keepLast, daily: keepDaily, weekly: keepWeekly, monthly: keepMonthly, yearly: keepYearly)
            var pruner = Pruner(repository: try options.configuration().repo, policy: policy)
            pruner.dryRun = dryRun
            pruner.logger = options.logger("coffer.prune")
            let report = try pruner.run()
            return try output.report(report, status: report.status) { report.text() }
        }
    }
}
