import Foundation

/// The pipeline's rules for temp directories (its storage design): a COMPLETE job's goes
/// 24 hours after it finished, a FAILED or CANCELED job's after 7 days (kept for debugging),
/// one whose job the database does not know after 24 hours without a change; an unfinished
/// job's never. `coffer verify` reports what these rules say is overdue, `coffer cleanup`
/// removes it.
public enum TempRetention {
    public static let completed: TimeInterval = 24 * 3600
    public static let failed: TimeInterval = 7 * 24 * 3600
    public static let unknown: TimeInterval = 24 * 3600

    /// What the rules need of a directory's job: its status and when it finished (seconds
    /// since the epoch), by job id.
    static let jobQuery = "SELECT status, CAST(strftime('%s', completed_at) AS REAL) AS finished FROM jobs WHERE id = ?"

    public enum Decision: Equatable, Sendable {
        /// The job is not finished (or its status cannot be read): never touched.
        case unfinished(status: String?)
        /// Finished, or unknown, but not for long enough yet.
        case kept(age: TimeInterval, limit: TimeInterval)
        /// Past its retention.
        case expired(age: TimeInterval, limit: TimeInterval)
    }

    /// - Parameters:
    ///   - known: whether the database has the job.
    ///   - status: the job's status (NULL on a damaged database counts as unfinished).
    ///   - finished: when the job finished (`completed_at`), seconds since the epoch.
    ///   - lastChange: the newest change in the directory, standing in when `finished` is
    ///     unknown and for directories of unknown jobs; looked at only then (a `stat` per
    ///     directory otherwise: 18,000 of them for a volume of 100,000 jobs).
    public static func decide(known: Bool, status: String?, finished: Double?, lastChange: @autoclosure () -> Double?,
                              now: Date) -> Decision {
        let limit: TimeInterval
        let since: Double?
        if !known {
            limit = unknown
            since = lastChange()
        } else {
            switch status {
            case "COMPLETE": limit = completed
            case "FAILED", "CANCELED": limit = failed
            default: return .unfinished(status: status)
            }
            since = finished ?? lastChange()
        }
        guard let since else { return .kept(age: 0, limit: limit) }
        let age = now.timeIntervalSince1970 - since
        return age > limit ? .expired(age: age, limit: limit) : .kept(age: age, limit: limit)
    }

    public static func describe(_ limit: TimeInterval) -> String { limit >= 7 * 24 * 3600 ? "7 days" : "24 h" }
}
