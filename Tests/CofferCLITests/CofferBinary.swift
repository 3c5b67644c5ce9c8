import CofferFixtures
import Foundation

/// Runs the built `coffer` executable, as an operator or cron would.
struct CofferBinary {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        /// The process ended by a signal (a crash), not by exiting.
        var crashed: Bool
    }

    /// The executable beside the test bundle in the build folder.
    static let url: URL = {
        let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var directory = testBinary.deletingLastPathComponent()
        while directory.path != "/" {
            let candidate = directory.appendingPathComponent("coffer")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        fatalError("the coffer executable is not built: run `swift build` (make test does) before the tests")
    }()

    /// A clean environment with `environment` added: the machine's own DB_PATH or MEDIA_ROOT
    /// must not leak in.
    static func cleanEnvironment(_ environment: [String: String]) -> [String: String] {
        ["PATH": "/usr/bin:/bin", "HOME": NSTemporaryDirectory()].merging(environment) { $1 }
    }

    /// Starts `coffer arguments...` in the background (its output discarded), for a test that
    /// acts while it runs (kills it, starts another beside it); the caller waits for it.
    static func start(_ arguments: [String], environment: [String: String] = [:]) throws -> Process {
        let process = Process()
        process.executableURL = url
        process.arguments = arguments
        process.environment = cleanEnvironment(environment)
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Runs `coffer arguments...`; with `wrapper`, runs `wrapper... coffer arguments...`
    /// (e.g. `setpriv` to run it as another user).
    /// `executable`: another program of the build folder (`coffer-fixtures`) instead of coffer.
    static func run(_ arguments: [String], environment: [String: String] = [:], workingDirectory: String? = nil,
                    wrapper: [String] = [], executable: String? = nil) throws -> Result {
        let process = Process()
        let program = executable ?? url.path
        if let tool = wrapper.first {
            process.executableURL = URL(fileURLWithPath: tool)
            process.arguments = Array(wrapper.dropFirst()) + [program] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: program)
            process.arguments = arguments
        }
        process.environment = cleanEnvironment(environment)
        if let workingDirectory { process.currentDirectoryURL = URL(fileURLWithPath: workingDirectory) }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read both pipes while the process runs, so a long output cannot block it.
        final class Box: @unchecked Sendable { var data = Data() }
        let outBox = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { outBox.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        let outData = outBox.data
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self),
                      crashed: process.terminationReason == .uncaughtSignal)
    }
}

extension Process {
    /// Asks `condition` up to `attempts` times, `interval` seconds apart, while the process
    /// runs: whether it held before the process ended (or the attempts ran out).
    func whileRunning(attempts: Int, every interval: Double, until condition: () throws -> Bool) rethrows -> Bool {
        for _ in 0..<attempts where isRunning {
            if try condition() { return true }
            Thread.sleep(forTimeInterval: interval)
        }
        return false
    }
}

/// A temp folder for one test, removed afterwards unless COFFER_KEEP_TEMP is set.
final class Scratch {
    let path: String
    init() throws {
        var template = Array((NSTemporaryDirectory() as NSString).appendingPathComponent("coffer-cli.XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw CocoaError(.fileWriteUnknown) }
        path = String(cString: made)
    }
    deinit {
        if ProcessInfo.processInfo.environment["COFFER_KEEP_TEMP"] != nil { print("kept \(path)"); return }
        try? FileManager.default.removeItem(atPath: path)
    }
    func child(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
}

/// A generated volume in `scratch/v` and the flags that point Coffer at it and at
/// `scratch/repo` (thresholds at 0: the test machine's disk is not the subject).
func cliVolume(_ scratch: Scratch, jobs: Int, videoSizes: [Int] = []) throws -> (flags: [String], repo: String) {
    var spec = VolumeSpec()
    spec.jobs = jobs
    spec.videoSizes = videoSizes
    let generated = try VolumeGenerator.generate(spec, dbPath: scratch.child("v/db.sqlite"), mediaRoot: scratch.child("v/media"))
    let repo = scratch.child("repo")
    return (["--db", generated.dbPath, "--media-root", generated.mediaRoot, "--repo", repo,
             "--min-free-space-gb", "0", "--alert-free-space-gb", "0"], repo)
}

/// A command's `--json` document.
func jsonObject(_ text: String) throws -> [String: Any] {
    guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
        throw CocoaError(.propertyListReadCorrupt)
    }
    return object
}
