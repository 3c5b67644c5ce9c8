import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One timed run of a command: wall time and the peak RSS of the process tree.
///
/// The RSS comes from GNU time (`/usr/bin/time -f %M`), which forks the command itself: on
/// Linux a process spawned straight from this one inherits this process's high-water mark
/// in its `ru_maxrss` (exec keeps the largest of the old and new address space's), so every
/// tool smaller than the harness (which grows while it generates volumes) would read as big as
/// the harness. Without GNU time, `wait4` is used and the column says so.
struct Sample {
    var seconds: Double
    var peakRSSKiB: Int
    var status: Int32
    /// Set for a run whose exit 1 means the output is wrong (`coffer verify` finding damage in
    /// a repository the benchmark just wrote), not "done, with findings".
    var wrong = false

    /// This run, with exit 1 counted as a failure.
    func failingOnFindings() -> Sample {
        var sample = self
        sample.wrong = status == 1
        return sample
    }
}

enum Measure {
    /// Runs `command` (argv) with extra environment, waits, and measures it.
    static let gnuTime = FileManager.default.isExecutableFile(atPath: "/usr/bin/time") ? "/usr/bin/time" : nil

    static func run(_ command: [String], environment: [String: String] = [:], quiet: Bool = true) -> Sample {
        var command = command
        let rssFile = NSTemporaryDirectory() + "coffer-bench-rss-\(getpid())"
        if let gnuTime { command = [gnuTime, "-q", "-f", "%M", "-o", rssFile] + command }
        defer { unlink(rssFile) }
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { $1 }
        let argv = command.map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { argv.forEach { free($0) }; envp.forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if quiet {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        var pid: pid_t = 0
        let started = Date()
        guard posix_spawnp(&pid, command[0], &actions, nil, argv, envp) == 0 else {
            return Sample(seconds: 0, peakRSSKiB: 0, status: 127)
        }
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
        let seconds = Date().timeIntervalSince(started)
        // On Linux, wait4's ru_maxrss covers the child and the descendants it waited for, so a
        // shell pipeline reports its largest member.
        let exit = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        var rss = max(Int(usage.ru_maxrss), 0)
        if gnuTime != nil, let text = try? String(contentsOfFile: rssFile, encoding: .utf8),
           let measured = text.split(whereSeparator: \.isNewline).last.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }) {
            rss = measured
        }
        return Sample(seconds: seconds, peakRSSKiB: rss, status: exit)
    }

    static func shell(_ script: String, environment: [String: String] = [:]) -> Sample {
        run(["/bin/sh", "-c", script], environment: environment)
    }
}

/// Medians, minima and maxima of repeated samples.
struct Series {
    var samples: [Sample] = []
    var median: Double { let s = samples.map(\.seconds).sorted(); return s.isEmpty ? 0 : s[s.count / 2] }
    var min: Double { samples.map(\.seconds).min() ?? 0 }
    var max: Double { samples.map(\.seconds).max() ?? 0 }
    var peakRSSMiB: Double { Double(samples.map(\.peakRSSKiB).max() ?? 0) / 1024 }
    /// Exit 1 is "done, with findings" for Coffer (unless the run says otherwise); anything
    /// above is a failure.
    var failed: Bool { samples.contains { $0.status > 1 || $0.wrong } }
}
