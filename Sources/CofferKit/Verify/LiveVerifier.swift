import Foundation
import GRDB
import GRDBSQLite
import Logging
import SystemPackage

/// `coffer verify` on a live volume: the database and the media tree it describes.
///
/// Read-only: the database is opened read-only and files are only `stat`ed and listed, never
/// read. All database reads happen in one read transaction, a consistent view while the
/// pipeline goes on writing. Memory grows with the number of referenced library paths by 8
/// bytes of hash each (``ReferencedPaths``), not with file sizes, and the library is walked one
/// directory at a time.
///
/// It throws (exit 2) only when it cannot run at all: the database is missing or not a
/// database. Damage found on the way (a corrupt page, a failed query) becomes a finding.
public struct LiveVerifier {
    public var layout: VolumeLayout
    public var minFreeSpaceBytes: UInt64
    public var alertFreeSpaceBytes: UInt64
    /// `integrity_check` instead of `quick_check`.
    public var full = false
    /// Run neither (a caller that has just run `integrity_check` on the same file).
    public var checksIntegrity = true
    /// The output of `integrity_check` a caller already ran on these very bytes (restore runs
    /// it on the staged copy while the media are written); reported as if run here.
    public var integrityLines: [String]?
    /// The checks that read only the database, already run on these very bytes by
    /// ``databaseChecks(at:)`` (restore runs them on its staged copy while the media are
    /// written): `run()` then only looks at the files.
    public var databaseChecks: DatabaseChecks?
    public var now = Date()
    public var logger = Logger(label: "coffer.verify")
    /// The library as a caller's own walk saw it (backup's): the library's references then
    /// take their sizes from it, and its orphans come from it, instead of a `stat` of every
    /// reference and a second walk of the library. Waited for only when needed.
    var libraryWalk: LibraryWalk?
    /// Where the volume is while it is not yet at DB_PATH and MEDIA_ROOT: a restore's staged
    /// database and media tree, each moved into place whole afterwards, checked while they are
    /// synced. Read there; findings name the places they are going to.
    public var staged: (database: String, mediaRoot: String)?
    /// A stop asked for (SIGINT, SIGTERM, in a command that stops cleanly) ends the database
    /// checks where they are (``DatabaseAccess/stoppable(_:_:_:)``), off for a check whose
    /// command is past the point where stopping leaves things as they were.
    public var stopsWhenAsked = true

    /// At most this many lines of `integrity_check` output become findings.
    static let integrityLineLimit = 100

    public init(configuration: CofferConfiguration) {
        layout = configuration.layout
        minFreeSpaceBytes = configuration.minFreeSpaceBytes
        alertFreeSpaceBytes = configuration.alertFreeSpaceBytes
    }

    public func run() throws -> VerifyReport {
        let started = Date()
        var report = VerifyReport(dbPath: layout.dbPath, mediaRoot: layout.mediaRoot,
                                  databaseCheck: full ? "integrity_check" : "quick_check")
        let queue = try DatabaseAccess.openExisting(staged?.database ?? layout.dbPath, readOnly: true)
        var referenced = ReferencedPaths()
        do {
            try queue.inDatabase { db in try stopping(db) {
                // One read transaction: a consistent view while the pipeline writes. It is
                // rolled back, not committed: on a damaged file, COMMIT itself can report the
                // damage the checks already recorded.
                // Its checks look rows up across tables (foreign_key_check finds every event's
                // job, the temp directories their jobs) on a connection of their own.
                try DatabaseAccess.useCheckCache(db)
                try db.execute(sql: "BEGIN DEFERRED")
                defer { try? db.execute(sql: "ROLLBACK") }
                let checks = try databaseChecks ?? databaseOnlyChecks(db)
                // Checks run ahead without the integrity check (restore runs it beside them):
                // its findings go first, from ``integrityLines`` (or run here).
                if !checks.includesIntegrity && checksIntegrity { try checkIntegrity(db, into: &report) }
                report.findings += checks.findings
                report.schema = checks.schema
                report.counts = checks.counts
                guard checks.reconcilable else { return }
                // The temp directories are looked at first (while a caller's walk, if any,
                // goes on); their findings still come last.
                var temp = VerifyReport(dbPath: layout.dbPath, mediaRoot: layout.mediaRoot, databaseCheck: "")
                try attempt("check temp directories", into: &temp) { try checkTempDirectories(db, into: &$0) }
                try attempt("reconcile media rows", into: &report) {
                    referenced = try reconcileMediaRows(db, into: &$0)
                }
                report.findings += checks.completeJobs
                report.findings += temp.findings
                report.counts.tempDirectories = temp.counts.tempDirectories
            } }
        } catch let error as DatabaseError {
            throw DatabaseAccess.databaseFailure("verify database", layout.dbPath, error)
        }
        try? queue.close()
        logger.debug("database checked", metadata: [
            "seconds": "\(Formatting.seconds(Date().timeIntervalSince(started)))",
            "referenced_library_paths": "\(referenced.count)",
        ])
        try findOrphans(referenced: referenced, into: &report)
        logger.debug("library walked", metadata: ["files": "\(report.counts.libraryFiles)"])
        checkDiskSpace(into: &report)
        report.durationSeconds = Date().timeIntervalSince(started)
        return report
    }

