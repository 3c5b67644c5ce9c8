/// Where a volume's parts live, from the configuration: the database, the library directory
/// and the directory that holds the per-job temp directories.
public struct VolumeLayout: Sendable, Equatable {
    public let dbPath: String
    public let mediaRoot: String
    public let tempDirTemplate: PathTemplate
    public let libraryPathTemplate: PathTemplate

    public init(dbPath: String, mediaRoot: String, tempDirTemplate: PathTemplate, libraryPathTemplate: PathTemplate) {
        self.dbPath = dbPath
        self.mediaRoot = mediaRoot
        self.tempDirTemplate = tempDirTemplate
        self.libraryPathTemplate = libraryPathTemplate
    }

    var rootValues: [String: String] { ["MEDIA_ROOT": mediaRoot] }

    /// The directory every library path lies under (`MEDIA_ROOT/library` by default).
    public var libraryRoot: String { libraryPathTemplate.fixedDirectory(rootValues) }

    /// The directory that holds one temp directory per job (`MEDIA_ROOT/tmp` by default).
    public var tempRoot: String { tempDirTemplate.fixedDirectory(rootValues) }

    /// The temp directory of a job.
    public func tempDirectory(jobID: String) -> String {
        tempDirTemplate.substituting(["MEDIA_ROOT": mediaRoot, "jobId": jobID])
    }

    /// The job id a temp directory name stands for, or `nil` when the name does not fit the
    /// template (for `job-{jobId}`, `job-42` gives `42`).
    public func jobID(forTempDirectoryName name: PathBytes) -> String? {
        let expanded = tempDirectory(jobID: "\u{0}")
        let last = expanded.split(separator: "/").last.map(String.init) ?? expanded
        let pieces = last.split(separator: "\u{0}", omittingEmptySubsequences: false)
        guard pieces.count == 2, let text = String(validating: name, as: UTF8.self) else { return nil }
        let prefix = String(pieces[0]), suffix = String(pieces[1])
        guard text.hasPrefix(prefix), text.hasSuffix(suffix), text.count > prefix.count + suffix.count else { return nil }
        return String(text.dropFirst(prefix.count).dropLast(suffix.count))
    }

    /// The write-ahead log beside the database.
    public var walPath: String { dbPath + "-wal" }
}
