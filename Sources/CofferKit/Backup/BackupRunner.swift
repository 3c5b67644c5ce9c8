import Crypto
import Foundation
import GRDB
import Logging
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// `coffer backup`: one consistent snapshot of the database and the media into a repository.
///
/// Order: the database copy first (online backup API, one step), then the media: `library/`
/// and every file the copy refers to elsewhere under MEDIA_ROOT (other `tmp/` content is
/// skipped). Files unchanged since the parent snapshot (same path, size, mtime and inode) are
/// not read; the rest are read once, hashed while they are written into one new pack.
///
/// Guarantees: nothing in the repository changes in place. The pack is written under `tmp/`
/// and published whole, then the snapshot record; a run that fails or is killed leaves no
/// partial pack and no snapshot, and earlier snapshots intact. A file missing, unreadable or
/// changed while read is recorded in the snapshot and the run ends with findings (exit 1); one
/// whose reading failed or that shrank while read is left out of it.
public struct BackupRunner {
    public var configuration: CofferConfiguration
    public var full = false
    public var tags: [String] = []
    public var dryRun = false
    public var logger = Logger(label: "coffer.backup")
    public var progress: Progress?
    /// Called once the database is copied, and once the media are collected (before any is
    /// read): for tests that change the volume at those moments, as the pipeline may.
    var afterCopying: (() throws -> Void)?
    var afterCollecting: (() throws -> Void)?
    /// Given what the walk saw of the library, for tests that check the reconciliation used it.
    var libraryWalkMade: ((LibraryWalk) -> Void)?
    /// At most this many problems and findings go into the record (the report has them all).
    var recordedListLimit = Snapshot.Summary.listLimit

    /// Bytes assumed per entry beyond its data (headers, padding), for the space estimate.
    static let entryOverhead: Int64 = 2048

    public init(configuration: CofferConfiguration) { self.configuration = configuration }

    struct Candidate {
        var relative: PathBytes
        var info: FileInfo
        var reuse: Reuse?
    }

    /// Where an unchanged file's bytes already are (from the parent snapshot), kept small: a
    /// library of a million files holds a million of these.
    struct Reuse {
        var sha256: SHA256Value
        var pack: Int32 // index into the pack names
        var offset: Int64
        var mode: UInt32
    }

