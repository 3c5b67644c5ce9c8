import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What one run of a command did, for `--metrics-file`.
public struct RunFigures: Sendable, Equatable {
    public var repository: String?
    public var bytesRead: Int64?
    public var bytesWritten: Int64?
    public var files: Int?
    public var findings: Int?
    /// A dry run: nothing is recorded (it would pass for a success).
    public var dryRun = false
    /// A backup that wrote its snapshot (exit 0, or 1 with files recorded as problems).
    public var snapshotWritten = false
    /// Command-specific gauges (`coffer_drill_restore_seconds`...): name, help, value.
    public var extra: [Gauge] = []

    public struct Gauge: Sendable, Equatable {
        public var name: String
        public var help: String
        public var value: Double
        public init(name: String, help: String, value: Double) { self.name = name; self.help = help; self.value = value }
    }

    public init(repository: String? = nil, bytesRead: Int64? = nil, bytesWritten: Int64? = nil, files: Int? = nil,
                findings: Int? = nil, dryRun: Bool = false, snapshotWritten: Bool = false, extra: [Gauge] = []) {
        self.repository = repository; self.bytesRead = bytesRead; self.bytesWritten = bytesWritten
        self.files = files; self.findings = findings; self.dryRun = dryRun; self.snapshotWritten = snapshotWritten
        self.extra = extra
    }
}

/// A report that has figures for the metrics file.
public protocol MetricsReporting {
    var figures: RunFigures { get }
}

/// The Prometheus text format for node_exporter's textfile collector: one file, shared by every
/// Coffer command that is given it. A run replaces its own series (same `command` and
/// `repository` labels) and keeps everyone else's; a failed run keeps the last success time
/// it finds. Written whole (temporary file, fsync, rename), under a lock on the folder so two
/// commands finishing together do not drop each other's series.
public enum MetricsFile {
    public struct Run: Sendable {
        public var command: String
        public var exitCode: Int32
        public var started: Date
        public var finished: Date
        public var figures: RunFigures

        public init(command: String, exitCode: Int32, started: Date, finished: Date, figures: RunFigures) {
            self.command = command; self.exitCode = exitCode; self.started = started; self.finished = finished; self.figures = figures
        }
    }

    /// Checks, before a command runs, that the metrics file can be written: a `.prom` name (the
    /// only files the textfile collector reads; it also keeps a typo from overwriting another
    /// file), an existing folder, and an existing file that is a metrics file. The caller warns
    /// and runs the command without metrics: a backup must not be lost to a monitoring problem.
    public static func check(_ path: String) throws {
        let hint = "point --metrics-file into node_exporter's textfile folder (e.g. /var/lib/node_exporter/textfile_collector/coffer.prom)"
        guard path.hasSuffix(".prom") else {
            throw CofferError(.usage, operation: "write metrics", subject: path, cause: "the name does not end in .prom", hint: hint)
        }
        let folder = PathText.parent(path)
        guard case .success(let info) = FileSystem.status(Array(folder.utf8), followLinks: true), info.kind == .directory else {
            throw CofferError(.usage, operation: "write metrics", subject: path, cause: "its folder \(folder) does not exist", hint: hint)
        }
        if case .success = FileSystem.status(path) {
            _ = try existing(path)
        }
    }

    /// The text of an existing metrics file; throws when it cannot be read or is not one (its
    /// series would be lost, or another file overwritten).
    static func existing(_ path: String) throws -> String? {
        guard case .success(let info) = FileSystem.status(Array(path.utf8), followLinks: true) else { return nil }
        guard info.kind == .regular else {
            throw CofferError(.usage, operation: "write metrics", subject: path, cause: "not a regular file")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CofferError(.failed, operation: "read metrics", subject: path, cause: "cannot be read", hint: "check its permissions")
        }
        let text = String(decoding: data, as: UTF8.self)
        for line in lines(text) where !line.isEmpty && !line.hasPrefix("#") {
            guard let sample = parse(line), Double(sample.value) != nil || ["NaN", "+Inf", "-Inf"].contains(sample.value) else {
                throw CofferError(.usage, operation: "write metrics", subject: path,
                                  cause: "holds a line that is not Prometheus text format: \(line.prefix(60))",
                                  hint: "give a file of its own (e.g. coffer.prom); Coffer does not overwrite other files")
            }
        }
        return text
    }

    static func lines(_ text: String) -> [String] {
        // "\r\n" is one Character in Swift: both line ends are split on.
        text.split(omittingEmptySubsequences: true) { $0 == "\n" || $0 == "\r\n" }.map(String.init)
    }

