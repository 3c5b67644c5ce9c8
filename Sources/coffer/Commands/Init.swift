import ArgumentParser
import CofferKit

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a fresh volume: the database at the latest schema, library/ and tmp/.",
        discussion: Help.text("""
            Refuses an existing database that is not empty (exit 2, nothing changed).

            Exit codes: 0 created (or already a fresh volume), 2 failed or refused (nothing
            changed), 64 usage.

            Example: coffer init --db /app/data/db.sqlite --media-root /media
            """))

    @OptionGroup var options: GlobalOptions

    @Flag(help: "Show what would be created, create nothing.")
    var dryRun = false

    func run() throws {
        try CofferCLI.run(options) { output in
            let report = try VolumeInitializer.initialize(try options.configuration().layout, dryRun: dryRun)
            try output.json(report)
            let verb = dryRun ? "would create" : "created"
            output.text(report.created.map { "\(verb) \($0)" }.joined(separator: "\n")
                        + "\nschema version \(report.schemaVersion)")
            return .ok
        }
    }
}
