import CArchive
import GRDB

/// Coffer's version and the versions of the libraries it runs on.
public enum CofferVersion {
    public static let coffer = "0.1.0"

    /// The SQLite library linked at run time.
    public static var sqlite: String {
        (try? DatabaseQueue().read { try String.fetchOne($0, sql: "SELECT sqlite_version()") }) ?? "unknown"
    }

    /// The libarchive library linked at run time.
    public static var libarchive: String { String(cString: archive_version_string()) }

    public static var description: String {
        "coffer \(coffer) (SQLite \(sqlite), \(libarchive))"
    }
}
