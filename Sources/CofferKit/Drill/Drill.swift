import Crypto
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// `coffer drill`: a restore rehearsal. Restores a snapshot into a scratch folder on the
/// filesystem a real restore would use, checks the result the way an operator would before
/// switching over (the restore's own checks: integrity_check, foreign keys, reconciliation;
/// then every restored file read back from disk and re-hashed against the snapshot), reports
/// how long the restore took (RTO) and how old the snapshot is (RPO), and removes the scratch.
/// The live volume and the repository are only read.
public struct Drill {
    public var configuration: CofferConfiguration
    public var snapshot = "latest"
    /// An existing folder to restore into (a fresh subfolder is made and removed). Default:
    /// the folder that holds MEDIA_ROOT, the filesystem a restore of this volume would use.
    public var scratch: String?
    public var logger = Logger(label: "coffer.drill")
    public var progress: Progress?
    public var now: () -> Date = Date.init

    public init(configuration: CofferConfiguration) { self.configuration = configuration }

    public func run() throws -> DrillReport {
        let started = Date()
        let repository = try Repository.open(configuration.repo)
        // Held to the end: a prune cannot forget the snapshot between the restore and the re-hash.
        let lock = try repository.lock(exclusive: false, command: "drill")
        defer { withExtendedLifetime(lock) {} }
        let snap = try repository.resolve(snapshot, volume: .init(dbPath: configuration.layout.dbPath, mediaRoot: configuration.layout.mediaRoot))
        let base = try scratchBase()
        Self.sweepStale(in: base)
        try checkSpace(for: snap, at: base)
        let place = base + "/\(Self.prefix)\(snap.id)-\(getpid())"
        guard mkdir(place, 0o700) == 0 else {
            throw CofferError.system("create scratch folder", place, errno: errno)
        }
        defer { FileSystem.removeTree(place) }
        var report = DrillReport(repository: repository.location, snapshot: snap.id, snapshotTime: snap.header.time, scratch: place)
        if let time = UTCTime.parse(snap.header.time) {
            report.snapshotAgeSeconds = max(0, now().timeIntervalSince(time))
        }

        // 1. The restore, as `coffer restore` would do it.
        var restorer = Restorer(configuration: try configuration.replacing(
            [.dbPath: place + "/data/db.sqlite", .mediaRoot: place + "/media"], origin: "drill scratch"))
        restorer.snapshot = snap.id
        restorer.logger = logger
        restorer.progress = progress
        let restoreStarted = Date()
        let restore: RestoreReport
        do {
            restore = try restorer.run()
        } catch let error as CofferError where error.status == .failed {
            report.restoreSeconds = Date().timeIntervalSince(restoreStarted)
            report.findings.append(.init(kind: "restore_failed", path: error.subject ?? "", message: error.message))
            report.seconds = Date().timeIntervalSince(started)
            report.outcome = "failed"
            return report
        }
        report.restoreSeconds = Date().timeIntervalSince(restoreStarted)
        report.restore = restore
        // What the snapshot already recorded (a file the database referred to that was
        // missing when it was taken) is the source's state, not a failed restore; free
        // space is the scratch filesystem's, not the restored volume's. A record whose list
        // of findings cannot be read is a finding of its own (the restore itself succeeded),
        // and every finding of the restored volume is then reported.
        var known = Set<String>()
        do {
            known = Set(try repository.reader(for: snap).details().findings.map { Self.key($0, mediaRoot: snap.header.mediaRoot) })
        } catch let error as CofferError where error.status == .failed {
            report.findings.append(.init(kind: "snapshot_damaged", path: "snapshots/\(snap.id).jsonl",
                                         message: "its recorded problems and findings cannot be read (\(error.cause)); the restore itself succeeded"))
        }
        for finding in restore.verify?.findings ?? [] {
            if finding.kind == .diskSpaceLow || finding.kind == .diskSpaceAlert { continue }
            if known.contains(Self.key(finding, mediaRoot: place + "/media")) { report.inherited += 1; continue }
            report.findings.append(.init(kind: finding.kind.rawValue, path: finding.path ?? "", message: finding.message))
        }

        // 2. Every restored file read back from disk and re-hashed against the snapshot.
        let rehashStarted = Date()
        let media = PathBytes((place + "/media").utf8)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        try repository.reader(for: snap).files { file in
            try Interruption.check("drill")
            let path = media.appendingComponent(file.path)
            let fd = path.withCPath { open($0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
            guard fd >= 0 else {
                report.findings.append(.init(kind: "file_missing", path: PathText.display(file.path),
                                             message: "not restored: \(String(cString: strerror(errno)))"))
                return
            }
            defer { close(fd) }
            var hasher = SHA256()
            var size: Int64 = 0
            while true {
                let n = try RawIO.read(fd, buffer.baseAddress!, buffer.count, path: PathText.display(path))
                if n == 0 { break }
                hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                size += Int64(n)
            }
            report.filesRehashed += 1
            report.bytesRehashed += size
            if size != file.size || Digest.hex(hasher.finalize()) != file.sha256 {
                report.findings.append(.init(kind: "file_differs", path: PathText.display(file.path),
                                             message: "restored bytes differ from the snapshot (\(size) bytes, recorded \(file.size))"))
            }
        }
        report.rehashSeconds = Date().timeIntervalSince(rehashStarted)
        report.seconds = Date().timeIntervalSince(started)
        report.outcome = report.status == .ok ? "ok" : "failed"
        return report
    }

    static let prefix = ".coffer-drill-"

    /// A finding's kind and path relative to its media root (the restored volume's paths are
    /// the snapshot's, under another root).
    static func key(_ finding: Finding, mediaRoot: String) -> String {
        var path = finding.path ?? ""
        if path.hasPrefix(mediaRoot + "/") { path = String(path.dropFirst(mediaRoot.count + 1)) }
        return finding.kind.rawValue + "\u{0}" + path
    }

    /// Removes scratch folders of drills that were killed (their process is gone).
    static func sweepStale(in base: String) {
        try? DirectoryWalker(root: base).list { entry in
            guard entry.kind == .directory, entry.relativePath.starts(with: PathBytes(prefix.utf8)),
                  let name = String(validating: entry.relativePath, as: UTF8.self),
                  let dash = name.lastIndex(of: "-"), let pid = Int32(name[name.index(after: dash)...]) else { return }
            if pid != getpid(), kill(pid, 0) != 0, errno == ESRCH { FileSystem.removeTree(PathBytes((base + "/" + name).utf8)) }
        }
    }

    /// A drill must not push the filesystem it restores onto below MIN_FREE_SPACE_GB: by
    /// default that is the live volume's, and the pipeline stops taking jobs there.
    func checkSpace(for snap: Snapshot, at base: String) throws {
        guard case .success(let space) = FileSystem.freeSpace(base) else { return }
        let needed = snap.summary.bytes + snap.summary.database.size
        let available = Int64(clamping: space.available)
        let reserve = Int64(clamping: configuration.minFreeSpaceBytes)
        if available - needed < reserve {
            throw CofferError(.failed, operation: "drill", subject: base,
                              cause: "the restored copy (\(Formatting.bytes(needed))) would leave \(Formatting.bytes(max(0, available - needed))) free there, below MIN_FREE_SPACE_GB (\(Formatting.bytes(reserve)))",
                              hint: "give --scratch DIR on a filesystem with room; nothing was written")
        }
    }

    func scratchBase() throws -> String {
        if let scratch {
            guard case .success(let info) = FileSystem.status(scratch), info.kind == .directory else {
                throw CofferError(.usage, operation: "drill", subject: scratch, cause: "the scratch folder does not exist",
                                  hint: "create it, on the filesystem a restore would use, or leave out --scratch")
            }
            return scratch
        }
        guard !configuration.mediaRoot.isEmpty else {
            throw CofferError(.usage, operation: "drill", subject: "MEDIA_ROOT", cause: "not set, and no --scratch given",
                              hint: "give --scratch DIR on the filesystem a restore would use, or set MEDIA_ROOT")
        }
        let parent = PathText.parent(configuration.mediaRoot)
        guard case .success(let info) = FileSystem.status(parent), info.kind == .directory else {
            throw CofferError(.usage, operation: "drill", subject: parent, cause: "the folder that holds MEDIA_ROOT does not exist",
                              hint: "give --scratch DIR on the filesystem a restore would use")
        }
        return parent
    }
}

/// What `coffer drill` found. Encoded as the `--json` document.
public struct DrillReport: Sendable, Encodable, MetricsReporting {
    public struct Finding: Sendable, Encodable, Equatable {
        /// `restore_failed`, `snapshot_damaged`, `file_missing`, `file_differs`, or a kind of `coffer verify`.
        public var kind: String
        public var path: String
        public var message: String
    }

    public var command = "drill"
    public var repository: String
    public var snapshot: String
    public var snapshotTime: String
    /// Where it was restored (removed afterwards).
    public var scratch: String
    /// RPO: how old the snapshot was when the drill ran.
    public var snapshotAgeSeconds: Double?
    /// RTO: how long the restore took, its own checks included.
    public var restoreSeconds: Double = 0
    public var rehashSeconds: Double = 0
    public var filesRehashed = 0
    /// Findings of the restored volume the snapshot had already recorded when it was taken.
    public var inherited = 0
    public var bytesRehashed: Int64 = 0
    public var restore: RestoreReport?
    public var findings: [Finding] = []
    public var seconds: Double = 0

    /// `ok` or `failed`, as the exit code says (set when the drill ends).
    public var outcome = "failed"

    public var status: ExitStatus { findings.isEmpty ? .ok : .findings }

    enum CodingKeys: String, CodingKey {
        case command, repository, snapshot, snapshotTime = "snapshot_time", scratch, snapshotAgeSeconds = "snapshot_age_seconds"
        case restoreSeconds = "restore_seconds", rehashSeconds = "rehash_seconds", filesRehashed = "files_rehashed"
        case bytesRehashed = "bytes_rehashed", restore, findings, inherited, seconds, outcome = "status"
    }

    init(repository: String, snapshot: String, snapshotTime: String, scratch: String) {
        self.repository = repository; self.snapshot = snapshot; self.snapshotTime = snapshotTime; self.scratch = scratch
    }

    public var figures: RunFigures {
        var extra = [RunFigures.Gauge(name: "coffer_drill_restore_seconds", help: "RTO: how long the drill's restore took, its checks included.",
                                      value: restoreSeconds)]
        if let snapshotAgeSeconds {
            extra.append(.init(name: "coffer_drill_snapshot_age_seconds", help: "RPO: how old the drilled snapshot was.", value: snapshotAgeSeconds))
        }
        return RunFigures(repository: repository, bytesRead: bytesRehashed,
                          bytesWritten: (restore?.bytes ?? 0) + (restore?.databaseBytes ?? 0), files: filesRehashed,
                          findings: findings.count, extra: extra)
    }

    public func text() -> String {
        var lines = ["drill of snapshot \(snapshot) (\(snapshotTime)) from \(PathText.display(repository))"]
        if let snapshotAgeSeconds { lines.append("  RPO: the snapshot is \(Formatting.seconds(snapshotAgeSeconds)) old") }
        lines.append("  RTO: restored and checked in \(Formatting.seconds(restoreSeconds))"
                     + (restore.map { " (\($0.files) files, \(Formatting.bytes($0.bytes)) + database \(Formatting.bytes($0.databaseBytes)))" } ?? ""))
        if inherited > 0 { lines.append("  \(inherited) finding(s) the snapshot already recorded when it was taken (not counted)") }
        lines.append("  re-hashed \(filesRehashed) restored files, \(Formatting.bytes(bytesRehashed)) in \(Formatting.seconds(rehashSeconds))")
        if findings.isEmpty {
            lines.append("  drill passed; scratch removed (\(Formatting.seconds(seconds)) in all)")
        } else {
            lines.append("  DRILL FAILED: \(findings.count) finding(s); scratch removed")
            for finding in findings.prefix(50) { lines.append("  \(finding.kind): \(finding.path): \(finding.message)") }
            if findings.count > 50 { lines.append("  ... \(findings.count - 50) more (--json lists them all)") }
        }
        return lines.joined(separator: "\n")
    }
}