    public func run() throws -> BackupReport {
        let started = Date()
        let timings = Timings(started: started)
        let layout = configuration.layout
        // A repository inside the library would back itself up, growing without end.
        if let repo = configuration.repo, (repo + "/").hasPrefix(layout.libraryRoot + "/") {
            throw CofferError(.usage, operation: "back up into", subject: repo, cause: "the repository is inside the library (\(layout.libraryRoot))",
                              hint: "keep the repository outside MEDIA_ROOT, ideally on another disk")
        }
        // The database, opened before anything is made: a wrong DB_PATH fails the run without
        // leaving even a new repository behind. (No repository at all is a usage error, first.)
        guard configuration.repo != nil else { throw Repository.noRepository }
        let source = try DatabaseAccess.openExisting(layout.dbPath, readOnly: true)
        // A dry run creates nothing, not even the repository.
        let missing = FileSystem.status((configuration.repo ?? "") + "/config.json").isFailure
        let repository = try Repository.open(configuration.repo, create: !dryRun, allowMissing: dryRun && missing)
        let lock = dryRun && missing ? nil : try repository.lock(exclusive: true, command: "backup")
        defer { withExtendedLifetime(lock) {} }
        if !dryRun { repository.storage.sweepTemporaryFiles() }

        var report = BackupReport(repository: repository.location, dryRun: dryRun)
        var parent = full ? nil : try repository.newest {
            $0.dbPath == layout.dbPath && $0.mediaRoot == layout.mediaRoot
        }
        // A parent whose record changed since it was written would pass its damage on (what an
        // unchanged file's line says is copied from it): this run then builds on nothing.
        // (A record that cannot be read at all fails the run, as a repository that cannot be
        // read does.)
        var damagedParent: Snapshot.Problem?
        if let candidate = parent, let problem = try repository.reader(for: candidate).digestProblem() {
            damagedParent = .init(kind: "parent_damaged", path: "snapshots/\(candidate.id).jsonl", jobID: nil,
                                  message: "\(problem); every file stored again instead of building on it; `coffer verify --repo` lists the damage")
            parent = nil
        }
        report.parent = parent?.id

        // 1. The database, first: one consistent cut.
        // A repository in a bucket has no local tmp/, and a dry run writes nothing into the
        // repository: the run's scratch folder goes beside the database (same filesystem, so
        // the copy never lands on a small /tmp), swept when its run is gone.
        var scratchFolder: ScratchDirectory?
        defer { scratchFolder?.remove() }
        let scratch: String
        if !dryRun, let own = repository.storage.scratchDirectory {
            scratch = own
        } else {
            let parent = PathText.parent(layout.dbPath)
            ScratchDirectory.sweep(in: parent, prefix: Self.scratchPrefix) // folders of runs that are gone
            let folder = try ScratchDirectory(prefix: "\(Self.scratchPrefix)\(getpid())", in: parent)
            scratchFolder = folder
            scratch = folder.path
        }
        let copyPath = scratch + "/db-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sqlite"
        defer { DatabaseCopy.remove(copyPath) }
        // The copy is the first thing written: it must fit (at most the database and its log).
        // Beside the database it is on the pipeline's disk, and must leave MIN_FREE_SPACE_GB
        // free there (below it the pipeline stops taking jobs), as a drill must.
        let databaseSize = [layout.dbPath, layout.walPath].reduce(Int64(0)) { $0 + ((try? FileSystem.status($1).get().size) ?? 0) }
        if scratchFolder != nil {
            try checkReserve(for: databaseSize, in: scratch)
        } else {
            try checkSpace(for: databaseSize, in: scratch)
        }
        let copy = try DatabaseCopy.take(from: source, source: layout.dbPath, to: copyPath)
        try afterCopying?()
        report.databaseBytes = copy.size
        let copiedAt = timings.mark("database_copied")
        logger.debug("database copied", metadata: ["bytes": "\(copy.size)", "seconds": "\(copiedAt)"])

        // 2. Beside this thread (the media, collected and packed): the copy is integrity-checked,
        // described and compressed on a second, and reconciled with the media on a third; the
        // database entry closes the pack.
        let zstPath = copyPath + ".zst"
        let databaseLane = DatabaseLane(copy: copy, parent: parent?.summary.database)
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) { [dryRun, logger] in
            databaseLane.run(compressTo: dryRun ? nil : zstPath, logger: logger, timings: timings)
        }
        defer { group.wait() } // the copy is removed only after the lane is done with it
        func databaseResult() throws -> DatabaseCopy {
            group.wait()
            try Interruption.check("backup") // the lane's failure may be the stop's doing
            if let error = databaseLane.error { throw error }
            return databaseLane.copy
        }
        var problems: [Snapshot.Problem] = damagedParent.map { [$0] } ?? []
        func noteIntegrity(_ copy: DatabaseCopy) {
            report.databaseRows = copy.rowCounts
            if copy.integrityCheck != "ok" {
                problems.insert(.init(kind: "database", path: PathText.display(layout.dbPath), jobID: nil,
                                      message: "integrity_check of the copy: \(copy.integrityCheck)"), at: 0)
            }
        }

        // Reconciliation of the copy against the media, as it is now: it only reads, so it runs
        // on its own thread from the start (beside the media walk and the pack; the database
        // lane is often done at once, its copy unchanged), joined before the record's summary.
        var verifier = LiveVerifier(configuration: configuration)
        verifier.layout = VolumeLayout(dbPath: copyPath, mediaRoot: layout.mediaRoot,
                                       tempDirTemplate: layout.tempDirTemplate, libraryPathTemplate: layout.libraryPathTemplate)
        verifier.minFreeSpaceBytes = 0
        verifier.alertFreeSpaceBytes = 0
        verifier.checksIntegrity = false // the database lane runs integrity_check on this very file
        // The library's files are looked at by the walk below: the reconciliation takes what it
        // saw instead of a `stat` of every reference and a walk of its own.
        let libraryWalk = LibraryWalk()
        verifier.libraryWalk = libraryWalk
        libraryWalkMade?(libraryWalk)
        let reconciliation = ReconciliationLane()
        let reconciling = DispatchGroup()
        DispatchQueue.global().async(group: reconciling) { [verifier, copyPath, layout, logger] in
            do {
                reconciliation.findings = try verifier.run().findings.map { finding -> Finding in
                    var finding = finding
                    if finding.path == PathText.display(copyPath) { finding.path = PathText.display(layout.dbPath) }
                    return finding
                }
                let reconciledAt = timings.mark("reconciled")
                logger.debug("reconciliation done", metadata: ["seconds": "\(reconciledAt)"])
            } catch {
                reconciliation.error = error
            }
        }
        defer { reconciling.wait() } // it reads the copy, removed after this
        func reconciled() throws -> [Finding] {
            reconciling.wait()
            try Interruption.check("backup")
            if let error = reconciliation.error { throw error }
            return reconciliation.findings
        }
        // What to back up: the library and the files the copy refers to, in path order, merged
        // with the parent's record as they come, spooled to an unlinked scratch file (memory
        // stays flat whatever the number of files).
        let spool = try CandidateSpool(in: scratch)
        var parentMerge = try parent.map { try ParentMerge(cursor: try repository.reader(for: $0).makeCursor()) }
        var bytesToWrite: Int64 = 0
        try collect(copyPath: copyPath, layout: layout, problems: &problems, libraryWalk: libraryWalk) { candidate in
            try Interruption.check("backup")
            var candidate = candidate
            candidate.reuse = try parentMerge?.reuse(for: candidate)
            report.files += 1
            report.bytes += candidate.info.size
            if candidate.reuse == nil {
                report.filesAdded += 1
                bytesToWrite += candidate.info.size
            }
            try spool.append(candidate)
        }
        let packNames = parentMerge?.packNames ?? []
        parentMerge = nil
        let collectedAt = timings.mark("media_collected")
        logger.debug("media collected", metadata: ["files": "\(report.files)", "to store": "\(report.filesAdded)", "seconds": "\(collectedAt)"])
        try afterCollecting?()
        if dryRun { report.bytesAdded = bytesToWrite }
        let compressed = Self.compressedCopyEstimate(copy.size, parent: parent?.summary.database)
        report.estimatedBytes = compressed + bytesToWrite + Int64(report.filesAdded) * Self.entryOverhead
        // The compressed copy is made beside the pack first (in a local repository's tmp/) and
        // copied into it last: at the end both take space there.
        let scratchBeside = repository.storage.scratchDirectory != nil ? compressed : 0
        try checkSpace(for: report.estimatedBytes + scratchBeside, in: repository.location)

