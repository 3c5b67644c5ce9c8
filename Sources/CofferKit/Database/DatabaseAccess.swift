import CSQLiteConfig
import Foundation
import GRDB
import GRDBSQLite

/// Opens the pipeline's database the way the pipeline itself does.
///
/// Every connection gets the seed's PRAGMAs (foreign keys on, WAL, synchronous NORMAL,
/// cache_size -10000 (2 MB for read-only scans), temp_store MEMORY) and a busy timeout, so a run started by cron while the
/// pipeline writes waits for its turn instead of failing with "database is locked".
/// Read-only work opens the file read-only: it can neither change nor create it.
public enum DatabaseAccess {
    /// How long a connection waits on a lock held by the pipeline before giving up.
    public static let busyTimeout: TimeInterval = 30

    public static func configuration(readOnly: Bool) -> GRDB.Configuration {
        var config = GRDB.Configuration()
        config.readonly = readOnly
        config.foreignKeysEnabled = true
        config.busyMode = .timeout(busyTimeout)
        config.journalMode = readOnly ? .default : .wal
        config.label = readOnly ? "coffer.read" : "coffer.write"
        config.prepareDatabase { db in
            if !readOnly { try db.execute(sql: "PRAGMA synchronous = NORMAL") }
            // Coffer's read-only work scans (checks, counts, references): a small page cache
            // serves it as well and keeps memory flat when several connections are open.
            try db.execute(sql: "PRAGMA cache_size = \(readOnly ? -2000 : -10000); PRAGMA temp_store = MEMORY")
        }
        return config
    }

    /// integrity_check looks every row up in every index: with the 2 MB cache of read-only scans
    /// it re-read a 100 MB database's pages 25 times over, half its time in system calls. 4 MB
    /// takes three quarters of that system time away for 2 MB more memory (8 MB: 6 MB more,
    /// little further gain).
    static let checkCacheKiB = 4096

    /// Gives the connection the check's page cache (4 MB) for the rest of its life: for work
    /// that looks rows up across tables (foreign_key_check finds every event's job). With 2 MB,
    /// a 100 MB database's pages were read from the file 164,000 times for it, with 4 MB 75,000.
    static func useCheckCache(_ db: Database) throws {
        try db.execute(sql: "PRAGMA cache_size = -\(checkCacheKiB)")
    }

    /// Column `index` of the current row of a stepped statement as text, as GRDB reads a
    /// `String?` (nil when NULL), straight from SQLite without a `Row`.
    static func text(_ statement: SQLiteStatement, _ index: Int32) -> String? {
        guard sqlite3_column_type(statement, index) != SQLITE_NULL, let text = sqlite3_column_text(statement, index) else { return nil }
        return String(decoding: UnsafeRawBufferPointer(start: text, count: Int(sqlite3_column_bytes(statement, index))), as: UTF8.self)
    }

    /// Runs `body` on `db` so that a stop asked for (SIGINT or SIGTERM to a command that stops
    /// cleanly, see ``Interruption``) ends the statement running then instead of after it:
    /// SQLite's progress handler looks for it every 1,000 virtual machine steps, and the
    /// statement fails with SQLITE_INTERRUPT. (SQLite 3.40 does not call the handler during the
    /// walk of the b-trees that opens integrity_check, about 0.5 s per GB: a stop there waits
    /// for it.) That failure, and any result the body made around it, are thrown away: what is
    /// thrown is the stop (exit 130), never a finding of damage. For long reads (integrity_check
    /// of a large database takes seconds per gigabyte) and writes inside a transaction (rolled
    /// back).
    static func stoppable<T>(_ db: Database, _ operation: @autoclosure () -> String, _ body: () throws -> T) throws -> T {
        sqlite3_progress_handler(db.sqliteConnection, 1000, { _ in Interruption.signal == nil ? 0 : 1 }, nil)
        defer { sqlite3_progress_handler(db.sqliteConnection, 0, nil, nil) }
        let result: T
        do {
            result = try body()
        } catch let error as DatabaseError where error.resultCode == .SQLITE_INTERRUPT {
            try Interruption.check(operation())
            throw error
        }
        try Interruption.check(operation())
        return result
    }

    /// How much of a copy Coffer made itself a check maps into memory (``check(_:pragma:limit:mapped:)``).
    ///
    /// Even with the 4 MB cache, integrity_check of a 100 MB copy read pages from the file
    /// 359,000 times (one `pread` each, a copy into the cache each time): about 1 s of system
    /// time of a 100,000-file backup, on the core the media walk needed (an I/O error under a
    /// map kills the process instead of failing a read: these files were just written here). Mapped, SQLite reads
    /// the page cache in place. The mapped pages are the kernel's page cache, not more memory,
    /// but they count in the process's resident size: hence a bound, not the whole file (a
    /// 1 GB copy is checked through its first 128 MiB mapped, the rest read).
    static let checkMappedBytes = 128 << 20

    /// Runs `PRAGMA pragma(limit)` (integrity_check or quick_check) with a 4 MB page cache,
    /// given back afterwards (the connection may go on with small scans).
    ///
    /// `mapped`: the file is a copy Coffer wrote itself (a backup's copy, a restored or
    /// verified one, in a scratch or staging folder no other process writes): its first
    /// ``checkMappedBytes`` are read through a memory map for the check. Never the pipeline's
    /// own database, which another process may shrink (a read past the end of a map kills the
    /// reader).
    public static func check(_ db: Database, pragma: String = "integrity_check", limit: Int, mapped: Bool = false) throws -> [String] {
        let previous = try Int.fetchOne(db, sql: "PRAGMA cache_size") ?? -2000
        try useCheckCache(db)
        defer { try? db.execute(sql: "PRAGMA cache_size = \(previous)") }
        if mapped {
            try db.execute(sql: "PRAGMA mmap_size = \(checkMappedBytes)")
        }
        defer { if mapped { try? db.execute(sql: "PRAGMA mmap_size = 0") } }
        return try String.fetchAll(db, sql: "PRAGMA \(pragma)(\(limit))")
    }