    /// What the database alone tells, in the order `run()` reports it.
    public struct DatabaseChecks: Sendable {
        /// integrity or quick check (unless `includesIntegrity` is false), foreign keys, schema;
        /// and the reason reconciliation was skipped.
        var findings: [Finding] = []
        /// Made with ``checksIntegrity`` on.
        var includesIntegrity = true
        var schema: SchemaInspector.Report?
        var counts = VerifyReport.Counts()
        var reconcilable = false
        /// COMPLETE jobs without their video, reported after the media rows' findings.
        var completeJobs: [Finding] = []
    }

    /// The database-only checks of `run()`, on the database at `path` (read-only, in one read
    /// transaction), reported under DB_PATH: for a caller that holds these bytes elsewhere
    /// first (restore's staged copy).
    public func databaseChecks(at path: String) throws -> DatabaseChecks {
        let queue = try DatabaseAccess.openExisting(path, readOnly: true)
        defer { try? queue.close() }
        do {
            return try queue.inDatabase { db in try stopping(db) {
                try DatabaseAccess.useCheckCache(db)
                try db.execute(sql: "BEGIN DEFERRED")
                defer { try? db.execute(sql: "ROLLBACK") }
                return try databaseOnlyChecks(db)
            } }
        } catch let error as DatabaseError {
            throw DatabaseAccess.databaseFailure("verify database", path, error)
        }
    }

    func stopping<T>(_ db: Database, _ body: () throws -> T) throws -> T {
        stopsWhenAsked ? try DatabaseAccess.stoppable(db, "verify", body) : try body()
    }

    func databaseOnlyChecks(_ db: Database) throws -> DatabaseChecks {
        var report = VerifyReport(dbPath: layout.dbPath, mediaRoot: layout.mediaRoot, databaseCheck: "")
        var checks = DatabaseChecks()
        checks.includesIntegrity = checksIntegrity
        try checkDatabase(db, into: &report)
        checks.reconcilable = try isReconcilable(db, report: &report)
        if checks.reconcilable {
            try attempt("count rows", into: &report) { try count(db, into: &$0.counts) }
            var later = VerifyReport(dbPath: layout.dbPath, mediaRoot: layout.mediaRoot, databaseCheck: "")
            try attempt("check COMPLETE jobs", into: &later) { try checkCompleteJobs(db, into: &$0) }
            checks.completeJobs = later.findings
        }
        checks.findings = report.findings
        checks.schema = report.schema
        checks.counts = report.counts
        return checks
    }

    /// Runs one step; a damaged database (SQLITE_CORRUPT, IOERR...) becomes a finding and the
    /// other steps go on. A file that is not a database at all stops the run.
    func attempt(_ step: String, into report: inout VerifyReport, _ body: (inout VerifyReport) throws -> Void) throws {
        do {
            try body(&report)
        } catch let error as DatabaseError where error.resultCode != .SQLITE_NOTADB && error.resultCode != .SQLITE_INTERRUPT {
            report.findings.append(Finding(.databaseUnreadable, path: PathText.display(layout.dbPath),
                                           actual: error.message ?? "\(error.resultCode)",
                                           message: "\(step) failed; restore the database from a snapshot"))
        }
    }