        if dryRun {
            report.findings = try reconciled().count
            noteIntegrity(try databaseResult())
            report.databaseUnchanged = databaseLane.reused != nil
            report.problems = problems
            report.seconds = Date().timeIntervalSince(started)
            return report
        }

        // 3. The pack.
        let id = Snapshot.makeID(started)
        let packName = "packs/\(id).tar"
        let pending = try repository.storage.create(packName)
        var committed = false
        defer { if !committed { repository.storage.discard(pending) } }
        let writer = try ArchiveWriter(output: pending)
        // Every byte of the pack is hashed on a second thread, in order, while this one reads
        // and writes.
        let pipeline = HashPipeline()
        writer.forwardPackBytes { pipeline.packBytes($0) }

        // The snapshot record is written while the pack is (it is published after the pack).
        let header = Snapshot.Header(
            id: id, time: UTCTime.iso8601(started), host: ProcessInfo.processInfo.hostName,
            cofferVersion: CofferVersion.coffer, parent: parent?.id, tags: tags, full: full || parent == nil,
            dbPath: layout.dbPath, mediaRoot: layout.mediaRoot)
        let record = try repository.storage.create("snapshots/\(id).jsonl")
        var recordCommitted = false
        defer { if !recordCommitted { repository.storage.discard(record) } }
        let snapshotWriter = try SnapshotWriter(pending: record, header: header)
        var recordedFiles = 0
        var recordedBytes: Int64 = 0
        func recordLine(_ file: Snapshot.File) throws {
            try snapshotWriter.line(file)
            recordedFiles += 1
            recordedBytes += file.size
        }
        // Record lines in order; a stored file's line waits for its digest from the pipeline.
        // `listed` false: a dropped entry (its reading failed), for the summary, not a line.
        var waiting: [(file: Snapshot.File, entry: Int?, listed: Bool)] = []
        var dropped: [Snapshot.File] = []
        var head = 0
        func recordReady(waitingForAll: Bool) throws {
            if waitingForAll { pipeline.drain() }
            while head < waiting.count {
                if let entry = waiting[head].entry {
                    guard let digest = pipeline.takeDigest(entry) else { break }
                    waiting[head].file.sha256 = digest.hex
                }
                if waiting[head].listed { try recordLine(waiting[head].file) } else { dropped.append(waiting[head].file) }
                head += 1
            }
            if head >= 4096 { waiting.removeFirst(head); head = 0 }
        }
        var entries = 0
        progress?.start(total: bytesToWrite)
        try spool.rewind()
        let files = MediaPrefetch(root: PathBytes(layout.mediaRoot.utf8), source: spool.next)
        while true {
            try Interruption.check("backup")
            guard let opened = try files.next() else { break }
            let candidate = opened.candidate
            if let reuse = candidate.reuse {
                waiting.append((Snapshot.File(path: candidate.relative, size: candidate.info.size, mode: reuse.mode,
                                              mtime: candidate.info.modified, inode: candidate.info.inode, sha256: reuse.sha256.hex,
                                              pack: packNames[Int(reuse.pack)], offset: reuse.offset), nil, true))
            } else {
                let stored = try store(candidate, descriptor: opened.descriptor, root: files.root, pack: packName, writer: writer, pipeline: pipeline,
                                       entry: entries, report: &report, problems: &problems)
                if let stored {
                    waiting.append((stored.file, entries, stored.listed))
                    entries += 1
                }
            }
            try recordReady(waitingForAll: false)
            // Behind a stored file's line, waiting for its digest, every later line waits too
            // (unchanged files' among them): past 4096 of them the hashing is let catch up, so
            // the queue does not grow with the library (it held 90,000 lines, 9.4 MB, when
            // 5% of 93,744 files had changed).
            if waiting.count - head >= 4096 { try recordReady(waitingForAll: true) }
        }
        try recordReady(waitingForAll: true)
        let storedAt = timings.mark("media_stored")
        logger.debug("media stored", metadata: ["seconds": "\(storedAt)"])
        // Joined before anything is committed: a reconciliation that fails leaves no pack.
        let findings = try reconciled()
        report.findings = findings.count
        // The database copy, checked and compressed meanwhile, is the pack's last entry (none
        // when it is the parent's: its stored copy serves).
        let described = try databaseResult()
        noteIntegrity(described)
        let database: Snapshot.Database
        if let reused = databaseLane.reused {
            database = reused
            report.databaseUnchanged = true
        } else {
            guard let stored = databaseLane.stored else {
                throw CofferError(.failed, operation: "compress database copy", subject: copyPath, cause: "no compressed copy was made")
            }
            let dbOffset = try appendFile(zstPath, entry: PathBytes("db.sqlite.zst".utf8), digest: stored.sha256, to: writer, pipeline: pipeline)
            database = Snapshot.Database(
                entry: "db.sqlite.zst", pack: packName, offset: dbOffset, storedSize: stored.size, storedSha256: stored.sha256,
                size: described.size, sha256: described.sha256, pageSize: described.pageSize, pageCount: described.pageCount,
                schemaVersion: described.schemaVersion, rowCounts: described.rowCounts, integrityCheck: described.integrityCheck)
        }
        let packSize = try writer.finish().size
        let pack = (sha256: pipeline.finish(), size: packSize)
        try repository.storage.commit(pending)
        committed = true
        progress?.finish()
        report.packBytes = pack.size