    /// For a database that came from outside (a restored or verified copy): schema code is not
    /// trusted (`trusted_schema=OFF`), cell sizes are checked (`cell_size_check=ON`), so
    /// damage surfaces as an error instead of a wrong read, and the connection is defensive
    /// (`SQLITE_DBCONFIG_DEFENSIVE`): no `writable_schema`, no writes to `sqlite_master` or to
    /// the shadow tables of FTS indexes, even from a trigger the file brought along.
    public static func untrustedConfiguration() -> GRDB.Configuration {
        var config = GRDB.Configuration()
        config.busyMode = .timeout(busyTimeout)
        config.prepareDatabase { db in
            try setFlag(SQLITE_DBCONFIG_DEFENSIVE, "SQLITE_DBCONFIG_DEFENSIVE", to: true, on: db)
            try db.execute(sql: "PRAGMA trusted_schema = OFF; PRAGMA cell_size_check = ON")
        }
        return config
    }

    /// Whether `db` is in defensive mode (``untrustedConfiguration()``).
    public static func isDefensive(_ db: Database) -> Bool {
        coffer_sqlite_db_flag(db.sqliteConnection, SQLITE_DBCONFIG_DEFENSIVE, -1) == 1
    }

    /// Turns an on/off `sqlite3_db_config` option of the connection on or off; fails when this
    /// SQLite does not have it.
    static func setFlag(_ option: Int32, _ name: String, to on: Bool, on db: Database) throws {
        guard coffer_sqlite_db_flag(db.sqliteConnection, option, on ? 1 : 0) == (on ? 1 : 0) else {
            throw DatabaseError(resultCode: .SQLITE_ERROR, message: "this SQLite cannot set \(name) (SQLite 3.26 or later has it)")
        }
    }

    /// Opens an existing database. Fails with exit 2 when `path` is missing, is not a regular
    /// file, or is not a SQLite database; never creates a file.
    public static func openExisting(_ path: String, readOnly: Bool) throws -> DatabaseQueue {
        switch FileSystem.status(path) {
        case .failure(let errno):
            throw CofferError(.failed, operation: "open database", subject: path, cause: errno.description,
                              hint: "check DB_PATH (or --db); `coffer config` shows where it came from")
        case .success(let info) where info.kind != .regular:
            throw CofferError(.failed, operation: "open database", subject: path, cause: "not a regular file")
        case .success:
            break
        }
        var opened: DatabaseQueue?
        do {
            let queue = try DatabaseQueue(path: path, configuration: configuration(readOnly: readOnly))
            opened = queue
            // Reading the schema fails fast on a file that is not a database.
            try queue.read { db in _ = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master") }
            return queue
        } catch let error as DatabaseError {
            throw databaseFailure("open database", path, error, systemErrno: opened.map(systemErrno) ?? 0)
        }
    }

    /// The errno of the last system call that failed on the connection (0 when none did): what
    /// SQLite's "disk I/O error" does not say (a full disk, a file size limit, a permission).
    static func systemErrno(_ queue: DatabaseQueue) -> Int32 {
        (try? queue.inDatabase { sqlite3_system_errno($0.sqliteConnection) }) ?? 0
    }

    /// The file size limit of this process (`ulimit -f`), if it has one.
    static func fileSizeLimit() -> UInt64? {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_FSIZE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return nil }
        return UInt64(limit.rlim_cur)
    }

    /// A database error as a Coffer error (exit 2), with a hint for the usual causes.
    /// `systemErrno`: the failed system call's errno, told beside an I/O error.
    static func databaseFailure(_ operation: String, _ path: String, _ error: DatabaseError, systemErrno: Int32 = 0) -> CofferError {
        if systemErrno != 0, [.SQLITE_IOERR, .SQLITE_FULL, .SQLITE_CANTOPEN].contains(error.resultCode) {
            return CofferError(.failed, operation: operation, subject: path,
                               cause: "\(error.message ?? "\(error.resultCode)") (\(String(cString: strerror(systemErrno))))",
                               hint: CofferError.defaultHint(errno: systemErrno) ?? "check that this user may read the database and write its directory")
        }
        var hint: String?
        if [.SQLITE_IOERR, .SQLITE_FULL].contains(error.resultCode), let limit = fileSizeLimit() {
            hint = "this process has a file size limit (`ulimit -f`, \(limit) bytes): raise it, or run without it"
        }
        switch error.resultCode {
        case .SQLITE_NOTADB: hint = "the file is not a SQLite database: check DB_PATH, or restore it from a snapshot"
        case .SQLITE_CORRUPT: hint = "run `coffer verify --full` for details, then restore from a snapshot"
        case .SQLITE_BUSY, .SQLITE_LOCKED: hint = "the pipeline held a lock for more than \(Int(busyTimeout)) s; try again"
        case .SQLITE_CANTOPEN, .SQLITE_PERM, .SQLITE_READONLY: hint = "check that this user may read the database and write its directory"
        default: break
        }
        return CofferError(.failed, operation: operation, subject: path, cause: error.message ?? "\(error.resultCode)", hint: hint)
    }
}
