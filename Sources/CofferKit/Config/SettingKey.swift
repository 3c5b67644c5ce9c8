/// The settings Coffer reads. The first six are the pipeline's own environment variables, so
/// Coffer reads the same `.env` the pipeline does; `COFFER_REPO` is Coffer's.
public enum SettingKey: String, CaseIterable, Sendable, Codable {
    case dbPath = "DB_PATH"
    case mediaRoot = "MEDIA_ROOT"
    case minFreeSpaceGB = "MIN_FREE_SPACE_GB"
    case alertFreeSpaceGB = "ALERT_FREE_SPACE_GB"
    case tempDirTemplate = "TEMP_DIR_TEMPLATE"
    case libraryPathTemplate = "LIBRARY_PATH_TEMPLATE"
    case repo = "COFFER_REPO"

    /// The command-line flag that sets it.
    public var flag: String {
        switch self {
        case .dbPath: "--db"
        case .mediaRoot: "--media-root"
        case .minFreeSpaceGB: "--min-free-space-gb"
        case .alertFreeSpaceGB: "--alert-free-space-gb"
        case .tempDirTemplate: "--temp-dir-template"
        case .libraryPathTemplate: "--library-path-template"
        case .repo: "--repo"
        }
    }

    /// The value used when no flag, variable or config file sets it; `nil` means unset.
    public var defaultValue: String? {
        switch self {
        case .dbPath: "/app/data/db.sqlite"
        case .mediaRoot: "/media"
        case .minFreeSpaceGB: "10"
        case .alertFreeSpaceGB: "20"
        case .tempDirTemplate: "{MEDIA_ROOT}/tmp/{jobId}"
        case .libraryPathTemplate: "{MEDIA_ROOT}/library/{uploader}/{title}.{ext}"
        case .repo: nil
        }
    }

    var isPath: Bool { self == .dbPath || self == .mediaRoot || self == .repo }
}

/// Where an effective value came from. Precedence: flag > environment > config file > default.
public enum SettingSource: String, Sendable, Codable {
    case flag
    case environment
    case configFile = "config file"
    case defaultValue = "default"
    case unset
}

/// One effective setting and where it came from.
public struct Setting: Sendable, Equatable, Codable {
    public var key: SettingKey
    public var value: String?
    public var source: SettingSource
    /// `--db`, `DB_PATH`, `coffer.env:3`: the exact place the value was read.
    public var origin: String?
}
