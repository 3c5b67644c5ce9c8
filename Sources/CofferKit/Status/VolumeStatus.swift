import Foundation
import GRDB

/// `coffer status`: the state of a volume at a glance, from cheap reads only.
///
/// Reads the database read-only (a few aggregate queries on indexed columns) and `stat`s the
/// database and its WAL; never walks the media tree.
public struct VolumeStatus: Sendable, Codable {
    public struct UnfinishedJob: Sendable, Codable, Equatable {
        public var id: String
        public var status: String
        public var ageSeconds: Double
        enum CodingKeys: String, CodingKey { case id, status, ageSeconds = "age_seconds" }
    }

    public struct NewestSnapshot: Sendable, Codable, Equatable {
        public var id: String
        public var ageSeconds: Double
        enum CodingKeys: String, CodingKey { case id, ageSeconds = "age_seconds" }
    }

    public var command = "status"
    public var dbPath: String
    public var mediaRoot: String
    public var freeSpaceBytes: UInt64
    public var totalSpaceBytes: UInt64
    public var minFreeSpaceBytes: UInt64
    public var alertFreeSpaceBytes: UInt64
    public var dbBytes: Int64
    public var walBytes: Int64
    public var jobsByStatus: [String: Int]
    public var oldestUnfinishedJob: UnfinishedJob?
    public var repository: String?
    /// The newest snapshot of this volume in the repository (this host's with its DB_PATH and
    /// MEDIA_ROOT, else those paths' on any host) and its age (how much a restore would lose).
    /// Another volume's snapshots do not count.
    public var newestSnapshot: NewestSnapshot?
    public var findings: [Finding]

    /// 1 once free space crosses either threshold (ALERT_FREE_SPACE_GB first), as `verify`.
    public var status: ExitStatus { findings.isEmpty ? .ok : .findings }

    enum CodingKeys: String, CodingKey {
        case command, dbPath = "db_path", mediaRoot = "media_root", freeSpaceBytes = "free_space_bytes"
        case totalSpaceBytes = "total_space_bytes", minFreeSpaceBytes = "min_free_space_bytes"
        case alertFreeSpaceBytes = "alert_free_space_bytes", dbBytes = "db_bytes", walBytes = "wal_bytes"
        case jobsByStatus = "jobs_by_status", oldestUnfinishedJob = "oldest_unfinished_job", repository
        case newestSnapshot = "newest_snapshot", findings
    }

    public static func read(_ configuration: CofferConfiguration, now: Date = Date()) throws -> VolumeStatus {
        let layout = configuration.layout
        let space: DiskSpace
        switch FileSystem.freeSpace(layout.mediaRoot) {
        case .success(let value): space = value
        case .failure(let errno):
            throw CofferError(.failed, operation: "read free space of", subject: layout.mediaRoot, cause: errno.description,
                              hint: "check MEDIA_ROOT (or --media-root)")
        }
        let queue = try DatabaseAccess.openExisting(layout.dbPath, readOnly: true)
        defer { try? queue.close() }
        var byStatus: [String: Int] = [:]
        var oldest: UnfinishedJob?
        do {
            try queue.read { db in
                for row in try Row.fetchAll(db, sql: "SELECT status, count(*) AS n FROM jobs GROUP BY status") {
                    byStatus[row["status"] ?? "NULL"] = row["n"]
                }
                let finished = SeedSchema.finishedStatuses.sorted().map { "'\($0)'" }.joined(separator: ", ")
                if let row = try Row.fetchOne(db, sql: """
                    SELECT id, status, CAST(strftime('%s', created_at) AS REAL) AS created FROM jobs
                    WHERE status NOT IN (\(finished)) ORDER BY created_at LIMIT 1
                    """) {
                    let created: Double = row["created"] ?? now.timeIntervalSince1970
                    oldest = UnfinishedJob(id: row["id"] ?? "NULL", status: row["status"] ?? "NULL", ageSeconds: now.timeIntervalSince1970 - created)
                }
            }
        } catch let error as DatabaseError {
            throw DatabaseAccess.databaseFailure("read database", layout.dbPath, error)
        }
        func size(_ path: String) -> Int64 { (try? FileSystem.status(path).get().size) ?? 0 }
        let finding = DiskSpaceCheck.finding(available: space.available, minimum: configuration.minFreeSpaceBytes,
                                             alert: configuration.alertFreeSpaceBytes, path: layout.mediaRoot)
        // Read-only: an existing repository's records, no lock, nothing created.
        var newest: NewestSnapshot?
        if let location = configuration.repo, let repository = try? Repository.open(location),
           let last = try? repository.newestOfVolume(.init(dbPath: layout.dbPath, mediaRoot: layout.mediaRoot)),
           let time = UTCTime.parse(last.header.time) {
            newest = .init(id: last.id, ageSeconds: now.timeIntervalSince(time))
        }
        return VolumeStatus(dbPath: layout.dbPath, mediaRoot: layout.mediaRoot,
                            freeSpaceBytes: space.available, totalSpaceBytes: space.total,
                            minFreeSpaceBytes: configuration.minFreeSpaceBytes, alertFreeSpaceBytes: configuration.alertFreeSpaceBytes,
                            dbBytes: size(layout.dbPath), walBytes: size(layout.walPath),
                            jobsByStatus: byStatus, oldestUnfinishedJob: oldest, repository: configuration.repo,
                            newestSnapshot: newest, findings: finding.map { [$0] } ?? [])
    }

    public func text() -> String {
        var lines = ["status \(PathText.display(mediaRoot)) (database \(PathText.display(dbPath)))"]
        let verdict = findings.first.map { $0.severity == .error ? "BELOW MINIMUM" : "below alert threshold" } ?? "ok"
        lines.append("  free space   \(Formatting.bytes(freeSpaceBytes)) of \(Formatting.bytes(totalSpaceBytes)) "
                     + "(minimum \(Formatting.bytes(minFreeSpaceBytes)), alert \(Formatting.bytes(alertFreeSpaceBytes))): \(verdict)")
        lines.append("  database     \(Formatting.bytes(dbBytes)), WAL \(Formatting.bytes(walBytes))")
        let total = jobsByStatus.values.reduce(0, +)
        let ordered = SeedSchema.statuses.filter { jobsByStatus[$0] != nil } + jobsByStatus.keys.filter { !SeedSchema.statuses.contains($0) }.sorted()
        lines.append("  jobs         \(total)" + (ordered.isEmpty ? "" : ": " + ordered.map { "\($0) \(jobsByStatus[$0]!)" }.joined(separator: ", ")))
        if let job = oldestUnfinishedJob {
            lines.append("  oldest unfinished job: \(job.id) \(job.status), \(Formatting.age(seconds: job.ageSeconds)) old")
        } else {
            lines.append("  no unfinished jobs")
        }
        let snapshot = newestSnapshot.map { ": newest snapshot \($0.id), \(Formatting.age(seconds: $0.ageSeconds)) old" } ?? ": no snapshot of this volume"
        lines.append("  repository   " + (repository.map { PathText.display($0) + snapshot } ?? "none configured (COFFER_REPO or --repo)"))
        return lines.joined(separator: "\n")
    }
}