    // MARK: Database

    func checkDatabase(_ db: Database, into report: inout VerifyReport) throws {
        if checksIntegrity { try checkIntegrity(db, into: &report) }
        try attempt("foreign_key_check", into: &report) { report in
            let rows = try Row.fetchAll(db, sql: "PRAGMA foreign_key_check")
            for row in rows {
                let table: String = row["table"], parent: String = row["parent"]
                let rowID: Int64? = row["rowid"]
                var jobID: String?
                if SeedSchema.tables.contains(table), table != "jobs", let rowID {
                    jobID = try? String.fetchOne(db, sql: "SELECT job_id FROM \(table.quotedDatabaseIdentifier) WHERE rowid = ?", arguments: [rowID])
                }
                report.findings.append(Finding(
                    .foreignKey, jobID: jobID, expected: "a row in \(parent)", actual: "none",
                    message: "\(table) row \(rowID.map(String.init) ?? "?") refers to a missing \(parent) row"))
            }
        }
        try attempt("read schema", into: &report) { report in
            let schema = try SchemaInspector.inspect(db)
            report.schema = schema
            for difference in schema.differences {
                report.findings.append(Finding(.schema, expected: "schema version \(SchemaMigrations.latestVersion) or older",
                                               actual: difference, message: "schema not recognized"))
            }
        }
    }

    /// integrity_check (or quick_check), or the lines a caller already has (``integrityLines``).
    func checkIntegrity(_ db: Database, into report: inout VerifyReport) throws {
        let pragma = full || integrityLines != nil ? "integrity_check" : "quick_check"
        try attempt(pragma, into: &report) { report in
            let lines = try integrityLines ?? DatabaseAccess.check(db, pragma: pragma, limit: Self.integrityLineLimit)
            if lines != ["ok"] {
                for line in lines {
                    report.findings.append(Finding(.integrity, path: PathText.display(layout.dbPath),
                                                   expected: "ok", actual: line, message: "\(pragma) reported a problem"))
                }
            }
        }
    }

    /// The columns reconciliation reads exist (they may not, on an unknown schema).
    func isReconcilable(_ db: Database, report: inout VerifyReport) throws -> Bool {
        var ok = false
        try attempt("read schema", into: &report) { _ in
            let needed: [String: [String]] = [
                "jobs": ["id", "status", "created_at", "completed_at"],
                "media": ["job_id", "video_path", "audio_original_path", "audio_dubbed_path", "file_size_bytes"],
            ]
            ok = try needed.allSatisfy { table, columns in
                guard try db.tableExists(table) else { return false }
                let present = Set(try db.columns(in: table).map(\.name))
                return columns.allSatisfy(present.contains)
            }
        }
        if !ok {
            report.findings.append(Finding(.schema, expected: "tables jobs and media with the seed's columns",
                                           actual: "missing", message: "reconciliation skipped"))
        }
        return ok
    }

    func count(_ db: Database, into counts: inout VerifyReport.Counts) throws {
        for row in try Row.fetchAll(db, sql: "SELECT status, count(*) AS n FROM jobs GROUP BY status") {
            let status: String = row["status"] ?? "NULL", n: Int = row["n"]
            counts.jobsByStatus[status] = n
            counts.jobs += n
        }
        counts.mediaRows = try Int.fetchOne(db, sql: "SELECT count(*) FROM media") ?? 0
        if try db.tableExists("job_events") {
            counts.events = try Int.fetchOne(db, sql: "SELECT count(*) FROM job_events") ?? 0
        }
    }

    // MARK: Files the database refers to

