import Crypto
import CSQLiteConfig
import Foundation
import GRDB
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// `coffer restore`: a snapshot into a fresh volume (a database path and a media root).
///
/// Targets must be missing or empty unless `force`. Everything is first written into staging
/// places on the targets' filesystems (a 0700 folder beside the media root, a temporary name
/// beside the database), re-hashed as it is written, and renamed into place only when every
/// byte matched its record; any mismatch, refused entry or failure removes the staging and
/// leaves the targets as they were. Paths stored in the database are rewritten from the
/// snapshot's MEDIA_ROOT to the new one. Afterwards the restored volume is verified.
public struct Restorer {
    public enum Part: String, Sendable { case db, media }

    public var configuration: CofferConfiguration
    public var snapshot = "latest"
    public var only: Part?
    public var force = false
    public var dryRun = false
    public var logger = Logger(label: "coffer.restore")
    public var progress: Progress?
    /// Called once the free space is found sufficient, before anything is written: for tests
    /// in which another writer fills the disk at that moment.
    var afterCheckingSpace: (() throws -> Void)?

    public init(configuration: CofferConfiguration) { self.configuration = configuration }

    var restoresDatabase: Bool { only != .media }
    var restoresMedia: Bool { only != .db }

    public func run() throws -> RestoreReport {
        let started = Date()
        let layout = configuration.layout
        let repository = try Repository.open(configuration.repo)
        let lock = try repository.lock(exclusive: false, command: "restore")
        defer { withExtendedLifetime(lock) {} }
        let snap = try repository.resolve(snapshot, volume: .init(dbPath: layout.dbPath, mediaRoot: layout.mediaRoot))
        // A record changed since it was written (a mode, an mtime, an offset) is not followed.
        try repository.reader(for: snap).checkDigest()
        var report = RestoreReport(repository: repository.location, snapshot: snap.id, dbPath: layout.dbPath,
                                   mediaRoot: layout.mediaRoot, dryRun: dryRun)

        // Records, checked before anything is written, as they stream by: memory does not
        // grow with the snapshot.
        var packNames: [String] = []
        var packIndex: [String: Int32] = [:]
        var previous: PathBytes?
        var sorted = true
        var fileCount = 0
        var byteCount: Int64 = 0
        try repository.reader(for: snap).files { file in
            if let reason = RestorePlan.problem(with: file.path) { throw RestorePlan.refuse(file.path, reason, in: snap.id) }
            // A snapshot records permission bits only: setuid, setgid or sticky is not Coffer's.
            if file.mode & ~0o777 != 0 {
                throw RestorePlan.refuse(file.path, "mode \(String(file.mode, radix: 8)) has setuid, setgid or sticky bits", in: snap.id)
            }
            if let previous, !previous.lexicographicallyPrecedes(file.path) {
                if previous == file.path { throw RestorePlan.refuse(file.path, "listed twice", in: snap.id) }
                sorted = false
            }
            previous = file.path
            if packIndex[file.pack] == nil {
                packIndex[file.pack] = Int32(packNames.count)
                packNames.append(file.pack)
            }
            fileCount += 1
            byteCount += file.size
        }
        // Records are sorted by path; one that is not (written by hand?) is checked the slow way.
        if !sorted {
            var paths: [PathBytes] = []
            try repository.reader(for: snap).files { paths.append($0.path) }
            paths.sort { $0.lexicographicallyPrecedes($1) }
            for (previous, next) in zip(paths, paths.dropFirst()) where previous == next {
                throw RestorePlan.refuse(next, "listed twice", in: snap.id)
            }
        }
        if restoresMedia {
            report.files = fileCount
            report.bytes = byteCount
        }
        if restoresDatabase { report.databaseBytes = snap.summary.database.size }
        // One restore at a time into a place: its targets are checked, staged beside and
        // swept under a lock on the folders that hold them (a dry run writes nothing).
        var folders: [String] = []
        if restoresDatabase { folders.append(PathText.parent(layout.dbPath)) }
        if restoresMedia { folders.append(PathText.parent(layout.mediaRoot)) }
        let targetLock = dryRun ? nil : try TargetLock(folders: folders)
        defer { withExtendedLifetime(targetLock) {} }
        // A restore of these targets killed while it put them in place (its media there, its
        // database not yet): the same snapshot's restore finishes it, then checks the result.
        // Another snapshot's is refused without --force (which restores over it).
        let interrupted = dryRun || !restoresDatabase || !restoresMedia ? nil : interruptedPublish(layout)
        if let interrupted, interrupted.note.snapshot != snap.id, !force {
            throw CofferError(.failed, operation: "restore into", subject: layout.mediaRoot,
                              cause: "a restore of snapshot \(interrupted.note.snapshot) was stopped while it put these targets in place (its media are there, its database is not); nothing was changed",
                              hint: "run `coffer restore --snapshot \(interrupted.note.snapshot)` with the same targets to finish it, or pass --force to restore \(snap.id) over it")
        }
        if let interrupted, interrupted.note.snapshot == snap.id {
            try finishPublishing(interrupted, layout: layout)
            logger.warning("finished the restore of snapshot \(snap.id) stopped while it was put in place (its media were, its database was not)")
            report.pathsRewritten = interrupted.note.pathsRewritten
            sweepStaging(layout)
            report.verify = try checkInPlace(after: nil)
            Self.removeCheckFiles(layout.dbPath)
            report.restoreSeconds = Date().timeIntervalSince(started)
            report.seconds = report.restoreSeconds
            return report
        }
        try checkTargets(layout)
        try checkSpace(bytes: report.bytes + report.databaseBytes * 2, near: layout)
        try afterCheckingSpace?()
        if dryRun {
            report.seconds = Date().timeIntervalSince(started)
            return report
        }

        // Staging, beside the targets; what a killed restore left there goes first.
        sweepStaging(layout)
        var cleanup: [() -> Void] = []
        defer { for step in cleanup.reversed() { step() } }
        // The database on a second core: extracted, re-hashed, its paths rewritten and
        // integrity-checked in its staging place while the media are written.
        let databaseLane = DatabaseLane()
        let group = DispatchGroup()
        defer { group.wait() } // before the staging is removed
        if restoresDatabase {
            let directory = PathText.parent(layout.dbPath)
            try FileSystem.makeDirectories(directory, mode: 0o755)
            let staging = try ScratchDirectory(prefix: Self.databaseStagingPrefix, in: directory)
            cleanup.append { staging.remove() }
            let path = staging.path + "/db.sqlite"
            DispatchQueue.global().async(group: group) { [self] in
                databaseLane.run {
                    try prepareDatabase(snap, from: repository, at: path, lane: databaseLane, started: started)
                    logger.debug("database extracted and checked", metadata: ["seconds": "\(Date().timeIntervalSince(started))"])
                }
            }
        }
        // The staged volume's check, on its own thread (joined before the staging goes).
        let stagedCheck = StagedCheck()
        let checking = DispatchGroup()
        defer { checking.wait() }
        var stagedMedia: String?
        if restoresMedia {
            try FileSystem.makeDirectories(PathText.parent(layout.mediaRoot), mode: 0o755)
            let staging = try ScratchDirectory(prefix: Self.mediaStagingPrefix(layout), in: Self.mediaStagingFolder(layout))
            cleanup.append { staging.remove() }
            let stagingSync = try FilesystemSync(staging.path) // before any file is written (see FilesystemSync)
            progress?.start(total: report.bytes)
            // The files to write wait in a spool (unlinked, in the staging folder), not in memory.
            let spool = try Spool<PlannedFile>(in: staging.path)
            try repository.reader(for: snap).files { file in
                try spool.append(PlannedFile(path: file.path, size: file.size, mode: file.mode, mtime: file.mtime,
                                             sha256: SHA256Value(hex: file.sha256), pack: packIndex[file.pack] ?? -1))
            }
            do {
                try extractMedia(spool, packNames: packNames, repository: repository, into: staging.path)
            } catch is PackOutOfOrder {
                // A pack whose entries are not in path order (not one Coffer wrote), or a file
                // missing from its pack: start again the way that needs no order, and names what
                // is missing.
                try? DirectoryWalker(root: staging.path).list { FileSystem.removeTree(PathBytes(staging.path.utf8).appendingComponent($0.relativePath)) }
                var files: [PlannedFile] = []
                try spool.rewind()
                while let file = try spool.next() { files.append(file) }
                try extractMedia(files, packNames: packNames, repository: repository, into: staging.path)
            }
            logger.debug("media staged", metadata: ["seconds": "\(Date().timeIntervalSince(started))"])
            // The volume's folders exist even when they held no file (empty folders are not stored).
            for root in [layout.libraryRoot, layout.tempRoot] where root.hasPrefix(layout.mediaRoot + "/") {
                try FileSystem.makeDirectories(staging.path + "/" + root.dropFirst(layout.mediaRoot.count + 1), mode: 0o755)
            }
            // The check of the result, while the tree is synced (it only reads): on the staged
            // volume, once the database lane is done, when both parts land whole where nothing
            // was (no database at DB_PATH, an empty or missing media root); else after they are
            // in place (what they replace or join is then part of what is checked).
            if restoresDatabase, FileSystem.status(layout.dbPath).isFailure, isFresh(layout.mediaRoot) {
                checking.enter()
                group.notify(queue: .global()) { [self, staging] in
                    defer { checking.leave() }
                    guard databaseLane.error == nil, let path = databaseLane.path else { return }
                    var verifier = resultVerifier(after: databaseLane)
                    verifier.staged = (database: path, mediaRoot: staging.path)
                    stagedCheck.result = Result { try verifier.run() }
                    logger.debug("result checked, staged", metadata: ["seconds": "\(Date().timeIntervalSince(started))"])
                }
            }
            // One syncfs for the whole staged tree instead of an fsync per file: everything is
            // on disk before anything is renamed into place.
            try stagingSync.sync()
            logger.debug("media synced", metadata: ["seconds": "\(Date().timeIntervalSince(started))"])
            stagedMedia = staging.path
        }
        var stagedDatabase: String?
        if restoresDatabase {
            group.wait()
            try Interruption.check("restore") // the lane's failure may be the stop's doing
            if let error = databaseLane.error { throw error }
            stagedDatabase = databaseLane.path
            report.pathsRewritten = databaseLane.rewritten
        }
        checking.wait()
        progress?.finish()
        // The last moment a stop leaves the targets untouched.
        try Interruption.check("restore")

        // Into place: only now are the targets touched. Two renames, the media then the
        // database: a note beside the staged database first, so that a run killed between
        // them is finished by the next (``finishPublishing(_:layout:)``). Not for media merged
        // into a media root that holds files (--force): that is done again, with --force.
        var wholeMediaRoot = true
        if let stagedMedia, let stagedDatabase, isFresh(layout.mediaRoot) {
            try PublishNote(snapshot: snap.id, dbPath: layout.dbPath, mediaRoot: layout.mediaRoot, mediaStaging: stagedMedia,
                            pathsRewritten: report.pathsRewritten).write(into: PathText.parent(stagedDatabase))
        }
        if let stagedMedia { wholeMediaRoot = try publishMedia(stagedMedia, to: layout.mediaRoot) }
        // Test-only: holds the run between the two renames, for the kill -9 test there.
        if let pause = ProcessInfo.processInfo.environment["COFFER_TEST_PAUSE_BETWEEN_RENAMES"].flatMap(Double.init) {
            Thread.sleep(forTimeInterval: pause)
        }
        if let stagedDatabase { try Self.placeDatabase(stagedDatabase, at: layout.dbPath) }
        report.restoreSeconds = Date().timeIntervalSince(started)
        logger.debug("in place", metadata: ["seconds": "\(report.restoreSeconds)"])

        // The restored volume, checked (already, when it was staged and moved whole).
        if restoresDatabase {
            if let result = stagedCheck.result, wholeMediaRoot {
                report.verify = try result.get()
                report.checkedWhileStaged = true
            } else {
                report.verify = try checkInPlace(after: databaseLane)
                logger.debug("result checked", metadata: ["seconds": "\(Date().timeIntervalSince(started))"])
            }
            Self.removeCheckFiles(layout.dbPath)
        }
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    /// The staged volume's check, from its thread.
    final class StagedCheck: @unchecked Sendable {
        var result: Result<VerifyReport, Error>?
    }

    /// Whether `mediaRoot` is missing or an empty folder (one that cannot be listed counts as
    /// empty: the rename into place finds out): a target restore takes without `--force`, and
    /// the staged tree is then moved into place whole (``publishMedia(_:to:)``). A new disk
    /// mounted there is fresh too: its filesystem's empty `lost+found` does not count, nor
    /// does a staging folder of a restore (swept before the next stages).
    func isFresh(_ mediaRoot: String) -> Bool {
        guard case .success(let info) = FileSystem.status(mediaRoot) else { return true }
        var empty = info.kind == .directory
        guard empty else { return false }
        let mountPoint = Self.isMountPoint(mediaRoot)
        let staging = PathBytes(Self.mediaStagingPrefix(mediaRoot).utf8)
        try? DirectoryWalker(root: mediaRoot).list { entry in
            let name = entry.relativePath
            if mountPoint, name.starts(with: staging) { return }
            if mountPoint, name == PathBytes("lost+found".utf8), entry.kind == .directory {
                var inside = false
                try? DirectoryWalker(root: mediaRoot + "/lost+found").list { _ in inside = true }
                if !inside { return }
            }
            empty = false
        }
        return empty
    }

    /// Where the media are staged: beside MEDIA_ROOT, to be renamed into place whole; or, when
    /// MEDIA_ROOT is a mount point (a new disk mounted there, the usual way onto new hardware),
    /// inside it, since a rename cannot leave a filesystem.
    static func mediaStagingFolder(_ layout: VolumeLayout) -> String {
        isMountPoint(layout.mediaRoot) ? layout.mediaRoot : PathText.parent(layout.mediaRoot)
    }

    static func mediaStagingPrefix(_ layout: VolumeLayout) -> String { mediaStagingPrefix(layout.mediaRoot) }

    /// The database's staging folder beside DB_PATH is named this, a dot and a random part.
    static let databaseStagingPrefix = ".coffer-restore-db"

    static func mediaStagingPrefix(_ mediaRoot: String) -> String {
        ".coffer-restore-\((mediaRoot as NSString).lastPathComponent)"
    }

    /// A folder on another filesystem than the folder that holds it.
    static func isMountPoint(_ path: String) -> Bool {
        var own = stat(), parent = stat()
        guard stat(path, &own) == 0, own.st_mode & S_IFMT == S_IFDIR, stat(PathText.parent(path), &parent) == 0 else { return false }
        return own.st_dev != parent.st_dev
    }

    /// The database side of a restore, run on its own core.
    final class DatabaseLane: @unchecked Sendable {
        var path: String?
        var rewritten = 0
        var integrity: [String]?
        /// The restored database's own checks, run on the staged copy (`nil`: run after the rename).
        var checks: LiveVerifier.DatabaseChecks?
        var error: Error?

        func run(_ body: () throws -> Void) {
            do { try body() } catch { self.error = error }
        }
    }

    /// The check of the restored volume: integrity_check, with the output the staged copy gave
    /// (these very bytes, before the rename), and the database's other checks the lane ran on
    /// them; without a lane, all of them run.
    func resultVerifier(after lane: DatabaseLane?) -> LiveVerifier {
        var verifier = LiveVerifier(configuration: configuration)
        verifier.full = true
        verifier.integrityLines = lane?.integrity
        verifier.databaseChecks = lane?.checks
        return verifier
    }

    /// The check of the restored volume once it is in place: a stop no longer cuts it short
    /// (it would leave the restore done but unreported).
    func checkInPlace(after lane: DatabaseLane?) throws -> VerifyReport {
        var verifier = resultVerifier(after: lane)
        verifier.stopsWhenAsked = false
        return try verifier.run()
    }

    /// Extracts the snapshot's database copy to `path`, checks its digest, rewrites its media
    /// paths to the new MEDIA_ROOT and runs integrity_check on the result.
    func prepareDatabase(_ snap: Snapshot, from repository: Repository, at path: String, lane: DatabaseLane, started: Date) throws {
        let sha = try DatabaseExtractor.extract(snap.summary.database, from: repository, to: path)
        guard sha == snap.summary.database.sha256 else {
            throw CofferError(.failed, operation: "restore database from", subject: snap.id,
                              cause: "the decompressed copy's SHA-256 differs from the one recorded; nothing was written to the targets")
        }
        do {
            lane.rewritten = try rewritePaths(in: path, from: snap.header.mediaRoot, to: configuration.layout.mediaRoot)
        } catch let error as DatabaseError {
            // The copy is untrusted: damage can stop the rewrite (its triggers do not run).
            // Nothing is in place yet.
            throw CofferError(.failed, operation: "rewrite the media paths of the database of", subject: snap.id,
                              cause: error.message ?? "\(error.resultCode)",
                              hint: "the snapshot's database is damaged; nothing was written to the targets: restore an earlier snapshot (`coffer snapshots`)")
        }
        logger.debug("database extracted, paths rewritten", metadata: ["seconds": "\(Date().timeIntervalSince(started))"])
        // The check of the restored volume, its database part: here, beside the media, on the
        // same bytes (what remains after the rename looks only at the files), and beside
        // integrity_check (both only read the copy).
        var checker = resultVerifier(after: nil)
        checker.checksIntegrity = false
        let checks = DispatchGroup()
        DispatchQueue.global().async(group: checks) { [checker] in lane.checks = try? checker.databaseChecks(at: path) }
        defer { checks.wait() }
        let queue = try DatabaseQueue(path: path, configuration: DatabaseAccess.untrustedConfiguration())
        do {
            lane.integrity = try queue.read { db in
                try DatabaseAccess.stoppable(db, "restore") { try DatabaseAccess.check(db, limit: LiveVerifier.integrityLineLimit, mapped: true) }
            }
        } catch let error as DatabaseError {
            lane.integrity = ["integrity_check failed: \(error.message ?? "\(error.resultCode)")"]
        }
        try queue.close()
        checks.wait()
        guard chmod(path, 0o644) == 0 else { throw CofferError.system("set permissions of", path, errno: errno) }
        lane.path = path
    }

    /// The read-only check leaves an empty -wal and -shm beside the database; one read-write
    /// open and close removes them, so the target holds just the database.
    static func removeCheckFiles(_ dbPath: String) {
        if let queue = try? DatabaseQueue(path: dbPath, configuration: DatabaseAccess.configuration(readOnly: false)) {
            try? queue.close()
        }
    }

    /// What a restore is putting in place, written beside its staged database before the
    /// first of its two renames (`publishing.json`).
    struct PublishNote: Codable {
        var snapshot: String
        var dbPath: String
        var mediaRoot: String
        var mediaStaging: String
        var pathsRewritten = 0
        static let name = "publishing.json"

        func write(into folder: String) throws {
            let path = folder + "/" + Self.name
            let fd = try RawIO.createNew(path)
            defer { close(fd) }
            let data = try JSONEncoder().encode(self)
            try data.withUnsafeBytes { try RawIO.writeAll(fd, $0.baseAddress!, $0.count, path: path) }
            try RawIO.sync(fd, path: path)
            try FileSystem.syncDirectory(folder)
        }
    }

    /// The staged database in place: a write-ahead log left by a database it replaces would
    /// be replayed into it, so that goes first (the pipeline must be stopped for a forced
    /// restore); then the rename, and the folder synced.
    static func placeDatabase(_ staged: String, at dbPath: String) throws {
        for suffix in ["-wal", "-shm"] { unlink(dbPath + suffix) }
        guard rename(staged, dbPath) == 0 else { throw CofferError.system("rename database into", dbPath, errno: errno) }
        try FileSystem.syncDirectory(PathText.parent(dbPath))
    }

    /// A restore of these targets killed between its two renames, found by its note: nothing
    /// at DB_PATH, its database still staged beside it (checked whole before the note was
    /// written), MEDIA_ROOT there. `staging` is the database's staging folder.
    func interruptedPublish(_ layout: VolumeLayout) -> (note: PublishNote, staging: String)? {
        guard FileSystem.status(layout.dbPath).isFailure, case .success(let media) = FileSystem.status(PathBytes(layout.mediaRoot.utf8), followLinks: true),
              media.kind == .directory else { return nil }
        let directory = PathText.parent(layout.dbPath)
        var found: (PublishNote, String)?
        try? DirectoryWalker(root: directory).list { entry in
            guard found == nil, entry.kind == .directory, entry.relativePath.starts(with: PathBytes((Self.databaseStagingPrefix + ".").utf8)) else { return }
            let staging = directory + "/" + PathText.display(entry.relativePath)
            guard let data = try? Data(contentsOf: URL(fileURLWithPath: staging + "/" + PublishNote.name)),
                  let note = try? JSONDecoder().decode(PublishNote.self, from: data),
                  note.dbPath == layout.dbPath, note.mediaRoot == layout.mediaRoot,
                  !FileSystem.status(staging + "/db.sqlite").isFailure,
                  // Its media landed (staged beside: renamed away), or wait inside the mount.
                  FileSystem.status(note.mediaStaging).isFailure || PathText.parent(note.mediaStaging) == layout.mediaRoot else { return }
            found = (note, staging)
        }
        return found
    }

    /// Finishes it: what is left of the media's staging moves into place (staged inside a
    /// mount point, the top-level folders move one at a time; beside MEDIA_ROOT, the one
    /// rename was done), then the database. Called under the targets' lock.
    func finishPublishing(_ interrupted: (note: PublishNote, staging: String), layout: VolumeLayout) throws {
        let mediaStaging = interrupted.note.mediaStaging
        if PathText.parent(mediaStaging) == layout.mediaRoot, case .success = FileSystem.status(mediaStaging) {
            try Self.moveEntries(of: mediaStaging, into: layout.mediaRoot)
        }
        try Self.placeDatabase(interrupted.staging + "/db.sqlite", at: layout.dbPath)
        FileSystem.removeTree(interrupted.staging)
    }

    /// The top-level entries of a staging folder inside MEDIA_ROOT (a mount point) moved up
    /// into it, a rename each, and MEDIA_ROOT synced.
    static func moveEntries(of staging: String, into mediaRoot: String) throws {
        var names: [PathBytes] = []
        try DirectoryWalker(root: staging).list { names.append($0.relativePath) }
        for name in names {
            let source = PathBytes(staging.utf8).appendingComponent(name), target = PathBytes(mediaRoot.utf8).appendingComponent(name)
            if source.withCPath({ s in target.withCPath { rename(s, $0) } }) != 0 {
                throw CofferError.system("rename media into", PathText.display(target), errno: errno)
            }
        }
        try FileSystem.syncDirectory(mediaRoot)
    }

    static func stagingPrefixes(_ layout: VolumeLayout) -> [(directory: String, prefix: String)] {
        [(mediaStagingFolder(layout), mediaStagingPrefix(layout) + "."),
         (PathText.parent(layout.dbPath), databaseStagingPrefix + ".")]
    }

    func sweepStaging(_ layout: VolumeLayout) {
        for (directory, prefix) in Self.stagingPrefixes(layout) { FileSystem.removeDirectories(in: directory, named: prefix) }
    }

    /// An exclusive `flock` on each folder that holds a target (the same folder once): a
    /// second restore or drill into the same place exits 3 instead of checking, staging and
    /// sweeping beside the first. It dies with its process, like the repository's lock.
    ///
    /// Folders it had to create are removed again at the end if they are still empty (a
    /// restore refused or failed leaves no trace there).
    final class TargetLock {
        private var descriptors: [Int32] = []
        private var created: [String] = []

        init(folders: [String]) throws {
            var seen = Set<[UInt64]>()
            for folder in folders {
                var missing: [String] = []
                var probe = folder
                while case .failure = FileSystem.status(probe), !probe.isEmpty, probe != "/" {
                    missing.append(probe)
                    probe = PathText.parent(probe)
                }
                try FileSystem.makeDirectories(folder, mode: 0o755)
                created += missing
                let fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                guard fd >= 0 else { throw CofferError.system("open", folder, errno: errno) }
                var info = stat()
                guard fstat(fd, &info) == 0, seen.insert([UInt64(info.st_dev), UInt64(info.st_ino)]).inserted else {
                    close(fd)
                    continue
                }
                descriptors.append(fd)
                let code = FileSystem.tryLock(fd)
                if code != 0 {
                    guard code == EWOULDBLOCK else { throw CofferError.system("lock", folder, errno: code) }
                    throw CofferError(.locked, operation: "lock", subject: folder,
                                      cause: "another coffer restore or drill is writing into this folder; nothing was changed",
                                      hint: "wait for it to finish (`ps -C coffer -o pid,args`); the lock goes away with its process")
                }
            }
        }

        deinit {
            // Only empty ones go, the deepest first.
            for folder in created.sorted(by: { $0.utf8.count > $1.utf8.count }) { rmdir(folder) }
            for fd in descriptors { close(fd) }
        }
    }

    func checkTargets(_ layout: VolumeLayout) throws {
        guard !force else { return }
        let walSize = (try? FileSystem.status(layout.walPath).get().size) ?? 0
        if restoresDatabase, case .success(let info) = FileSystem.status(layout.dbPath), info.kind != .regular || info.size > 0 || walSize > 0 {
            throw CofferError(.failed, operation: "restore into", subject: layout.dbPath,
                              cause: "a database is already there; nothing was changed",
                              hint: "restore into a fresh --db path, or pass --force to replace it")
        }
        if restoresMedia, !isFresh(layout.mediaRoot) {
            throw CofferError(.failed, operation: "restore into", subject: layout.mediaRoot,
                              cause: "the media root is not empty; nothing was changed",
                              hint: "restore into a fresh --media-root, or pass --force to write over it")
        }
    }

    func checkSpace(bytes: Int64, near layout: VolumeLayout) throws {
        let probe = FileSystem.nearestExisting(restoresMedia ? layout.mediaRoot : layout.dbPath)
        guard case .success(let space) = FileSystem.freeSpace(probe) else { return }
        if Int64(clamping: space.available) < bytes {
            throw CofferError(.failed, operation: "check free space in", subject: probe,
                              cause: "\(Formatting.bytes(bytes)) needed, \(Formatting.bytes(space.available)) free; nothing was written",
                              hint: "free space there or restore onto a larger filesystem")
        }
    }

    /// Reads each pack the records need once, in order, and writes the needed entries into
    /// `staging`. Any unsafe entry in a pack refuses the whole restore.
    /// One file to restore, as the record says (kept small: a million of them may be held).
    struct PlannedFile: SpoolElement {
        var path: PathBytes
        var size: Int64
        var mode: UInt32
        var mtime: Double
        var sha256: SHA256Value
        var pack: Int32 // index into the pack names

        func write(to bytes: inout SpoolWriter) {
            bytes.put(bytes: path)
            bytes.put(size)
            bytes.put(mode)
            bytes.put(mtime)
            sha256.write(to: &bytes)
            bytes.put(pack)
        }

        static func read(from bytes: inout SpoolReader) throws -> PlannedFile {
            PlannedFile(path: try bytes.getBytes(), size: try bytes.get(), mode: try bytes.get(), mtime: try bytes.getDouble(),
                        sha256: try SHA256Value.read(from: &bytes), pack: try bytes.get())
        }
    }

    /// The entries of a pack are not in the order of the snapshot's files.
    struct PackOutOfOrder: Error {}

    /// Each pack read once, front to back, beside the spooled files that come from it: both are
    /// in path order (a pack holds its entries in the order backup wrote them), so they merge
    /// like two sorted lists. Throws ``PackOutOfOrder`` when they do not.
    func extractMedia(_ spool: Spool<PlannedFile>, packNames: [String], repository: Repository, into staging: String) throws {
        let writer = try StagedWriter(restorer: self, staging: staging)
        for pack in packNames.indices.sorted(by: { packNames[$0] < packNames[$1] }) {
            try spool.rewind()
            func nextFile() throws -> PlannedFile? {
                while let file = try spool.next() {
                    if file.pack == Int32(pack) { return file }
                }
                return nil
            }
            var needed = try nextFile()
            try writer.readPack(packNames[pack], of: repository) { relative in
                // Entries no file of this snapshot needs (other snapshots' content) are skipped.
                guard let file = needed else { return nil }
                guard relative == file.path else {
                    if relative.lexicographicallyPrecedes(file.path) { return nil }
                    throw PackOutOfOrder()
                }
                needed = try nextFile()
                return file
            }
            if needed != nil { throw PackOutOfOrder() }
        }
        try writer.finish()
    }

    /// The way that needs no order: every file of the snapshot in memory, each pack's entries
    /// looked up by path. For packs not written by Coffer, and to name a file a pack lacks.
    func extractMedia(_ files: [PlannedFile], packNames: [String], repository: Repository, into staging: String) throws {
        // Per pack, the indices of the files it holds (keyed by path when the pack is read,
        // sharing the records' path storage).
        var byPack: [String: [Int]] = [:]
        for (index, file) in files.enumerated() { byPack[packNames[Int(file.pack)], default: []].append(index) }
        let writer = try StagedWriter(restorer: self, staging: staging)
        for (pack, indices) in byPack.sorted(by: { $0.key < $1.key }) {
            var remaining = [PathBytes: Int](minimumCapacity: indices.count)
            for index in indices { remaining[files[index].path] = index }
            try writer.readPack(pack, of: repository) { relative in
                // Entries no file of this snapshot needs (other snapshots' content) are skipped.
                remaining.removeValue(forKey: relative).map { files[$0] }
            }
            if let missing = remaining.values.min() {
                throw CofferError(.failed, operation: "restore from", subject: repository.location + "/" + pack,
                                  cause: "\(remaining.count) file(s) of the snapshot are not in the pack (first: \(PathText.display(files[missing].path))); nothing was written to the targets",
                                  hint: "`coffer verify --repo --read-data` shows what is damaged; restore an older snapshot")
            }
        }
        try writer.finish()
    }

    /// What both ways of extracting share: the staging folder, the hashing on its own thread,
    /// the checks of every pack entry, and every digest checked before anything is renamed
    /// into place.
    final class StagedWriter {
        let restorer: Restorer
        let staging: String
        let stagingFD: Int32
        let pipeline = HashPipeline()
        var created = Set<PathBytes>()
        var checks: [(entry: Int, file: PlannedFile)] = []
        var checked = 0
        var entries = 0
        let backgroundSync: BackgroundSync

        init(restorer: Restorer, staging: String) throws {
            self.restorer = restorer
            self.staging = staging
            stagingFD = open(staging, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard stagingFD >= 0 else { throw CofferError.system("open", staging, errno: errno) }
            backgroundSync = BackgroundSync(fd: stagingFD)
        }

        deinit {
            backgroundSync.wait()
            close(stagingFD)
        }

        /// Reads `pack` front to back; every entry is checked (only regular files under
        /// `media/`, safe paths), and the file `wanted` returns for its path is written.
        func readPack(_ pack: String, of repository: Repository, wanted: (PathBytes) throws -> PlannedFile?) throws {
            let packPath = repository.storage.display(pack)
            let reader = try ArchiveReader(object: repository.storage.openReader(pack), kind: .tar)
            let prefix = PathBytes("media/".utf8)
            while let entry = try reader.next() {
                try Interruption.check("restore")
                if entry.path == PathBytes("db.sqlite.zst".utf8), entry.fileType == UInt32(Glibc.S_IFREG), !entry.isHardLink { continue }
                guard entry.path.starts(with: prefix) else { throw RestorePlan.refuse(entry.path, "entry outside media/", in: packPath) }
                let relative = PathBytes(entry.path.dropFirst(prefix.count))
                if let reason = RestorePlan.problem(with: relative) { throw RestorePlan.refuse(entry.path, reason, in: packPath) }
                guard entry.fileType == UInt32(Glibc.S_IFREG), !entry.isHardLink else {
                    throw RestorePlan.refuse(entry.path, "not a regular file (links, devices and FIFOs are never restored)", in: packPath)
                }
                guard let file = try wanted(relative) else { continue }
                guard entry.size == file.size else {
                    throw RestorePlan.refuse(entry.path, "size \(entry.size) in the pack, \(file.size) in the snapshot", in: packPath)
                }
                try restorer.write(file, from: reader, stagingFD: stagingFD, staging: staging, created: &created, pipeline: pipeline, entry: entries)
                backgroundSync.wrote(file.size)
                checks.append((entries, file))
                entries += 1
                try checkDigests(waitingForAll: false)
            }
        }

        func checkDigests(waitingForAll: Bool) throws {
            if waitingForAll { pipeline.drain() }
            while checked < checks.count, let digest = pipeline.takeDigest(checks[checked].entry) {
                guard digest == checks[checked].file.sha256 else { throw Restorer.mismatch(checks[checked].file) }
                checked += 1
            }
            if checked >= 4096 { checks.removeFirst(checked); checked = 0 }
        }

        /// Every digest in and matching.
        func finish() throws {
            backgroundSync.wait()
            try checkDigests(waitingForAll: true)
            guard checked == checks.count else {
                throw CofferError(.failed, operation: "restore", subject: staging, cause: "a digest of a restored file is missing; nothing was written to the targets")
            }
        }
    }

    static func mismatch(_ file: PlannedFile) -> CofferError {
        CofferError(.failed, operation: "restore", subject: PathText.display(file.path),
                    cause: "its bytes in the pack do not match the snapshot (SHA-256 or size); nothing was written to the targets",
                    hint: "`coffer verify --repo --read-data` lists the damage; restore an older snapshot")
    }

    /// Creates one file under the staging folder (no links followed, never an existing file),
    /// writes it, skipping all-zero blocks so sparse files stay sparse, and checks its digest.
    func write(_ file: PlannedFile, from reader: ArchiveReader, stagingFD: Int32, staging: String,
               created: inout Set<PathBytes>, pipeline: HashPipeline, entry: Int) throws {
        let components = file.path.split(separator: UInt8(ascii: "/"))
        var parent: PathBytes = []
        for component in components.dropLast() {
            parent = parent.isEmpty ? PathBytes(component) : parent.appendingComponent(component)
            if created.insert(parent).inserted {
                let rc = parent.withCPath { mkdirat(stagingFD, $0, 0o755) }
                if rc != 0, errno != EEXIST { throw CofferError.system("create directory", PathText.display(parent), errno: errno) }
            }
        }
        // The shown path is built only for an error (errno read first: building it may change it).
        var shown: String { staging + "/" + PathText.display(file.path) }
        func failure(_ operation: String) -> CofferError {
            let code = errno
            return CofferError.system(operation, shown, errno: code)
        }
        let fd = file.path.withCPath { openat(stagingFD, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        guard fd >= 0 else { throw failure("create") }
        defer { close(fd) }
        var written: Int64 = 0
        var endsInHole = false
        var writeback = EarlyWriteback()
        while true {
            let buffer = pipeline.acquire()
            let n = try reader.read(into: buffer)
            pipeline.entryData(buffer, count: n) // hands the buffer back even when empty
            if n == 0 { break }
            // Looked at a hole block at a time: a block of zeros is seeked over, the runs of
            // other blocks between them are written whole (one write for a chunk without any).
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
            var pending = 0
            var offset = 0
            while offset < n {
                let end = min(offset + Self.holeBlock, n)
                endsInHole = Self.isZero(UnsafeRawBufferPointer(rebasing: chunk[offset..<end]))
                if endsInHole {
                    if offset > pending { try RawIO.writeAll(fd, chunk.baseAddress! + pending, offset - pending, path: shown) }
                    guard lseek(fd, off_t(end - offset), SEEK_CUR) >= 0 else { throw failure("seek in") }
                    pending = end
                }
                offset = end
            }
            if n > pending { try RawIO.writeAll(fd, chunk.baseAddress! + pending, n - pending, path: shown) }
            written += Int64(n)
            writeback.wrote(n, fd: fd)
            progress?.advance(by: Int64(n))
        }
        writeback.finish(fd: fd) // the syncfs before anything is renamed into place makes it durable
        pipeline.endEntry(entry) // its digest is checked against the record before anything is published
        // A file whose last block was skipped (a hole) gets its size here.
        if endsInHole { guard ftruncate(fd, off_t(written)) == 0 else { throw failure("set size of") } }
        guard written == file.size else { throw Self.mismatch(file) }
        guard fchmod(fd, mode_t(file.mode & 0o777)) == 0 else { throw failure("set mode of") }
        let seconds = file.mtime.rounded(.down)
        var times = [timespec(tv_sec: Int(seconds), tv_nsec: Int((file.mtime - seconds) * 1e9)),
                     timespec(tv_sec: Int(seconds), tv_nsec: Int((file.mtime - seconds) * 1e9))]
        guard futimens(fd, &times) == 0 else { throw failure("set mtime of") }
    }

    /// The block a restore looks at for zeros: a block of 64 KiB of zeros (blocks counted from
    /// the start of each piece the pack is read in) is a hole, not written.
    static let holeBlock = 64 << 10

    static func isZero(_ chunk: UnsafeRawBufferPointer) -> Bool {
        let words = chunk.count / 8
        let base = chunk.baseAddress!
        for i in 0..<words where base.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
        for i in (words * 8)..<chunk.count where chunk[i] != 0 { return false }
        return true
    }

    /// Moves the staged tree into place: a rename when the media root is missing or empty
    /// (returns true); with `force` over a non-empty one, file by file (replacing files of the
    /// same name; returns false).
    func publishMedia(_ staging: String, to mediaRoot: String) throws -> Bool {
        chmod(staging, 0o755)
        if PathText.parent(staging) == mediaRoot {
            // Staged inside a mount point: into a fresh one, its few top-level folders move up
            // (a rename each); else the merge below, file by file.
            guard isFresh(mediaRoot) else {
                try checkMerge(staging, into: mediaRoot)
                try merge(staging, into: mediaRoot)
                return false
            }
            try Self.moveEntries(of: staging, into: mediaRoot)
            return true
        }
        if case .success(let info) = FileSystem.status(mediaRoot), info.kind == .directory {
            if rmdir(mediaRoot) != 0 {
                try checkMerge(staging, into: mediaRoot)
                try merge(staging, into: mediaRoot)
                return false
            }
        }
        guard rename(staging, mediaRoot) == 0 else { throw CofferError.system("rename media into", mediaRoot, errno: errno) }
        try FileSystem.syncDirectory(PathText.parent(mediaRoot))
        return true
    }

    /// A forced restore into a media root that holds something: every folder the snapshot
    /// needs must be missing or a real folder there (a link would lead the files out of the
    /// target, a file would stop the merge halfway), and no folder may stand where a file
    /// goes. Checked whole before anything is moved.
    func checkMerge(_ staging: String, into mediaRoot: String) throws {
        let to = PathBytes(mediaRoot.utf8)
        try DirectoryWalker(root: staging).walk { entry in
            let target = to.appendingComponent(entry.relativePath)
            guard case .success(let existing) = FileSystem.status(target) else { return }
            let wanted = entry.kind == .directory ? "a folder" : "a file"
            let cause: String
            switch (entry.kind == .directory, existing.kind) {
            case (true, .directory), (false, .regular), (false, .symlink): return // replaced: rename does not follow a link it replaces
            case (_, .symlink):
                let link = target.withCPath { path -> String in
                    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                    let n = readlink(path, &buffer, buffer.count - 1)
                    return n < 0 ? "?" : PathText.display(PathBytes(buffer[0..<n].map { UInt8(bitPattern: $0) }))
                }
                cause = "it is a symbolic link (to \(link)) where the snapshot has \(wanted): restore writes only inside its targets"
            case (_, .directory):
                cause = "it is a folder where the snapshot has \(wanted)"
            default:
                cause = "it is \(existing.kind == .regular ? "a file" : "not a regular file") where the snapshot has \(wanted)"
            }
            throw CofferError(.failed, operation: "restore into", subject: PathText.display(target),
                              cause: cause + "; nothing was changed",
                              hint: "move it aside, or restore into a fresh --media-root")
        }
    }

    func merge(_ staging: String, into mediaRoot: String) throws {
        let from = PathBytes(staging.utf8), to = PathBytes(mediaRoot.utf8)
        try DirectoryWalker(root: staging).walk { entry in
            let source = from.appendingComponent(entry.relativePath), target = to.appendingComponent(entry.relativePath)
            if entry.kind == .directory {
                let rc = target.withCPath { mkdir($0, 0o755) }
                if rc != 0, errno != EEXIST { throw CofferError.system("create directory", PathText.display(target), errno: errno) }
            } else if source.withCPath({ s in target.withCPath { rename(s, $0) } }) != 0 {
                throw CofferError.system("rename into", PathText.display(target), errno: errno)
            }
        }
    }

    /// Rewrites media paths under the snapshot's MEDIA_ROOT to the new one (TEXT and BLOB).
    ///
    /// Only those columns change: the snapshot's triggers do not fire (a trigger that logs
    /// every update of `media` would otherwise add a row per path, and one brought by a
    /// tampered snapshot could change anything the connection can write).
    func rewritePaths(in path: String, from old: String, to new: String) throws -> Int {
        guard old != new else { return 0 }
        let queue = try DatabaseQueue(path: path, configuration: DatabaseAccess.untrustedConfiguration())
        defer { try? queue.close() }
        try queue.inDatabase { try DatabaseAccess.setFlag(SQLITE_DBCONFIG_ENABLE_TRIGGER, "SQLITE_DBCONFIG_ENABLE_TRIGGER", to: false, on: $0) }
        var changed = 0
        try queue.write { db in try DatabaseAccess.stoppable(db, "restore") {
            guard try db.tableExists("media") else { return }
            for column in MediaReferences.columns + ["temp_dir"] {
                let quoted = column.quotedDatabaseIdentifier
                try db.execute(sql: """
                    UPDATE media SET \(quoted) = :new || substr(\(quoted), length(:old) + 1)
                    WHERE typeof(\(quoted)) = 'text' AND (substr(\(quoted), 1, length(:old) + 1) = :old || '/' OR \(quoted) = :old)
                    """, arguments: ["old": old, "new": new])
                changed += db.changesCount
                let oldBytes = PathBytes(old.utf8), newBytes = PathBytes(new.utf8)
                let rows = try Row.fetchAll(db, sql: "SELECT id, \(quoted) AS path FROM media WHERE typeof(\(quoted)) = 'blob'")
                for row in rows {
                    let bytes = PathBytes(row["path"] as Data)
                    guard bytes.starts(with: oldBytes + [UInt8(ascii: "/")]) || bytes == oldBytes else { continue }
                    try db.execute(sql: "UPDATE media SET \(quoted) = ? WHERE id = ?",
                                   arguments: [Data(newBytes + bytes.dropFirst(oldBytes.count)), row["id"] as Int64])
                    changed += 1
                }
            }
        } }
        try queue.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) }
        return changed
    }
}

/// What `coffer restore` did. Encoded as the `--json` document.
public struct RestoreReport: Sendable, Codable {
    public var command = "restore"
    public var repository: String
    public var snapshot: String
    public var dbPath: String
    public var mediaRoot: String
    public var dryRun: Bool
    public var files = 0
    public var bytes: Int64 = 0
    public var databaseBytes: Int64 = 0
    public var pathsRewritten = 0
    /// Time to restore, until the volume is in place (the check of the result may have run
    /// meanwhile, beside the sync).
    public var restoreSeconds: Double = 0
    public var seconds: Double = 0
    /// The check of the restored volume.
    public var verify: VerifyReport?
    /// The check ran on the staged volume, before it was moved into place whole.
    var checkedWhileStaged = false

    public var status: ExitStatus { verify?.status ?? .ok }

    enum CodingKeys: String, CodingKey {
        case command, repository, snapshot, dbPath = "db_path", mediaRoot = "media_root", dryRun = "dry_run", files, bytes
        case databaseBytes = "database_bytes", pathsRewritten = "paths_rewritten", restoreSeconds = "restore_seconds", seconds, verify
    }

    public func text() -> String {
        var lines: [String] = []
        if dryRun {
            lines.append("dry run: would restore snapshot \(snapshot): \(files) files (\(Formatting.bytes(bytes))) into \(PathText.display(mediaRoot)), database (\(Formatting.bytes(databaseBytes))) into \(PathText.display(dbPath))")
            return lines.joined(separator: "\n")
        }
        lines.append("restored snapshot \(snapshot) in \(Formatting.seconds(restoreSeconds)): \(files) files (\(Formatting.bytes(bytes))), database \(Formatting.bytes(databaseBytes)), \(pathsRewritten) paths rewritten")
        if let verify { lines.append(verify.text()) }
        return lines.joined(separator: "\n")
    }
}
