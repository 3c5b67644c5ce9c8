import CofferFixtures
import CofferKit
import Foundation

/// A generated volume in a temp directory, with a configuration pointing at it.
struct TestVolume {
    let directory: TemporaryDirectory
    let generated: GeneratedVolume
    var dbPath: String { generated.dbPath }
    var mediaRoot: String { generated.mediaRoot }

    init(jobs: Int = 40, seed: UInt64 = 7, hostile: Bool = true, schema: VolumeSpec.SchemaStyle = .pipeline,
         largeFile: Bool = false, maxFileBytes: Int = 4096, videoSizes: [Int] = [], base: String? = nil) throws {
        directory = try TemporaryDirectory("coffer-volume", base: base)
        var spec = VolumeSpec()
        spec.jobs = jobs
        spec.seed = seed
        spec.hostileNames = hostile
        spec.schema = schema
        spec.largeFile = largeFile
        spec.maxFileBytes = maxFileBytes
        spec.videoSizes = videoSizes
        generated = try VolumeGenerator.generate(spec, dbPath: directory.child("data/db.sqlite"), mediaRoot: directory.child("media"))
    }

    /// Settings for this volume; thresholds 0 so the machine's free space never shows.
    func configuration(_ extra: [SettingKey: String] = [:]) throws -> CofferConfiguration {
        var flags: [SettingKey: String] = [.dbPath: dbPath, .mediaRoot: mediaRoot, .minFreeSpaceGB: "0", .alertFreeSpaceGB: "0"]
        flags.merge(extra) { $1 }
        return try CofferConfiguration.resolve(flags: flags, environment: [:])
    }

    func verify(full: Bool = false, _ extra: [SettingKey: String] = [:]) throws -> VerifyReport {
        var verifier = LiveVerifier(configuration: try configuration(extra))
        verifier.full = full
        return try verifier.run()
    }
}

extension VerifyReport {
    func findings(_ kind: Finding.Kind) -> [Finding] { findings.filter { $0.kind == kind } }

    /// A readable list for test failure messages.
    var findingList: String { findings.map { "\($0.kind.rawValue) \($0.jobID ?? "-") \($0.path ?? "-") \($0.actual ?? "")" }.joined(separator: "\n") }
}
