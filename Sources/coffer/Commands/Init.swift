import ArgumentParser
import CofferKit

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a fresh volume: the database at the latest schema, library/ and tmp/.",
        discussion: """
            Refuses an existing database that is not empty (exit 2, nothing changed).

            Example: coffer init --db /app/data/db.sqlite --media-root /media
            """)

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