        // 4. The snapshot record, last.
        let summary = Snapshot.Summary(
            files: recordedFiles, bytes: recordedBytes, bytesAdded: report.bytesAdded,
            bytesRead: report.bytesRead, pack: .init(name: packName, size: pack.size, sha256: pack.sha256),
            database: database, problems: Array(problems.prefix(recordedListLimit)), findings: Array(findings.prefix(recordedListLimit)),
            seconds: timings.all.merging(["total": Date().timeIntervalSince(started)]) { $1 },
            problemsTotal: problems.count > recordedListLimit ? problems.count : nil,
            findingsTotal: findings.count > recordedListLimit ? findings.count : nil, dropped: dropped.isEmpty ? nil : dropped)
        try snapshotWriter.summary(summary)
        try snapshotWriter.flush()
        try repository.storage.commit(record)
        recordCommitted = true
        report.snapshot = id
        report.files = recordedFiles
        report.bytes = summary.bytes
        report.problems = problems
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    /// When each part of a run ended, in seconds from its start (from the threads that do
    /// them): logged with `--verbose`, and kept in the record's `seconds`.
    final class Timings: @unchecked Sendable {
        let started: Date
        private let lock = NSLock()
        private var marks: [String: Double] = [:]

        init(started: Date) { self.started = started }

        /// Notes that `part` ended now; returns the seconds since the start. (Not inside a log
        /// line: its metadata is evaluated only when the line is logged.)
        @discardableResult
        func mark(_ part: String) -> Double {
            let seconds = Date().timeIntervalSince(started)
            lock.lock()
            marks[part] = seconds
            lock.unlock()
            return seconds
        }

        var all: [String: Double] {
            lock.lock()
            defer { lock.unlock() }
            return marks
        }
    }

    /// The reconciliation's result, from its thread.
    final class ReconciliationLane: @unchecked Sendable {
        var findings: [Finding] = []
        var error: Error?
    }

    /// Finds the candidates whose path, size, mtime and inode are those of the parent snapshot:
    /// they are not read again. Candidates and the parent's record both come in path byte
    /// order, so the record is merged in one streaming pass (a record out of that order only
    /// costs re-reading). Keeps the pack names the reused entries' indices refer to.
    struct ParentMerge {
        let cursor: FileCursor
        var previous: Snapshot.File?
        var packNames: [String] = []
        var packIndex: [String: Int32] = [:]

        init(cursor: FileCursor) throws {
            self.cursor = cursor
            previous = try cursor.next()
        }