    /// Merges `run` into the file at `path` (created if missing).
    public static func record(_ run: Run, at path: String) throws {
        let folder = PathText.parent(path)
        let folderFD = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard folderFD >= 0 else { throw CofferError.system("open", folder, errno: errno) }
        defer { close(folderFD) }
        while flock(folderFD, LOCK_EX) != 0 {
            guard errno == EINTR else { throw CofferError.system("lock", folder, errno: errno) }
        }
        let text = render(run, existing: try existing(path))
        let base = PathText.lastComponent(path)
        let temporary = folder + "/." + base + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CofferError.system("create", temporary, errno: errno) }
        do {
            defer { close(fd) }
            // Readable by node_exporter whatever the umask.
            guard fchmod(fd, 0o644) == 0 else { throw CofferError.system("set permissions of", temporary, errno: errno) }
            let bytes = Array(text.utf8)
            try bytes.withUnsafeBytes { try RawIO.writeAll(fd, $0.baseAddress!, $0.count, path: temporary) }
            try RawIO.sync(fd, path: temporary)
        } catch {
            unlink(temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw CofferError.system("rename into", path, errno: code)
        }
        try FileSystem.syncDirectory(folder)
    }

    struct Sample: Equatable {
        var name: String
        var labels: [(String, String)]
        var value: String

        static func == (a: Sample, b: Sample) -> Bool {
            a.name == b.name && a.value == b.value && a.labels.elementsEqual(b.labels) { $0 == $1 }
        }

        func label(_ key: String) -> String? { labels.first { $0.0 == key }?.1 }
    }

    struct Family {
        var help: String?
        var type: String?
        var samples: [Sample] = []
    }

    static let families: [(name: String, help: String)] = [
        ("coffer_last_run_timestamp_seconds", "When the command last finished, whatever its outcome (Unix time)."),
        ("coffer_last_success_timestamp_seconds", "When the command last finished with exit code 0 (Unix time)."),
        ("coffer_last_snapshot_timestamp_seconds", "When a backup last wrote a snapshot (exit 0, or 1 with files recorded as problems)."),
        ("coffer_last_exit_code", "Exit code of the last run: 0 ok, 1 findings, 2 failed, 3 locked, 64 usage, 130 interrupted."),
        ("coffer_last_duration_seconds", "How long the last run took."),
        ("coffer_last_bytes_read", "Bytes the last run read (media, packs)."),
        ("coffer_last_bytes_written", "Bytes the last run wrote (pack, export, restore) or freed (cleanup, prune)."),
        ("coffer_last_files", "Files the last run handled."),
        ("coffer_last_findings", "Findings or problems the last run reported."),
    ]

    /// The file's new text: `existing` with this run's series replaced.
    static func render(_ run: Run, existing: String?) -> String {
        var order: [String] = []
        var byName: [String: Family] = [:]
        func family(_ name: String) -> Family {
            if byName[name] == nil { order.append(name); byName[name] = Family() }
            return byName[name]!
        }
        for line in lines(existing ?? "") {
            if line.hasPrefix("# HELP ") || line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ", maxSplits: 1)
                guard let name = parts.first.map(String.init) else { continue }
                _ = family(name)
                if line.hasPrefix("# HELP ") { byName[name]!.help = parts.count > 1 ? String(parts[1]) : "" } else { byName[name]!.type = parts.count > 1 ? String(parts[1]) : nil }
            } else if !line.hasPrefix("#"), let sample = parse(line) {
                _ = family(sample.name)
                byName[sample.name]!.samples.append(sample)
            }
        }
        var labels = [("command", run.command)]
        if let repository = run.figures.repository { labels.append(("repository", repository)) }
        func isOurs(_ sample: Sample) -> Bool {
            sample.label("command") == run.command && sample.label("repository") == run.figures.repository
        }
        let previousSuccess = byName["coffer_last_success_timestamp_seconds"]?.samples.first(where: isOurs)?.value
        let previousSnapshot = byName["coffer_last_snapshot_timestamp_seconds"]?.samples.first(where: isOurs)?.value
        for name in order { byName[name]!.samples.removeAll(where: isOurs) }

