import ArgumentParser
import CofferKit

struct Snapshots: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the repository's snapshots.",
        discussion: Help.text("""
            Newest last: id, time, host, files, bytes, bytes added, jobs, tags. Damaged records
            are listed apart (`coffer verify --repo` tells more).

            Exit codes: 0 listed, 1 a record is damaged, 2 the repository cannot be read, 3 a
            backup or prune holds the repository, 64 usage.

            Examples:
              coffer snapshots --repo /backup/coffer
              coffer snapshots --repo /backup/coffer --json
            """))

    @OptionGroup var options: GlobalOptions

    func run() throws {
        try CofferCLI.run(options) { output in
            let listing = try SnapshotListing.read(try options.configuration())
            return try output.report(listing, status: listing.damaged.isEmpty ? .ok : .findings) { listing.text() }
        }
    }
}
