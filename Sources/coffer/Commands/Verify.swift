import ArgumentParser
import CofferKit

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the live volume: database checks, schema, and media rows against the files.",
        discussion: Help.text("""
            Read-only. PRAGMA quick_check (integrity_check with --full), foreign_key_check, the
            schema version, every path the media rows hold, file sizes, COMPLETE jobs without
            video, library files no row refers to, temp directories of unknown or long-finished
            jobs, and free space against the thresholds.

            With --repo REPO it checks a repository instead: every snapshot's references, and with
            --read-data every byte of every pack (the damaged files and the snapshots that depend
            on them are named).

            Exit codes: 0 nothing found, 1 findings, 2 could not run (e.g. not a database), 3 (with
            --repo) a backup or prune holds the repository.

            Example: coffer verify --db /app/data/db.sqlite --media-root /media --json
            """))

    @OptionGroup var options: GlobalOptions
    @OptionGroup var metrics: MetricsOptions

    @Flag(help: "Run PRAGMA integrity_check instead of quick_check (slower, also checks indexes).")
    var full = false

    @Option(help: "With --repo: check only this snapshot (an id, a prefix, or latest: the newest of this volume, or of the only volume in the repository).")
    var snapshot: String?

    @Flag(name: .customLong("read-data"), help: "With --repo: read every pack and re-hash every byte.")
    var readData = false

    func validate() throws {
        if options.repo == nil, snapshot != nil || readData {
            throw ValidationError("--snapshot and --read-data check a repository: add --repo")
        }
    }

    func run() throws {
        // Only --repo on the command line switches to the repository; COFFER_REPO alone does not.
        if options.repo != nil { return try verifyRepository() }
        try CofferCLI.run(options, metrics: metrics, command: "verify") { output in
            let configuration = try options.configuration()
            var verifier = LiveVerifier(configuration: configuration)
            verifier.full = full
            verifier.logger = options.logger("coffer.verify")
            let report = try verifier.run()
            return try output.report(report, status: report.status) { report.text(limit: options.verbose ? nil : 20) }
        }
    }

    func verifyRepository() throws {
        try CofferCLI.run(options, metrics: metrics, command: "verify", repositoryLabel: true) { output in
            let configuration = try options.configuration()
            var verifier = RepositoryVerifier(repository: configuration.repo)
            verifier.volume = .init(dbPath: configuration.layout.dbPath, mediaRoot: configuration.layout.mediaRoot)
            verifier.snapshot = snapshot
            verifier.readData = readData
            verifier.logger = options.logger("coffer.verify")
            verifier.progress = Progress(label: "verify", enabled: readData && !options.quiet && !options.json)
            let report = try verifier.run()
            return try output.report(report, status: report.status) { report.text() }
        }
    }
}
