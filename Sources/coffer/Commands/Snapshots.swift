import ArgumentParser
import CofferKit

struct Snapshots: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the repository's snapshots.",
        discussion: "Example: coffer snapshots --repo /backup/coffer --json")

    @OptionGroup var options: GlobalOptions

    func run() throws {
        try CofferCLI.run(options) { output in
            let listing = try SnapshotListing.read(try options.configuration())
            try output.json(listing)
            output.text(listing.text())
            return listing.damaged.isEmpty ? .ok : .findings
        }
    }
}