        mutating func reuse(for candidate: Candidate) throws -> Reuse? {
            let path = candidate.relative
            while let file = previous, file.path.lexicographicallyPrecedes(path) { previous = try cursor.next() }
            guard let file = previous, file.path == path else { return nil }
            let info = candidate.info
            // A digest that is not 64 hex digits (a damaged record) is not trusted: re-read.
            guard file.size == info.size, file.mtime == info.modified, file.inode == info.inode,
                  let digest = SHA256Value(validHex: file.sha256) else { return nil }
            let pack: Int32
            if let last = packNames.last, last == file.pack {
                pack = Int32(packNames.count - 1) // consecutive files share their pack
            } else if let known = packIndex[file.pack] {
                pack = known
            } else {
                pack = Int32(packNames.count)
                packIndex[file.pack] = pack
                packNames.append(file.pack)
            }
            return Reuse(sha256: digest, pack: pack, offset: file.offset, mode: file.mode)
        }
    }

    /// The database side of a backup, run on its own core: integrity_check and description of
    /// the copy, then (unless a dry run) its zstd compression into a file beside it.
    ///
    /// A copy whose bytes are the parent snapshot's copy (same size, same SHA-256: the pipeline
    /// wrote nothing since) is not checked or stored again: the parent's stored copy and its
    /// description serve, as an unchanged media file's entry does. Only a parent copy whose
    /// integrity_check said `ok` is taken so (another SQLite could judge a damaged file anew).
    final class DatabaseLane: @unchecked Sendable {
        var copy: DatabaseCopy
        let parent: Snapshot.Database?
        var stored: (sha256: String, size: Int64)?
        /// The parent's stored copy, when this copy has the same bytes.
        var reused: Snapshot.Database?
        var error: Error?

        init(copy: DatabaseCopy, parent: Snapshot.Database?) {
            self.copy = copy
            self.parent = parent
        }

        func run(compressTo zstPath: String?, logger: Logger, timings: Timings) {
            do {
                if let parent, parent.integrityCheck == "ok", parent.size == copy.size, try copy.fileSHA256() == parent.sha256 {
                    copy.adopt(parent)
                    reused = parent
                    let checkedAt = timings.mark("database_checked")
                    logger.debug("database unchanged since the parent snapshot", metadata: ["seconds": "\(checkedAt)"])
                    return
                }
                // The check and the compression only read the copy: side by side, they take the
                // longer of the two instead of the sum (with a 1.36 GB database, 13.5 s and 4.7 s).
                let compression = Compression()
                let group = DispatchGroup()
                if let zstPath {
                    DispatchQueue.global().async(group: group) { [copy] in
                        compression.run(copy, into: zstPath)
                        guard compression.error == nil else { return }
                        let compressedAt = timings.mark("database_compressed")
                        logger.debug("database copy compressed", metadata: ["seconds": "\(compressedAt)"])
                    }
                }
                defer { group.wait() } // the copy is removed only after both are done with it
                try copy.describe()
                let checkedAt = timings.mark("database_checked")
                logger.debug("database copy checked", metadata: ["seconds": "\(checkedAt)"])
                group.wait()
                if let error = compression.error { throw error }
                if let result = compression.result {
                    copy.sha256 = result.sha256
                    stored = result.stored
                }
            } catch {
                self.error = error
            }
        }
    }

    /// The zstd compression of the database copy, on its own thread.
    final class Compression: @unchecked Sendable {
        var result: (sha256: String, stored: (sha256: String, size: Int64))?
        var error: Error?

        func run(_ copy: DatabaseCopy, into zstPath: String) {
            do {
                var copy = copy
                let zst = try RawIO.createNew(zstPath)
                defer { close(zst) }
                let stored = try copy.compress(into: zst, outputPath: zstPath)
                result = (copy.sha256, stored)
            } catch {
                self.error = error
            }
        }
    }

