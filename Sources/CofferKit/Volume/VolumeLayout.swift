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
    /// template (for `job-{jobId}`, `job-42` gives `42`). To match many names, take
    /// ``tempDirectoryNames`` once.
    public func jobID(forTempDirectoryName name: PathBytes) -> String? {
        tempDirectoryNames.jobID(name)
    }

    /// The template's last component split around `{jobId}`, for matching many names.
    public var tempDirectoryNames: TempDirectoryNames {
        let expanded = tempDirectory(jobID: "\u{0}")
        let last = expanded.split(separator: "/").last.map(String.init) ?? expanded
        let pieces = last.split(separator: "\u{0}", omittingEmptySubsequences: false)
        guard pieces.count == 2 else { return TempDirectoryNames(prefix: nil, suffix: []) }
        return TempDirectoryNames(prefix: PathBytes(pieces[0].utf8), suffix: PathBytes(pieces[1].utf8))
    }

    /// The write-ahead log beside the database.
    public var walPath: String { dbPath + "-wal" }
}

/// Matches temp directory names against the template's last component (`job-{jobId}`): the
/// bytes before and after the id, compared as bytes.
public struct TempDirectoryNames: Sendable {
    /// `nil` when the template's last component does not hold `{jobId}` exactly once.
    let prefix: PathBytes?
    let suffix: PathBytes

    /// The job id `name` stands for: the non-empty, valid UTF-8 bytes between the prefix and
    /// the suffix; `nil` when the name does not fit.
    public func jobID(_ name: PathBytes) -> String? {
        guard let prefix, name.count > prefix.count + suffix.count,
              name.starts(with: prefix), name.reversed().starts(with: suffix.reversed()) else { return nil }
        return String(validating: name[prefix.count..<(name.count - suffix.count)], as: UTF8.self)
    }
}