    /// Checks every path a media row holds; returns the referenced paths under the library.
    func reconcileMediaRows(_ db: Database, into report: inout VerifyReport) throws -> ReferencedPaths {
        var referenced = ReferencedPaths()
        let libraryPrefix = PathBytes(layout.libraryRoot.utf8) + [UInt8(ascii: "/")]
        let rootPrefix = PathBytes(layout.mediaRoot.utf8) + [UInt8(ascii: "/")]
        let walk = try libraryWalk?.awaitComplete()
        try MediaReferences.forEach(db, mediaRoot: layout.mediaRoot) { reference in
            let path = reference.path
            report.counts.referencedFiles += 1
            let inLibrary = path.starts(with: libraryPrefix)
            if inLibrary, walk == nil { referenced.insert(path) }
            // Shown only in a finding: most references have none.
            var shown: String { PathText.display(path) }
            guard path.starts(with: rootPrefix) else {
                report.findings.append(Finding(.outsideMediaRoot, jobID: reference.jobID, path: shown,
                                               expected: "a path under MEDIA_ROOT (\(PathText.display(layout.mediaRoot)))", actual: "outside it",
                                               message: "\(reference.column) is outside MEDIA_ROOT: backup skips it, restore cannot move it; check MEDIA_ROOT"))
                return
            }
            // A regular file the walk saw needs no second look; anything else (a link, a
            // file it did not see) is looked at, following links, as without a walk.
            let status: Result<FileInfo, Errno>
            if inLibrary, let size = walk?.regularFileSize(path) {
                status = .success(FileInfo(kind: .regular, size: size, mode: 0, modified: 0, inode: 0))
            } else {
                status = FileSystem.status(onDisk(path), followLinks: true)
            }
            switch status {
            case .failure(let errno):
                report.findings.append(Finding(.missingFile, jobID: reference.jobID, path: shown, expected: "a file",
                                               actual: errno == .noSuchFileOrDirectory ? "missing" : errno.description,
                                               message: "\(reference.column) does not exist"))
            case .success(let info) where info.kind != .regular:
                report.findings.append(Finding(.notAFile, jobID: reference.jobID, path: shown, expected: "a regular file",
                                               actual: "\(info.kind)", message: "\(reference.column) is not a regular file"))
            case .success(let info):
                if let recorded = reference.recordedSize, recorded != info.size {
                    report.findings.append(Finding(.sizeMismatch, jobID: reference.jobID, path: shown,
                                                   expected: "\(recorded) bytes", actual: "\(info.size) bytes",
                                                   message: "video size differs from media.file_size_bytes"))
                }
            }
        }
        referenced.seal()
        return referenced
    }

    func checkCompleteJobs(_ db: Database, into report: inout VerifyReport) throws {
        let cursor = try Row.fetchCursor(db, sql: """
            SELECT j.id, m.id IS NULL AS no_row FROM jobs j LEFT JOIN media m ON m.job_id = j.id
            WHERE j.status = 'COMPLETE' AND (m.id IS NULL OR m.video_path IS NULL OR m.video_path = '')
            """)
        while let row = try cursor.next() {
            let noRow: Bool = row["no_row"]
            report.findings.append(Finding(.completeWithoutMedia, jobID: row["id"],
                                           expected: "a media row with a video_path",
                                           actual: noRow ? "no media row" : "no video_path",
                                           message: "COMPLETE job without its video"))
        }
    }

    // MARK: Temp directories