    /// The library's files and the files the copy refers to elsewhere under MEDIA_ROOT (tmp/
    /// files of jobs in flight), passed to `emit` in path byte order, in one sorted walk of
    /// MEDIA_ROOT that enters only the library and the folders references point into. The
    /// references outside the library are kept as 8-byte hashes, so memory does not grow with
    /// them either. What cannot be backed up becomes a problem.
    ///
    /// What the walk sees of the library goes to `libraryWalk` too, finished whatever happens
    /// (complete only when the library root was walked whole).
    func collect(copyPath: String, layout: VolumeLayout, problems: inout [Snapshot.Problem],
                 libraryWalk: LibraryWalk? = nil, emit: (Candidate) throws -> Void) throws {
        var walkOutcome = LibraryWalk.Outcome.abandoned
        defer { libraryWalk?.finish(walkOutcome) }
        let root = PathBytes(layout.mediaRoot.utf8)
        let rootPrefix = root + [UInt8(ascii: "/")]
        let libraryBytes = PathBytes(layout.libraryRoot.utf8)
        let libraryPrefix = libraryBytes + [UInt8(ascii: "/")]
        let slash = UInt8(ascii: "/")
        var referenced = ReferencedPaths()    // outside the library
        var referencedTops = Set<PathBytes>() // their first components under MEDIA_ROOT ("tmp")
        var missing = Set<PathBytes>()        // reported once each
        // In the library, a reference is looked at only when the walk has not seen it as a
        // file: one look at each file, not two.
        var unseenInLibrary = ReferencedPaths()
        // A reference that cannot be backed up, reported once per path.
        func noteMissing(_ absolute: PathBytes, _ reference: MediaReferences.Reference, _ errno: Errno) {
            guard missing.insert(absolute).inserted else { return }
            problems.append(.init(kind: "missing", path: PathText.display(absolute), jobID: reference.jobID,
                                  message: "referred to by the database: \(errno.description)"))
        }
        func noteNotAFile(_ absolute: PathBytes, _ reference: MediaReferences.Reference, _ kind: FileInfo.Kind) {
            guard missing.insert(absolute).inserted else { return }
            problems.append(.init(kind: "not_a_file", path: PathText.display(absolute), jobID: reference.jobID,
                                  message: "a \(kind), not a regular file; not backed up"))
        }

        let queue = try DatabaseQueue(path: copyPath, configuration: DatabaseAccess.configuration(readOnly: true))
        defer { try? queue.close() }
        try queue.read { db in
            guard try db.tableExists("media") else { return }
            try MediaReferences.forEach(db, mediaRoot: layout.mediaRoot) { reference in
                let absolute = reference.path
                guard absolute.starts(with: rootPrefix) else {
                    problems.append(.init(kind: "outside_media_root", path: PathText.display(absolute), jobID: reference.jobID,
                                          message: "referred to by the database but outside MEDIA_ROOT; not backed up"))
                    return
                }
                if absolute.starts(with: libraryPrefix) {
                    unseenInLibrary.insert(absolute)
                    return
                }
                switch FileSystem.status(absolute) {
                case .failure(let errno):
                    noteMissing(absolute, reference, errno)
                case .success(let info) where info.kind != .regular:
                    noteNotAFile(absolute, reference, info.kind)
                case .success:
                    referenced.insert(absolute)
                    let relative = absolute.dropFirst(rootPrefix.count)
                    referencedTops.insert(PathBytes(relative.prefix { $0 != slash }))
                }
            }
        }

        referenced.seal()
        unseenInLibrary.seal()
        libraryWalk?.start(references: unseenInLibrary)
        walkOutcome = .incomplete

        // After the walk: the library references it did not see as a file (missing, a folder,
        // or in a folder that could not be read), looked at one by one.
        func reportUnseenLibraryReferences() throws {
            guard unseenInLibrary.count > 0 else { return }
            try queue.read { db in
                try MediaReferences.forEach(db, mediaRoot: layout.mediaRoot) { reference in
                    let absolute = reference.path
                    guard absolute.starts(with: libraryPrefix), unseenInLibrary.contains(absolute) else { return }
                    switch FileSystem.status(absolute) {
                    case .failure(let errno):
                        noteMissing(absolute, reference, errno)
                    case .success(let info) where info.kind == .directory:
                        noteNotAFile(absolute, reference, info.kind) // links and other non-files: reported by the walk
                    case .success:
                        return // appeared since the walk: the next backup takes it
                    }
                }
            }
        }

        guard libraryBytes.starts(with: rootPrefix) || referenced.count > 0 else {
            problems.append(.init(kind: "outside_media_root", path: layout.libraryRoot, jobID: nil,
                                  message: "the library is outside MEDIA_ROOT; not backed up"))
            return
        }
        let libraryRelative = libraryBytes.starts(with: rootPrefix) ? PathBytes(libraryBytes.dropFirst(rootPrefix.count)) : nil
        func isInLibrary(_ relative: PathBytes) -> Bool {
            guard let libraryRelative else { return false }
            return relative.count > libraryRelative.count && relative.starts(with: libraryRelative) && relative[libraryRelative.count] == slash
        }
        // Entered: the library, the folders on the way to it, and the folders references point into.
        func descend(_ relative: PathBytes) -> Bool {
            if let libraryRelative {
                if relative == libraryRelative || isInLibrary(relative) { return true }
                if libraryRelative.starts(with: relative) && libraryRelative[relative.count] == slash { return true }
            }
            return referencedTops.contains(PathBytes(relative.prefix { $0 != slash }))
        }

        var emitting = false // an error from `emit` (a full disk) is the run's, not the walk's
        // The library root itself, entered as a directory (not through a link) and read.
        var libraryRootWalked = false
        var libraryRootUnreadable = false
        walkOutcome = .abandoned // until the walk ends: an error from `emit` stops the run
        do {
            try DirectoryWalker(root: root).walkSorted(problem: { problem in
                if case .cannotOpen(let relative, let errno) = problem {
                    problems.append(.init(kind: "unreadable", path: PathText.display(root.appendingComponent(relative)),
                                          jobID: nil, message: "directory cannot be read: \(errno.description)"))
                    if relative == libraryRelative {
                        libraryRootUnreadable = true
                    } else if isInLibrary(relative) {
                        libraryWalk?.findings.append(LiveVerifier.unreadableLibraryDirectory(root.appendingComponent(relative), errno))
                    }
                }
            }, descend: descend) { entry in
                guard entry.kind != .directory else {
                    if entry.relativePath == libraryRelative { libraryRootWalked = true }
                    return
                }
                let library = isInLibrary(entry.relativePath)
                let absolute = root.appendingComponent(entry.relativePath)
                guard library || referenced.contains(absolute) else { return }
                let status = entry.status(root: root)
                if library {
                    // One look-up of the path among the references serves both.
                    let slot = libraryWalk != nil ? libraryWalk!.saw(absolute, try? status.get()) : unseenInLibrary.slot(of: absolute)
                    if let slot, case .success = status { unseenInLibrary.remove(slot: slot) }
                }
                switch status {
                case .failure:
                    return // gone since the directory was read
                case .success(let info) where info.kind != .regular:
                    if library {
                        problems.append(.init(kind: "not_a_file", path: PathText.display(absolute), jobID: nil,
                                              message: "a \(info.kind), not a regular file; not backed up"))
                    }
                case .success(let info):
                    emitting = true
                    try emit(Candidate(relative: entry.relativePath, info: info))
                    emitting = false
                }
            }
            walkOutcome = libraryRootWalked && !libraryRootUnreadable ? .complete : .incomplete
        } catch let error as CofferError where !emitting {
            problems.append(.init(kind: "unreadable", path: layout.mediaRoot, jobID: nil, message: error.cause))
            walkOutcome = .incomplete
        }
        try reportUnseenLibraryReferences()
    }

