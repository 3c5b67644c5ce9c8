import ArgumentParser
import CofferFixtures
import CofferKit
import Foundation

/// Builds a realistic volume for tests, the demo and the benchmarks.
@main
struct CofferFixturesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coffer-fixtures",
        abstract: "Generate a realistic pipeline volume (database + media tree).",
        discussion: "The same --seed gives the same volume. The database and media root must not exist yet.")

    @Option(help: "Database file to create.") var db: String
    @Option(name: .customLong("media-root"), help: "Media root to create.") var mediaRoot: String
    @Option(help: "Number of jobs.") var jobs = 60
    @Option(help: "Seed of the generator.") var seed: UInt64 = 1
    @Option(name: .customLong("max-file-bytes"), help: "Largest media file, in bytes.") var maxFileBytes = 48 * 1024
    @Option(help: "How the schema is made: pipeline (no history) or coffer (coffer init).") var schema = "pipeline"
    @Flag(name: .customLong("plain-names"), help: "Only ordinary names (no hostile ones).") var plainNames = false
    @Flag(name: .customLong("large-file"), help: "Add one sparse video over 4 GiB.") var largeFile = false
    @Flag(name: .customLong("with-problems"), help: "Plant one problem of each kind coffer verify finds.") var withProblems = false

    func run() throws {
        guard let style = VolumeSpec.SchemaStyle(rawValue: schema) else {
            throw ValidationError("--schema must be pipeline or coffer")
        }
        for path in [db, mediaRoot] where FileManager.default.fileExists(atPath: path) {
            throw ValidationError("\(path) exists already: the generator only makes new volumes")
        }
        var spec = VolumeSpec()
        spec.jobs = jobs
        spec.seed = seed
        spec.maxFileBytes = maxFileBytes
        spec.schema = style
        spec.hostileNames = !plainNames
        spec.largeFile = largeFile
        let started = Date()
        let volume = try VolumeGenerator.generate(spec, dbPath: db, mediaRoot: mediaRoot)
        print("generated \(volume.jobs) jobs (\(volume.jobsByStatus.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")))")
        print("  \(volume.mediaRows) media rows, \(volume.events) events, \(volume.files) files (\(Formatting.bytes(volume.bytes))), \(volume.tempDirectories) temp dirs in \(Formatting.seconds(Date().timeIntervalSince(started)))")
        if withProblems {
            let planted = try ProblemPlanter.plantAll(in: volume)
            print("  planted \(planted.count) problems: " + planted.map(\.kind.rawValue).joined(separator: ", "))
        }
    }
}