    func checkTempDirectories(_ db: Database, into report: inout VerifyReport) throws {
        let root = layout.tempRoot
        let lookup = try db.makeStatement(sql: TempRetention.jobQuery)
        let names = layout.tempDirectoryNames
        let removing = PathBytes(TempCleanup.removingPrefix.utf8)
        // Looked up by hand on the prepared statement: through a cursor and a `Row` each took
        // 18,000 instructions, for a volume of 100,000 jobs 18,767 times.
        let sqlite = lookup.sqliteStatement
        func job(_ id: String) throws -> (status: String?, finished: Double?)? {
            sqlite3_reset(sqlite)
            defer { sqlite3_reset(sqlite) }
            // SQLITE_TRANSIENT: SQLite copies the text.
            let bound = id.withCString { sqlite3_bind_text(sqlite, 1, $0, -1, unsafeBitCast(-1, to: sqlite3_destructor_type.self)) }
            var code = bound == SQLITE_OK ? sqlite3_step(sqlite) : bound
            switch code {
            case SQLITE_DONE:
                return nil
            case SQLITE_ROW:
                // Optional: a damaged database can return NULL where the schema forbids it.
                let finished = sqlite3_column_type(sqlite, 1) == SQLITE_NULL ? nil : sqlite3_column_double(sqlite, 1)
                return (DatabaseAccess.text(sqlite, 0), finished)
            default:
                code = sqlite3_errcode(db.sqliteConnection)
                throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
            }
        }
        do {
            try DirectoryWalker(root: onDisk(root)).list { entry in
                guard entry.kind == .directory else { return }
                report.counts.tempDirectories += 1
                let path = PathBytes(root.utf8).appendingComponent(entry.relativePath)
                var shown: String { PathText.display(path) } // for findings only
                if entry.relativePath.starts(with: removing) {
                    report.findings.append(Finding(.unknownTempDirectory, path: shown, expected: "a job in the database",
                                                   actual: "set aside by a cleanup that was stopped or could not remove it",
                                                   message: "temp directory being removed; the next `coffer cleanup` finishes it"))
                    return
                }
                guard let jobID = names.jobID(entry.relativePath), let row = try job(jobID) else {
                    report.findings.append(Finding(.unknownTempDirectory, path: shown, expected: "a job in the database",
                                                   actual: "no such job", message: "temp directory of an unknown job"))
                    return
                }
                let status = row.status
                // When the job did not record its end, the directory's last change stands in.
                let decision = TempRetention.decide(known: true, status: status, finished: row.finished,
                                                    lastChange: try? FileSystem.status(onDisk(path)).get().modified, now: now)
                if case .expired(let age, let limit) = decision {
                    report.findings.append(Finding(
                        .expiredTempDirectory, jobID: jobID, path: shown,
                        expected: "removed \(TempRetention.describe(limit)) after \(status ?? "NULL")",
                        actual: "\(status ?? "NULL") \(Formatting.age(seconds: age)) ago",
                        message: "temp directory kept past the pipeline's retention; `coffer cleanup` removes it"))
                }
            }
        } catch let error as CofferError {
            if case .failure(let errno) = FileSystem.status(onDisk(root)), errno == .noSuchFileOrDirectory {
                report.findings.append(Finding(.missingFile, path: PathText.display(root), expected: "a directory",
                                               actual: "missing", message: "temp root does not exist"))
            } else {
                report.findings.append(Finding(.unreadableDirectory, path: PathText.display(root), actual: error.cause,
                                               message: "temp root cannot be read"))
            }
        }
    }

    // MARK: Library

    func findOrphans(referenced: ReferencedPaths, into report: inout VerifyReport) throws {
        if let walk = try libraryWalk?.awaitComplete() {
            report.counts.libraryFiles = walk.files
            report.findings += walk.findings
            return
        }
        let root = layout.libraryRoot
        let rootBytes = PathBytes(root.utf8)
        do {
            try DirectoryWalker(root: onDisk(root)).walk(problem: { problem in
                if case .cannotOpen(let relative, let errno) = problem {
                    report.findings.append(Self.unreadableLibraryDirectory(rootBytes.appendingComponent(relative), errno))
                }
            }) { entry in
                guard entry.kind != .directory else { return }
                report.counts.libraryFiles += 1
                let path = rootBytes.appendingComponent(entry.relativePath)
                if !referenced.contains(path) {
                    report.findings.append(Self.orphan(path, size: try? FileSystem.status(onDisk(path)).get().size))
                }
            }
        } catch let error as CofferError {
            report.findings.append(Self.libraryRootProblem(root, at: onDisk(root), cause: error.cause))
        }
    }

    /// A library file no media row refers to (`size`: its own, not a link's target's).
    static func orphan(_ path: PathBytes, size: Int64?) -> Finding {
        Finding(.orphanFile, path: PathText.display(path), expected: "a media row",
                actual: size.map { "none (file of \($0) bytes)" } ?? "none", message: "file no media row refers to")
    }

    static func unreadableLibraryDirectory(_ path: PathBytes, _ errno: Errno) -> Finding {
        Finding(.unreadableDirectory, path: PathText.display(path), actual: errno.description, message: "library directory cannot be read")
    }