    static let scratchPrefix = ".coffer-backup-"


    /// The compressed database copy's size, at most: the parent's compression ratio with half
    /// again as a margin, or (no parent, or a ratio that would not save anything) the copy's
    /// own size; plus 1 MiB for zstd's framing.
    static func compressedCopyEstimate(_ size: Int64, parent: Snapshot.Database?) -> Int64 {
        let framing: Int64 = 1 << 20
        guard let parent, parent.size > 0, parent.storedSize > 0 else { return size + framing }
        let ratio = Double(parent.storedSize) / Double(parent.size)
        return min(size, Int64((Double(size) * ratio * 1.5).rounded(.up))) + framing
    }

    func checkSpace(for bytes: Int64, in location: String) throws {
        guard case .success(let space) = FileSystem.freeSpace(location) else { return }
        if Int64(clamping: space.available) < bytes {
            throw CofferError(.failed, operation: "check free space in", subject: location,
                              cause: "about \(Formatting.bytes(bytes)) needed, \(Formatting.bytes(space.available)) free",
                              hint: "free space there (or `coffer prune`), then run again; nothing was written")
        }
    }

    /// Whether the database copy fits beside the database leaving MIN_FREE_SPACE_GB free.
    func checkReserve(for bytes: Int64, in folder: String) throws {
        guard case .success(let space) = FileSystem.freeSpace(folder) else { return }
        let available = Int64(clamping: space.available)
        let reserve = Int64(clamping: configuration.minFreeSpaceBytes)
        guard available - bytes < reserve else { return }
        throw CofferError(.failed, operation: "check free space in", subject: folder,
                          cause: "the database copy (about \(Formatting.bytes(bytes))) would leave \(Formatting.bytes(max(0, available - bytes))) free on the database's disk, below MIN_FREE_SPACE_GB (\(Formatting.bytes(reserve)))",
                          hint: "free space there (`coffer cleanup`, `coffer export-jobs --purge`), or back up into a local repository (the copy is then made in its tmp/); nothing was written")
    }

    /// Copies a whole file (the compressed database) into the pack as one entry.
    func appendFile(_ path: String, entry: PathBytes, digest: String, to writer: ArchiveWriter, pipeline: HashPipeline) throws -> Int64 {
        let fd = try RawIO.openForReading(path)
        defer { close(fd) }
        let size = (try? FileSystem.status(path).get().size) ?? 0
        let offset = try writer.beginFile(path: entry, size: size, mode: 0o644, modified: Date().timeIntervalSince1970)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var remaining = size
        while remaining > 0 {
            let n = try RawIO.read(fd, buffer.baseAddress!, min(buffer.count, Int(remaining)), path: path)
            if n == 0 { throw CofferError(.failed, operation: "read", subject: path, cause: "file ends early") }
            try writer.write(buffer.baseAddress!, count: n)
            remaining -= Int64(n)
        }
        pipeline.endEntry(knownDigest: Digest.bytes(hex: digest))
        try writer.endFile()
        return offset
    }

