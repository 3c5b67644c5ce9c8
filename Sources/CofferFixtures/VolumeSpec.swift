import Foundation

/// What a generated volume should hold. Everything is derived from `seed`, so the same spec
/// gives the same volume (names, sizes, contents, timestamps relative to `now`).
public struct VolumeSpec: Sendable {
    /// How the database's schema is made: as the pipeline makes it (the seed's SQL, no
    /// migration history) or as `coffer init` does (through Coffer's migrator).
    public enum SchemaStyle: String, Sendable, CaseIterable { case pipeline, coffer }

    public var jobs = 60
    public var seed: UInt64 = 1
    /// Uploaders and titles with quotes, commas, newlines, tabs, leading '=', emoji, NFD
    /// accents, a 255-byte name, a name that is not UTF-8, and empty files.
    public var hostileNames = true
    /// One sparse video of 4 GiB + 4 KiB + 1 byte (takes almost no disk).
    public var largeFile = false
    /// Media files are 0...maxFileBytes long.
    public var maxFileBytes = 48 * 1024
    public var eventsPerJob = 1...5
    public var schema = SchemaStyle.pipeline
    public var now = Date()

    public init() {}
}

/// What a generator run made.
public struct GeneratedVolume: Sendable {
    public var dbPath: String
    public var mediaRoot: String
    public var jobs = 0
    public var jobsByStatus: [String: Int] = [:]
    public var events = 0
    public var mediaRows = 0
    public var files = 0
    public var bytes: Int64 = 0
    public var tempDirectories = 0
    /// Every media file written, absolute, as bytes.
    public var filePaths: [[UInt8]] = []
    /// Ids of COMPLETE jobs whose video is in the library.
    public var completeJobIDs: [String] = []
}
