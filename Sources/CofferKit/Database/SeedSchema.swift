/// The pipeline's schema, exactly as its storage design creates it. This is migration 1.
public enum SeedSchema {
    public static let tables = ["jobs", "media", "job_events"]

    /// The job statuses the `jobs.status` CHECK allows.
    public static let statuses = [
        "QUEUED", "DOWNLOADING", "DOWNLOADED", "DUBBING", "DUBBED", "MUXING", "COMPLETE", "FAILED", "CANCELED",
    ]
    /// Statuses after which the pipeline does no more work on a job.
    public static let finishedStatuses: Set<String> = ["COMPLETE", "FAILED", "CANCELED"]

    public static let sql = """
        -- Jobs submitted by user
        CREATE TABLE jobs (
          id TEXT PRIMARY KEY,              -- UUIDv7
          url TEXT NOT NULL,
          created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
          requested_dubbing BOOLEAN NOT NULL DEFAULT 0,
          target_lang TEXT NOT NULL DEFAULT 'ru',
          status TEXT NOT NULL,             -- QUEUED, DOWNLOADING, DOWNLOADED, DUBBING, DUBBED, MUXING, COMPLETE, FAILED, CANCELED
          priority INTEGER NOT NULL DEFAULT 0,
          format_preset TEXT,               -- e.g., "bestvideo+bestaudio", "best", "bestaudio"
          output_container TEXT DEFAULT 'mkv',
          retries INTEGER NOT NULL DEFAULT 0,
          error TEXT,
          completed_at DATETIME,
          CHECK (status IN ('QUEUED', 'DOWNLOADING', 'DOWNLOADED', 'DUBBING', 'DUBBED', 'MUXING', 'COMPLETE', 'FAILED', 'CANCELED'))
        );

        -- Media artifacts per job
        CREATE TABLE media (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
          video_path TEXT,                  -- final container path
          audio_original_path TEXT,         -- extracted original audio (optional cache)
          audio_dubbed_path TEXT,           -- produced by dubbing worker
          temp_dir TEXT,
          duration_sec REAL,
          width INTEGER,
          height INTEGER,
          source_title TEXT,
          source_id TEXT,
          source_uploader TEXT,
          file_size_bytes INTEGER,
          UNIQUE(job_id)
        );

        -- Event log for progress / metrics
        CREATE TABLE job_events (
          id INTEGER PRIMARY KEY AUTOINCREMENT,
          job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
          ts DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
          event TEXT NOT NULL,              -- e.g., "progress", "started", "finished", "error"
          payload JSON
        );

        CREATE INDEX idx_jobs_status ON jobs(status);
        CREATE INDEX idx_jobs_created ON jobs(created_at);
        CREATE INDEX idx_events_job ON job_events(job_id);
        CREATE INDEX idx_events_ts ON job_events(ts);
        """
}
