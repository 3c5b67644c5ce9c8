import Foundation
import GRDB
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// `coffer cleanup`: removes the temp directories the pipeline's rules say are overdue
/// (``TempRetention``), and nothing else.
///
/// Only directories directly under the temp root are considered; a symlink there is never
/// followed or removed. Each directory's job is looked up again right before it is removed, in
/// its own read of the database, so a job retried meanwhile (FAILED back to QUEUED) keeps its
/// directory. The database is only read.
///
/// A directory is first renamed out of the way (``removingPrefix``), then removed: a cleanup
/// killed halfway leaves each directory whole or under that name, never half-emptied under its
/// own (where the removed files would also have reset its age); the next run removes those
/// first.
public struct TempCleanup {
    /// Directories being removed: `.coffer-removing-PID-RANDOM-N` in the temp root (the
    /// random part: in containers every run can be PID 1).
    public static let removingPrefix = ".coffer-removing-"

    public var layout: VolumeLayout
    public var dryRun = false
    public var now = Date()
    public var logger = Logger(label: "coffer.cleanup")

    public init(configuration: CofferConfiguration) { layout = configuration.layout }

    public func run() throws -> CleanupReport {
        let started = Date()
        let root = layout.tempRoot
        var report = CleanupReport(tempRoot: root, dryRun: dryRun)
        let queue = try DatabaseAccess.openExisting(layout.dbPath, readOnly: true)
        defer { try? queue.close() }
        do {
            guard try queue.read({ try $0.tableExists("jobs") }) else {
                throw CofferError(.failed, operation: "clean up with", subject: layout.dbPath, cause: "the database has no jobs table; nothing was removed",
                                  hint: "check DB_PATH: it must be the pipeline's database")
            }
        } catch let error as DatabaseError {
            throw DatabaseAccess.databaseFailure("clean up with", layout.dbPath, error)
        }

        var names: [PathBytes] = []
        var interrupted: [PathBytes] = []
        let removing = PathBytes(Self.removingPrefix.utf8)
        do {
            try DirectoryWalker(root: root).list { entry in
                guard entry.kind == .directory else { return }
                if entry.relativePath.starts(with: removing) { interrupted.append(entry.relativePath) } else { names.append(entry.relativePath) }
            }
        } catch let error as CofferError {
            if case .failure(let errno) = FileSystem.status(root), errno == .noSuchFileOrDirectory {
                report.missingRoot = true
                report.seconds = Date().timeIntervalSince(started)
                return report
            }
            throw CofferError(.failed, operation: "list temp directories in", subject: root, cause: error.cause + "; nothing was removed",
                              hint: "run coffer cleanup as the pipeline's user")
        }

        // What a killed run had begun removing goes first (a dry run only counts it).
        for name in interrupted.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let path = PathBytes(root.utf8).appendingComponent(name)
            if !dryRun {
                FileSystem.removeTree(path)
                if case .success = FileSystem.status(path) {
                    report.failures.append(.init(path: PathText.display(path), message: "left by an interrupted cleanup; could not be removed completely (permissions?)"))
                    continue
                }
            }
            report.interrupted += 1
        }
        var removals = 0
        let run = "\(Self.removingPrefix)\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        for name in names.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let path = PathBytes(root.utf8).appendingComponent(name)
            let shown = PathText.display(path)
            report.directories += 1
            let tree = Self.measure(path)
            let jobID = layout.jobID(forTempDirectoryName: name)
            let row: Row?
            do {
                row = try jobID.flatMap { id in
                    try queue.read { db in
                        try Row.fetchOne(db, sql: TempRetention.jobQuery, arguments: [id])
                    }
                }
            } catch let error as DatabaseError {
                throw DatabaseAccess.databaseFailure("look up the job of \(shown) in", layout.dbPath, error)
            }
            let status: String? = row?["status"]
            let decision = TempRetention.decide(known: row != nil, status: status, finished: row?["finished"],
                                                lastChange: tree.newest, now: now)
            switch decision {
            case .unfinished:
                report.unfinished += 1
            case .kept:
                report.kept += 1
            case .expired(let age, let limit):
                var removal = CleanupReport.Removal(path: shown, jobID: jobID, status: row == nil ? nil : status,
                                                    ageSeconds: age.rounded(), rule: row == nil ? "unknown job, \(TempRetention.describe(limit)) unchanged"
                                                        : "\(status ?? "NULL") + \(TempRetention.describe(limit))",
                                                    bytes: tree.bytes, files: tree.files)
                if !dryRun {
                    // Out of the way first, in one step; where it cannot be renamed (a mount
                    // point, no write permission on the temp root), removed in place.
                    removals += 1
                    let aside = PathBytes(root.utf8).appendingComponent(PathBytes("\(run)-\(removals)".utf8))
                    let renamed = path.withCPath { from in aside.withCPath { rename(from, $0) } } == 0
                    FileSystem.removeTree(renamed ? aside : path)
                    if case .success = FileSystem.status(renamed ? aside : path) {
                        let cause = renamed ? "; what is left is \(PathText.display(aside)), which the next cleanup removes" : ""
                        report.failures.append(.init(path: shown, message: "could not be removed completely (permissions, or the pipeline writing into it?)\(cause)"))
                        removal.bytes = 0
                        continue
                    }
                }
                report.removed.append(removal)
                report.bytesFreed += removal.bytes
            }
        }
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    /// Bytes and files under a directory, and the newest change in it (the directory included).
    static func measure(_ path: PathBytes) -> (bytes: Int64, files: Int, newest: Double?) {
        var bytes: Int64 = 0, files = 0
        var newest: Double? = (try? FileSystem.status(path).get())?.modified
        try? DirectoryWalker(root: path).walk { entry in
            guard case .success(let info) = FileSystem.status(path.appendingComponent(entry.relativePath)) else { return }
            newest = max(newest ?? info.modified, info.modified)
            if info.kind == .regular { bytes += info.size; files += 1 }
        }
        return (bytes, files, newest)
    }
}