    /// The library root cannot be walked (now `at` that place): missing, or `cause`.
    static func libraryRootProblem(_ root: String, at place: String, cause: String) -> Finding {
        if case .failure(let errno) = FileSystem.status(place), errno == .noSuchFileOrDirectory {
            return Finding(.missingFile, path: PathText.display(root), expected: "a directory",
                           actual: "missing", message: "library root does not exist")
        }
        return Finding(.unreadableDirectory, path: PathText.display(root), actual: cause, message: "library root cannot be read")
    }

    // MARK: Staged volume

    /// Where `path` is now: under the staged media tree when it is under MEDIA_ROOT and the
    /// volume is ``staged``, else itself.
    func onDisk(_ path: PathBytes) -> PathBytes {
        guard let staged else { return path }
        let root = PathBytes(layout.mediaRoot.utf8)
        guard path.starts(with: root), path.count == root.count || path[root.count] == UInt8(ascii: "/") else { return path }
        return PathBytes(staged.mediaRoot.utf8) + path[root.count...]
    }

    func onDisk(_ path: String) -> String {
        staged == nil ? path : String(decoding: onDisk(PathBytes(path.utf8)), as: UTF8.self)
    }

    // MARK: Disk space

    func checkDiskSpace(into report: inout VerifyReport) {
        switch FileSystem.freeSpace(onDisk(layout.mediaRoot)) {
        case .failure(let errno):
            report.findings.append(Finding(.diskSpaceLow, path: PathText.display(layout.mediaRoot),
                                           actual: errno.description, message: "free space cannot be read"))
        case .success(let space):
            report.freeSpaceBytes = space.available
            if let finding = DiskSpaceCheck.finding(available: space.available, minimum: minFreeSpaceBytes,
                                                     alert: alertFreeSpaceBytes, path: layout.mediaRoot) {
                report.findings.append(finding)
            }
        }
    }
}

/// The library paths media rows refer to, kept as 64-bit hashes (8 bytes each, not the path):
/// a million references cost 8 MB. Two paths share a hash with a chance of about one in 10^7
/// for ten million paths; the cost of that is one orphan not reported.
///
/// Filled first, then sealed (sorted, duplicates dropped), then asked: a sorted array holds a
/// hash in 8 bytes where a hash set takes 16 to 32 and twice that while it grows.
struct ReferencedPaths {
    private var hashes: [UInt64] = []
    private var isSealed = true
    /// One bit per sealed hash: removed since.
    private var removed: [UInt64] = []

    /// Distinct paths inserted and not removed (once sealed).
    var count: Int {
        precondition(isSealed, "ReferencedPaths asked before seal()")
        return hashes.count - removed.reduce(0) { $0 + $1.nonzeroBitCount }
    }

    mutating func insert(_ path: PathBytes) {
        hashes.append(Self.hash(path))
        isSealed = false
    }

    /// Sorts the hashes and drops duplicates: call once every path is in.
    mutating func seal() {
        guard !isSealed else { return }
        hashes.sort()
        var kept = 0
        for index in hashes.indices where kept == 0 || hashes[index] != hashes[kept - 1] {
            hashes[kept] = hashes[index]
            kept += 1
        }
        hashes.removeLast(hashes.count - kept)
        removed = Array(repeating: 0, count: (kept + 63) / 64)
        isSealed = true
    }

    func contains(_ path: PathBytes) -> Bool {
        guard let index = find(Self.hash(path)) else { return false }
        return removed[index >> 6] & Self.bit(index) == 0
    }

    mutating func remove(_ path: PathBytes) {
        guard let index = find(Self.hash(path)) else { return }
        remove(slot: index)
    }

    /// Where `path` is among the sealed paths (removed or not), for data kept beside them.
    func slot(of path: PathBytes) -> Int? { find(Self.hash(path)) }

    /// The number of slots (distinct paths ever inserted).
    var slotCount: Int {
        precondition(isSealed, "ReferencedPaths asked before seal()")
        return hashes.count
    }

    mutating func remove(slot index: Int) {
        removed[index >> 6] |= Self.bit(index)
    }

    /// The bit of the hash at `index` in its word of `removed`.
    private static func bit(_ index: Int) -> UInt64 { 1 << UInt64(index & 63) }

