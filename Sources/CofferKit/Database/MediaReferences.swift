import GRDB
import GRDBSQLite

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
    ///
    /// Cells are read in place from SQLite by position (no `Row` lookups by name, no `Data`):
    /// for 100,000 jobs, a backup reads the references twice (the walk and the reconciliation)
    /// and by name they cost 10,000 instructions a row.
    public static func forEach(_ db: Database, mediaRoot: String, _ body: (Reference) throws -> Void) throws {
        let root = PathBytes(mediaRoot.utf8)
        let statement = try db.makeStatement(sql: """
            SELECT job_id, video_path, audio_original_path, audio_dubbed_path, file_size_bytes FROM media
            """)
        let sqlite = statement.sqliteStatement
        let cursor = try Row.fetchCursor(statement)
        while try cursor.next() != nil {
            // As GRDB reads them: the job id as text, the size as SQLite's integer of the value.
            let jobID = DatabaseAccess.text(sqlite, 0)
            let recordedSize = sqlite3_column_type(sqlite, 4) == SQLITE_NULL ? nil : sqlite3_column_int64(sqlite, 4)
            for (offset, column) in columns.enumerated() {
                let index = Int32(offset + 1)
                // The value's bytes, whatever its type (a number as its text), as GRDB gives them.
                guard sqlite3_column_type(sqlite, index) != SQLITE_NULL, let pointer = sqlite3_column_blob(sqlite, index) else { continue }
                let count = Int(sqlite3_column_bytes(sqlite, index))
                guard count > 0 else { continue }
                let stored = PathBytes(UnsafeRawBufferPointer(start: pointer, count: count))
                try body(Reference(jobID: jobID, column: column, path: PathNormalizer.absolute(stored, under: root),
                                   recordedSize: column == "video_path" ? recordedSize : nil))
            }
        }
    }
}