    /// Reads one media file into the pack, hashing it on the way. A file that changes while it
    /// is read is stored as read, and recorded as a problem.
    /// Its record comes back without its SHA-256: the pipeline has it under `entry`.
    /// `descriptor` is the file opened (``MediaPrefetch``), closed here, or minus the errno of
    /// its opening.
    ///
    /// Nil when nothing was written (the file could not be opened, or is no longer a file).
    ///
    /// A file whose reading fails (an I/O error of a failing disk), or ends before the size it
    /// had when opened (it shrank while read), is not in the snapshot: its entry, begun, is
    /// filled with zeros to keep the pack whole, and comes back not `listed` (the summary's
    /// `dropped`): no snapshot lists bytes the file never had, and no later backup takes those
    /// zeros for the file (its path, size, mtime and inode unchanged) instead of reading it again.
    func store(_ candidate: Candidate, descriptor fd: Int32, root: PathBytes, pack: String, writer: ArchiveWriter,
               pipeline: HashPipeline, entry: Int, report: inout BackupReport,
               problems: inout [Snapshot.Problem]) throws -> (file: Snapshot.File, listed: Bool)? {
        // Built only when needed (a message): for 100,000 small files it was 7% of the run.
        var shown: String { PathText.display(root.appendingComponent(candidate.relative)) }
        guard fd >= 0 else {
            let code = -fd
            problems.append(.init(kind: code == ENOENT ? "missing" : "unreadable", path: shown, jobID: nil,
                                  message: "cannot be opened: \(String(cString: strerror(code)))"))
            return nil
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let code = errno
            problems.append(.init(kind: "unreadable", path: shown, jobID: nil, message: String(cString: strerror(code))))
            return nil
        }
        let before = FileInfo(st)
        guard before.kind == .regular else {
            problems.append(.init(kind: "not_a_file", path: shown, jobID: nil, message: "became a \(before.kind) while the backup ran; not backed up"))
            return nil
        }
        var changed = before.size != candidate.info.size || before.modified != candidate.info.modified
        let offset = try writer.beginFile(path: PathBytes("media/".utf8) + candidate.relative, size: before.size,
                                          mode: before.mode, modified: before.modified)
        var remaining = before.size
        // Why the file is left out of the snapshot: its reading failed, or it ended early.
        var leftOut: Snapshot.Problem?
        while remaining > 0 {
            try Interruption.check("backup")
            let buffer = pipeline.acquire()
            let want = Int(min(Int64(buffer.count), remaining))
            var n = 0
            // After a failed or short read nothing more is read (what follows would land at the
            // wrong place): the rest of the entry is zeros.
            if leftOut == nil {
                let done = before.size - remaining
                do {
                    n = try RawIO.read(fd, buffer.baseAddress!, want, path: shown)
                    if n == 0 {
                        leftOut = .init(kind: "changed", path: shown, jobID: nil,
                                        message: "shrank while it was read (it ended after \(done) of \(before.size) bytes); not in this snapshot (the next backup reads it again)")
                    }
                } catch let error as CofferError {
                    leftOut = .init(kind: "unreadable", path: shown, jobID: nil,
                                    message: "read failed: \(error.cause) after \(done) of \(before.size) bytes; not in this snapshot (the next backup reads it again)")
                }
            }
            report.bytesRead += Int64(n)
            if n == 0 {
                // The file shrank (or failed) while read: the entry keeps its declared size.
                memset(buffer.baseAddress!, 0, want)
                n = want
            }
            pipeline.entryData(buffer, count: n)
            try writer.write(buffer.baseAddress!, count: n)
            remaining -= Int64(n)
            progress?.advance(by: Int64(n))
        }
        pipeline.endEntry(entry)
        try writer.endFile()
        if fstat(fd, &st) == 0 {
            let after = FileInfo(st)
            if after.size != before.size || after.modified != before.modified { changed = true }
        }
        let file = Snapshot.File(path: candidate.relative, size: before.size, mode: before.mode & 0o777, mtime: before.modified,
                                 inode: before.inode, sha256: "", pack: pack, offset: offset)
        if let leftOut {
            problems.append(leftOut)
            return (file, false)
        }
        if changed {
            problems.append(.init(kind: "changed", path: shown, jobID: nil,
                                  message: "changed while it was read (size or mtime moved); stored as read"))
        }
        report.bytesAdded += before.size
        return (file, true)
    }
}

extension Result {
    var isFailure: Bool { if case .failure = self { return true } else { return false } }
}