    private func find(_ hash: UInt64) -> Int? {
        precondition(isSealed, "ReferencedPaths asked before seal()")
        var low = 0, high = hashes.count
        while low < high {
            let middle = (low + high) / 2
            if hashes[middle] < hash { low = middle + 1 } else { high = middle }
        }
        return low < hashes.count && hashes[low] == hash ? low : nil
    }

    /// FNV-1a over the bytes, then a final mix (stable across runs, unlike `Hasher`).
    static func hash(_ path: PathBytes) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in path { h = (h ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        h ^= h >> 33
        h = h &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 33
        return h
    }
}

/// What a caller's walk of the library saw, handed to a ``LiveVerifier`` running beside it
/// (backup walks the library to pack it; its reconciliation need not walk it again).
///
/// The walk fills it, then calls ``finish(_:)``; the verifier waits for that. Memory:
/// 8 bytes per library reference beside their hashes, plus the findings.
final class LibraryWalk: @unchecked Sendable {
    /// The library's references (sealed), as the verifier would collect them.
    private(set) var references = ReferencedPaths()
    /// By index in `references`: the size of the regular file the walk saw there, or -1.
    private var sizes: [Int64] = []
    /// Entries in the library that are not directories.
    var files = 0
    /// Orphans and unreadable directories, in walk order.
    var findings: [Finding] = []
    enum Outcome {
        /// The whole library was walked.
        case complete
        /// Not all of it (its root is not a readable folder under the walk's root): the
        /// verifier walks it itself.
        case incomplete
        /// The caller stopped (an error, an interruption): the verifier stops too.
        case abandoned
    }

    private(set) var outcome = Outcome.abandoned
    private let done = DispatchSemaphore(value: 0)
    /// References whose file the walk had seen (no `stat` needed), for tests.
    private(set) var served = 0

    /// Takes the library's references, before the walk starts.
    func start(references: ReferencedPaths) {
        self.references = references
        sizes = Array(repeating: -1, count: references.slotCount)
    }

    /// A non-directory entry of the library, as the walk saw it (`info`: its own status, not a
    /// link's target's; nil when it vanished). Returns its slot among the references, if any.
    @discardableResult
    func saw(_ path: PathBytes, _ info: FileInfo?) -> Int? {
        files += 1
        guard let slot = references.slot(of: path) else {
            findings.append(LiveVerifier.orphan(path, size: info?.size))
            return nil
        }
        if let info, info.kind == .regular { sizes[slot] = info.size }
        return slot
    }

    /// Called once, whatever happens.
    func finish(_ outcome: Outcome) {
        self.outcome = outcome
        done.signal()
    }

    /// Waits for ``finish(_:)``: self when the walk was complete, nil when the verifier must
    /// walk the library itself; throws when the caller gave up.
    func awaitComplete() throws -> LibraryWalk? {
        done.wait()
        done.signal() // for the next caller
        switch outcome {
        case .complete: return self
        case .incomplete: return nil
        case .abandoned: throw CancellationError()
        }
    }

    /// The size of the regular file the walk saw at `path`, a library reference.
    func regularFileSize(_ path: PathBytes) -> Int64? {
        guard let slot = references.slot(of: path), sizes[slot] >= 0 else { return nil }
        served += 1
        return sizes[slot]
    }
}

/// Free space against the two thresholds.
public enum DiskSpaceCheck {
    public static func finding(available: UInt64, minimum: UInt64, alert: UInt64, path: String) -> Finding? {
        if available < minimum {
            return Finding(.diskSpaceLow, path: PathText.display(path), expected: "at least \(Formatting.bytes(minimum)) (MIN_FREE_SPACE_GB)",
                           actual: Formatting.bytes(available), message: "free space below the minimum: the pipeline stops taking jobs")
        }
        if available < alert {
            return Finding(.diskSpaceAlert, path: PathText.display(path), expected: "at least \(Formatting.bytes(alert)) (ALERT_FREE_SPACE_GB)",
                           actual: Formatting.bytes(available), message: "free space below the alert threshold")
        }
        return nil
    }
}