        func set(_ name: String, help: String, _ value: String?) {
            guard let value else { return }
            _ = family(name)
            if byName[name]!.help == nil { byName[name]!.help = help }
            byName[name]!.type = "gauge"
            byName[name]!.samples.append(Sample(name: name, labels: labels, value: value))
        }
        let help = Dictionary(uniqueKeysWithValues: families.map { ($0.name, $0.help) })
        let figures = run.figures
        set("coffer_last_run_timestamp_seconds", help: help["coffer_last_run_timestamp_seconds"]!, number(run.finished.timeIntervalSince1970))
        set("coffer_last_success_timestamp_seconds", help: help["coffer_last_success_timestamp_seconds"]!,
            run.exitCode == 0 ? number(run.finished.timeIntervalSince1970) : previousSuccess)
        if run.command == "backup" {
            set("coffer_last_snapshot_timestamp_seconds", help: help["coffer_last_snapshot_timestamp_seconds"]!,
                figures.snapshotWritten ? number(run.finished.timeIntervalSince1970) : previousSnapshot)
        }
        set("coffer_last_exit_code", help: help["coffer_last_exit_code"]!, String(run.exitCode))
        set("coffer_last_duration_seconds", help: help["coffer_last_duration_seconds"]!, number(run.finished.timeIntervalSince(run.started)))
        set("coffer_last_bytes_read", help: help["coffer_last_bytes_read"]!, figures.bytesRead.map { String($0) })
        set("coffer_last_bytes_written", help: help["coffer_last_bytes_written"]!, figures.bytesWritten.map { String($0) })
        set("coffer_last_files", help: help["coffer_last_files"]!, figures.files.map { String($0) })
        set("coffer_last_findings", help: help["coffer_last_findings"]!, figures.findings.map { String($0) })
        for gauge in figures.extra { set(gauge.name, help: gauge.help, number(gauge.value)) }

        var out = ""
        for name in order {
            let family = byName[name]!
            guard !family.samples.isEmpty else { continue }
            if let help = family.help { out += "# HELP \(name) \(help)\n" }
            if let type = family.type { out += "# TYPE \(name) \(type)\n" }
            for sample in family.samples {
                out += sample.name
                if !sample.labels.isEmpty {
                    out += "{" + sample.labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
                }
                out += " \(sample.value)\n"
            }
        }
        return out
    }

    static func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(format: "%.3f", value)
    }

    /// A label value as the text format wants it: backslash, double quote and line feed escaped.
    static func escape(_ value: String) -> String {
        var out = ""
        for character in value.unicodeScalars {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    /// `name{k="v",...} value` (a timestamp after the value is dropped); nil for a line that is not one.
    static func parse(_ line: String) -> Sample? {
        let scalars = Array(line.unicodeScalars)
        var index = 0
        var name = ""
        while index < scalars.count, scalars[index] != "{", scalars[index] != " " { name.unicodeScalars.append(scalars[index]); index += 1 }
        guard !name.isEmpty else { return nil }
        var labels: [(String, String)] = []
        if index < scalars.count, scalars[index] == "{" {
            index += 1
            while index < scalars.count, scalars[index] != "}" {
                var key = ""
                while index < scalars.count, scalars[index] != "=" { key.unicodeScalars.append(scalars[index]); index += 1 }
                guard index + 1 < scalars.count, scalars[index + 1] == "\"" else { return nil }
                index += 2
                var value = ""
                while index < scalars.count, scalars[index] != "\"" {
                    if scalars[index] == "\\", index + 1 < scalars.count {
                        index += 1
                        value.unicodeScalars.append(scalars[index] == "n" ? "\n" : scalars[index])
                    } else {
                        value.unicodeScalars.append(scalars[index])
                    }
                    index += 1
                }
                guard index < scalars.count else { return nil }
                index += 1 // closing quote
                labels.append((key.trimmingCharacters(in: .whitespaces), value))
                if index < scalars.count, scalars[index] == "," { index += 1 }
            }
            guard index < scalars.count else { return nil }
            index += 1
        }
        let rest = String(String.UnicodeScalarView(scalars[index...])).split(separator: " ")
        guard let value = rest.first else { return nil }
        return Sample(name: name, labels: labels, value: String(value))
    }
}

extension BackupReport: MetricsReporting {
    public var figures: RunFigures {
        RunFigures(repository: repository, bytesRead: bytesRead, bytesWritten: packBytes, files: files,
                   findings: problems.count + findings, dryRun: dryRun, snapshotWritten: snapshot != nil && !dryRun)
    }
}

extension VerifyReport: MetricsReporting {
    public var figures: RunFigures {
        RunFigures(files: counts.libraryFiles, findings: findings.count)
    }
}

extension RepositoryReport: MetricsReporting {
    public var figures: RunFigures {
        RunFigures(repository: repository, bytesRead: bytesRead, files: filesChecked, findings: findings.count)
    }
}

extension PruneReport: MetricsReporting {
    public var figures: RunFigures {
        RunFigures(repository: repository, bytesRead: verify?.bytesRead, bytesWritten: bytesFreed,
                   files: forgotten.count, findings: verify?.findings.count ?? 0, dryRun: dryRun)
    }
}

extension ExportReport: MetricsReporting {
    public var figures: RunFigures {
        RunFigures(files: rows["jobs"], findings: 0, dryRun: dryRun)
    }
}

extension CleanupReport: MetricsReporting {
    public var figures: RunFigures {
        RunFigures(bytesWritten: bytesFreed, files: removed.count, findings: failures.count, dryRun: dryRun)
    }
}
