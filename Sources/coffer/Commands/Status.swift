import ArgumentParser
import CofferKit

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Free space, database and WAL size, jobs by status, the oldest unfinished job.",
        discussion: Help.text("""
            Read-only and quick: for a dashboard or a shell prompt. With a repository (--repo or
            COFFER_REPO), also the newest snapshot's age.

            Exit codes: 0 fine, 1 free space below ALERT_FREE_SPACE_GB (or below
            MIN_FREE_SPACE_GB, where the pipeline stops), 2 could not read the volume.

            Examples:
              coffer status --config /srv/pipeline/.env
              coffer status --quiet || echo "free space below ALERT_FREE_SPACE_GB"
            """))

    @OptionGroup var options: GlobalOptions

    func run() throws {
        try CofferCLI.run(options) { output in
            let status = try VolumeStatus.read(try options.configuration())
            return try output.report(status, status: status.status) { status.text() }
        }
    }
}
