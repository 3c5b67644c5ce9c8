import GRDB

/// The files the database refers to: every path a media row holds.
public enum MediaReferences {
    public static let columns = ["video_path", "audio_original_path", "audio_dubbed_path"]

    public struct Reference {
        public var jobID: String?
        /// `video_path`, `audio_original_path` or `audio_dubbed_path`.
        public var column: String
        /// Absolute, normalized, exact bytes (a relative path is taken under MEDIA_ROOT).
        public var path: PathBytes
        /// `file_size_bytes`, for the video.
        public var recordedSize: Int64?
    }

    /// Calls `body` for each set path, streaming the rows (constant memory). Paths are read as
    /// raw bytes, so one stored as a BLOB, or as TEXT that is not UTF-8, is kept exact.
    public static func forEach(_ db: Database, mediaRoot: String, _ body: (Reference) throws -> Void) throws {
        let root = PathBytes(mediaRoot.utf8)
        let cursor = try Row.fetchCursor(db, sql: """
            SELECT job_id, video_path, audio_original_path, audio_dubbed_path, file_size_bytes FROM media
            """)
        while let row = try cursor.next() {
            let jobID: String? = row["job_id"]
            let recordedSize: Int64? = row["file_size_bytes"]
            for (offset, column) in columns.enumerated() {
                guard let stored = try row.withUnsafeData(atIndex: offset + 1, { $0.map(PathBytes.init) }),
                      !stored.isEmpty else { continue }
                try body(Reference(jobID: jobID, column: column, path: PathNormalizer.absolute(stored, under: root),
                                   recordedSize: column == "video_path" ? recordedSize : nil))
            }
        }
    }
}
