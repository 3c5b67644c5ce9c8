import ArgumentParser
import CofferFixtures
import CofferKit
import Foundation
import GRDB

/// `make bench`: Coffer side by side with the tools an operator would otherwise use, on the
/// same generated volume in the same run, as ratios (the machines are shared and noisy).
@main
struct CofferBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coffer-bench",
        abstract: "Benchmark Coffer against sqlite3 + bsdtar, restic, cp and sha256sum.")

    @Option(help: "small (10-13 minutes on a 2-CPU VM, as fast as its disk) or large.") var profile = "small"
    @Option(help: "Measured runs per tool and scenario (after one warm-up).") var runs = 3
    @Option(help: "Scratch folder (default: a new one under TMPDIR).") var scratch: String?
    @Option(help: "Where to write the Markdown results (default: benchmarks/results/DATE-HOST-PROFILE.md).") var out: String?
    @Option(help: "The coffer binary to measure.") var coffer = ".build/release/coffer"

    func run() throws {
        let bench = try Bench(profile: profile, runs: runs, scratch: scratch, coffer: coffer)
        let host = ProcessInfo.processInfo.hostName
        let date = String(ISO8601DateFormatter().string(from: Date()).prefix(10))
        let path = out ?? "benchmarks/results/\(date)-\(host)-\(profile).md"
        bench.checkpoint = { partial in
            try? (partial + "\n_Partial: the run was still going when this was written._\n").write(toFile: path, atomically: true, encoding: .utf8)
        }
        defer { bench.cleanUp() }
        let markdown = try bench.runAll()
        print(markdown)
        try markdown.write(toFile: path, atomically: true, encoding: .utf8)
        FileHandle.standardError.write(Data("results written to \(path)\n".utf8))
    }
}
