/// One problem a check found, with enough detail to act on it.
public struct Finding: Sendable, Codable, Equatable {
    public enum Severity: String, Sendable, Codable, Comparable {
        case error, warning
        public static func < (a: Severity, b: Severity) -> Bool { a == .error && b == .warning }
    }

    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// `PRAGMA quick_check` / `integrity_check` reported a problem.
        case integrity
        /// A row refers to a parent row that does not exist (`PRAGMA foreign_key_check`).
        case foreignKey = "foreign_key"
        /// The schema is not one Coffer knows.
        case schema
        /// A query failed on a damaged database; the checks that needed it were skipped.
        case databaseUnreadable = "database_unreadable"
        /// A path the database refers to does not exist.
        case missingFile = "missing_file"
        /// A path the database refers to is not a regular file.
        case notAFile = "not_a_file"
        /// A path the database refers to is not under MEDIA_ROOT (backup skips it, restore
        /// cannot move it): often MEDIA_ROOT itself is wrong.
        case outsideMediaRoot = "outside_media_root"
        /// The video file's size differs from `media.file_size_bytes`.
        case sizeMismatch = "size_mismatch"
        /// A COMPLETE job has no media row, or its media row has no video path.
        case completeWithoutMedia = "complete_without_media"
        /// A file under the library that no media row refers to.
        case orphanFile = "orphan_file"
        /// A temp directory whose name is not the id of a job in the database.
        case unknownTempDirectory = "unknown_temp_dir"
        /// A temp directory kept past the retention (24 h after COMPLETE, 7 days after FAILED or CANCELED).
        case expiredTempDirectory = "expired_temp_dir"
        /// A directory of the volume could not be read.
        case unreadableDirectory = "unreadable_dir"
        /// Free space is below MIN_FREE_SPACE_GB.
        case diskSpaceLow = "disk_space_low"
        /// Free space is below ALERT_FREE_SPACE_GB.
        case diskSpaceAlert = "disk_space_alert"

        public var severity: Severity {
            switch self {
            case .orphanFile, .unknownTempDirectory, .expiredTempDirectory, .diskSpaceAlert: .warning
            default: .error
            }
        }
    }

    public var kind: Kind
    public var severity: Severity
    public var jobID: String?
    /// The path, printable (see ``PathText/display(_:)-7q2xl``).
    public var path: String?
    public var expected: String?
    public var actual: String?
    public var message: String

    public init(_ kind: Kind, jobID: String? = nil, path: String? = nil, expected: String? = nil, actual: String? = nil, message: String) {
        self.kind = kind
        self.severity = kind.severity
        self.jobID = jobID
        self.path = path
        self.expected = expected
        self.actual = actual
        self.message = message
    }

    enum CodingKeys: String, CodingKey {
        case kind, severity, jobID = "job_id", path, expected, actual, message
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(kind, forKey: .kind)
        try container.encode(severity, forKey: .severity)
        try container.encode(jobID, forKey: .jobID)
        try container.encode(path, forKey: .path)
        try container.encode(expected, forKey: .expected)
        try container.encode(actual, forKey: .actual)
        try container.encode(message, forKey: .message)
    }
}