/// What `coffer cleanup` removed (or would remove). Encoded as the `--json` document.
public struct CleanupReport: Sendable, Codable {
    public struct Removal: Sendable, Codable, Equatable {
        public var path: String
        public var jobID: String?
        /// `nil` for a job the database does not know.
        public var status: String?
        public var ageSeconds: Double
        public var rule: String
        public var bytes: Int64
        public var files: Int
        enum CodingKeys: String, CodingKey { case path, jobID = "job_id", status, ageSeconds = "age_seconds", rule, bytes, files }
    }

    public struct Failure: Sendable, Codable, Equatable {
        public var path: String
        public var message: String
    }

    public var command = "cleanup"
    public var tempRoot: String
    public var dryRun: Bool
    public var missingRoot = false
    public var directories = 0
    public var removed: [Removal] = []
    /// Directories of finished or unknown jobs still within their retention.
    public var kept = 0
    /// Directories of jobs the pipeline is still working on: never touched.
    public var unfinished = 0
    public var failures: [Failure] = []
    /// Directories a killed cleanup had begun removing (``TempCleanup/removingPrefix``),
    /// removed by this run (counted only, by a dry run).
    public var interrupted = 0
    public var bytesFreed: Int64 = 0
    public var seconds: Double = 0

    public var status: ExitStatus { failures.isEmpty ? .ok : .findings }

    enum CodingKeys: String, CodingKey {
        case command, tempRoot = "temp_root", dryRun = "dry_run", missingRoot = "missing_root", directories, removed, kept
        case unfinished, failures, interrupted, bytesFreed = "bytes_freed", seconds
    }

    public func text() -> String {
        if missingRoot { return "cleanup: temp root \(PathText.display(tempRoot)) does not exist; nothing to clean" }
        let verb = dryRun ? "would remove" : "removed"
        var lines = ["cleanup \(PathText.display(tempRoot)): \(verb) \(removed.count) of \(directories) temp director\(directories == 1 ? "y" : "ies") (\(Formatting.bytes(bytesFreed))\(dryRun ? "" : " freed")); kept \(kept) within retention, \(unfinished) of unfinished jobs"]
        for removal in removed {
            lines.append("  \(verb) \(removal.path): \(removal.rule), \(Formatting.age(seconds: removal.ageSeconds)) old, \(removal.files) files, \(Formatting.bytes(removal.bytes))")
        }
        if interrupted > 0 {
            lines.append("  \(dryRun ? "would finish" : "finished") removing \(interrupted) director\(interrupted == 1 ? "y" : "ies") an interrupted cleanup had begun")
        }
        for failure in failures { lines.append("  failed \(failure.path): \(failure.message)") }
        return lines.joined(separator: "\n")
    }
}
