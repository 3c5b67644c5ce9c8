import CofferFixtures
@testable import CofferKit
import Foundation
import GRDB
import Testing

@Suite struct BackupRestoreTests {
    @Test func hostileVolumeSurvivesBackupAndRestoreExactly() throws {
        let fixture = try BackupFixture(jobs: 60, videoSizes: VolumeSpec.testVideoSizes)
        let report = try fixture.backup()
        #expect(report.status == .ok, "\(report.problems)")
        #expect(report.filesAdded == report.files)

        let restored = try fixture.restore(into: "restored")
        #expect(restored.verify?.findings.isEmpty == true, "\(restored.verify?.findingList ?? "")")
        #expect(restored.status == .ok)

        // Every backed-up file, byte for byte, with its mode and mtime, and nothing else.
        let snapshot = try fixture.repository().resolve("latest")
        var recorded = Set<PathBytes>()
        try fixture.repository().reader(for: snapshot).files { recorded.insert($0.path) }
        let source = try TreeSnapshot(fixture.volume.mediaRoot) { !recorded.contains($0) }
        let target = try TreeSnapshot(fixture.volume.directory.child("restored/media"))
        #expect(Set(source.items.keys) == recorded)
        #expect(Set(target.items.keys) == recorded)
        // library/ whole, and from tmp/ only what the database refers to.
        let library = try TreeSnapshot(fixture.volume.mediaRoot + "/library")
        #expect(Set(library.items.keys.map { PathBytes("library/".utf8) + $0 }).isSubset(of: recorded))
        #expect(recorded.contains { $0.starts(with: PathBytes("tmp/".utf8)) })
        for (path, item) in target.items {
            #expect(source.items[path] == item, "\(PathText.display(path)) differs")
        }
        #expect(target.items.keys.contains { !PathText.isUTF8($0) })
        #expect(target.items.keys.contains { $0.split(separator: UInt8(ascii: "/")).last?.count == 255 })
        #expect(target.items.values.contains { $0.size == 0 })
        // The videos of real sizes, among the small files.
        #expect(Set(VolumeSpec.testVideoSizes.map(Int64.init)).isSubset(of: Set(target.items.values.map(\.size))))

        // The database: same rows, media paths moved to the new MEDIA_ROOT.
        let newDB = fixture.volume.directory.child("restored/data/db.sqlite")
        #expect(try tableRows(newDB, "jobs") == tableRows(fixture.volume.dbPath, "jobs"))
        #expect(try tableRows(newDB, "job_events") == tableRows(fixture.volume.dbPath, "job_events"))
        let oldMedia = try tableRows(fixture.volume.dbPath, "media").map {
            $0.replacingOccurrences(of: fixture.volume.mediaRoot, with: fixture.volume.directory.child("restored/media"))
        }
        // BLOB paths print as bytes: compare them through the restored verify (clean) instead.
        #expect(try tableRows(newDB, "media").filter { !$0.contains("Data") } == oldMedia.filter { !$0.contains("Data") })
        #expect(restored.pathsRewritten > 0)
        #expect(try FileSystem.status(newDB).get().mode & 0o777 == 0o644)
        // The database the pipeline opens again: its schema (tables, indexes, any trigger), version
        // and the settings kept in the file (write-ahead log, page size, auto-vacuum, encoding)
        // are the source's.
        func shape(_ path: String) throws -> [String] {
            try DatabaseQueue(path: path, configuration: DatabaseAccess.configuration(readOnly: true)).read { db in
                try String.fetchAll(db, sql: "SELECT type || ' ' || name || ' ' || tbl_name || ': ' || ifnull(sql, '') FROM sqlite_master ORDER BY type, name")
                    + ["journal_mode", "user_version", "application_id", "page_size", "auto_vacuum", "encoding"].map { pragma in
                        "\(pragma) = \(try String.fetchOne(db, sql: "PRAGMA \(pragma)") ?? "")"
                    }
            }
        }
        let sourceShape = try shape(fixture.volume.dbPath)
        #expect(sourceShape.contains("journal_mode = wal") && sourceShape.contains { $0.hasPrefix("index ") }, "\(sourceShape)")
        #expect(try shape(newDB) == sourceShape)
    }

    /// Restore checks the database part of the result on its staged copy while the media are
    /// written: its report must be what `verify --full` of the restored volume says, finding
    /// for finding, in the same order, with the same counts.
    @Test func theRestoredVolumesCheckIsWhatAFullVerifyOfItSays() throws {
        let fixture = try BackupFixture(jobs: 30)
        let queue = try DatabaseQueue(path: fixture.volume.dbPath)
        try queue.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA foreign_keys = OFF")
            // A foreign key to nowhere, a COMPLETE job without its media row, a row whose file is gone.
            try db.execute(sql: "INSERT INTO job_events (job_id, event, payload) VALUES ('no-such-job', 'progress', '{}')")
            try db.execute(sql: """
                INSERT INTO jobs (id, url, created_at, status, completed_at)
                VALUES ('complete-without-media', 'https://video.example/x', datetime('now'), 'COMPLETE', datetime('now'))
                """)
            let gone = try String.fetchOne(db, sql: "SELECT video_path FROM media WHERE video_path LIKE '%/library/%' AND typeof(video_path) = 'text' LIMIT 1")
            #expect(unlink(try #require(gone)) == 0)
        }
        try queue.close()
        _ = try fixture.backup()
        let restored = try fixture.restore(into: "restored")
        let report = try #require(restored.verify)
        let kinds = Set(report.findings.map(\.kind))
        #expect(kinds.isSuperset(of: [.foreignKey, .completeWithoutMedia, .missingFile]), "\(report.findingList)")

        var verifier = LiveVerifier(configuration: try fixture.volume.configuration([
            .dbPath: fixture.volume.directory.child("restored/data/db.sqlite"),
            .mediaRoot: fixture.volume.directory.child("restored/media"),
        ]))
        verifier.full = true
        let again = try verifier.run()
        #expect(report.findings == again.findings)
        #expect(report.counts == again.counts)
        #expect(report.databaseCheck == again.databaseCheck)
        #expect(report.schema == again.schema)
    }

    @Test func theSnapshotRecordsWhatItHolds() throws {
        let fixture = try BackupFixture(jobs: 30)
        let report = try fixture.backup()
        let repository = try fixture.repository()
        let snapshot = try repository.resolve(try #require(report.snapshot))
        #expect(snapshot.header.dbPath == fixture.volume.dbPath)
        #expect(snapshot.header.mediaRoot == fixture.volume.mediaRoot)
        #expect(snapshot.header.host == ProcessInfo.processInfo.hostName)
        #expect(snapshot.header.cofferVersion == CofferVersion.coffer)
        let db = snapshot.summary.database
        #expect(db.integrityCheck == "ok")
        #expect(db.schemaVersion == 1)
        #expect(db.rowCounts["jobs"] == fixture.volume.generated.jobs)
        #expect(db.rowCounts["job_events"] == fixture.volume.generated.events)
        #expect(db.pageCount > 0 && db.pageSize > 0 && db.sha256.count == 64)
        // Timings: when each part of the run ended, from its start, the whole run last.
        let seconds = snapshot.summary.seconds
        #expect(Set(seconds.keys) == ["database_copied", "media_collected", "media_stored", "reconciled", "database_checked", "database_compressed", "total"], "\(seconds)")
        let total = try #require(seconds["total"])
        #expect(seconds.values.allSatisfy { $0 >= 0 && $0 <= total }, "\(seconds)")
        #expect(seconds["database_copied"]! <= seconds["media_collected"]! && seconds["media_collected"]! <= seconds["media_stored"]!, "\(seconds)")
        var count = 0
        try repository.reader(for: snapshot).files { file in
            count += 1
            #expect(file.sha256.count == 64)
            #expect(file.pack == snapshot.summary.pack.name)
            #expect(file.offset > 0 && file.offset % 512 == 0)
            #expect(file.mtime > 0 && file.inode > 0)
        }
        #expect(count == report.files)
    }

    /// Files the database refers to anywhere under MEDIA_ROOT are found by the one sorted walk
    /// (before and after library/ in byte order, directly in MEDIA_ROOT, deep down), and only
    /// they: what sits beside them unreferenced is not backed up.
    @Test func referencedFilesOutsideTheLibraryAndOnlyThem() throws {
        let fixture = try BackupFixture(jobs: 12, hostile: false)
        let root = fixture.volume.mediaRoot
        let referenced = ["aaa early/voice.wav", "top level.wav", "zzz/late/deep/dub.wav", "tmp/extra-job/audio_dubbed.wav"]
        let unreferenced = ["aaa early/partial.part", "zzz/late/notes.txt", "stray.bin", "tmp/extra-job/scratch.tmp"]
        for (index, name) in (referenced + unreferenced).enumerated() {
            let path = root + "/" + name
            try FileManager.default.createDirectory(atPath: PathText.parent(path), withIntermediateDirectories: true)
            try Data(repeating: UInt8(index + 1), count: 100 + index).write(to: URL(fileURLWithPath: path))
        }
        let queue = try DatabaseQueue(path: fixture.volume.dbPath, configuration: DatabaseAccess.configuration(readOnly: false))
        try queue.write { db in
            for (index, name) in referenced.enumerated() {
                try db.execute(sql: "INSERT INTO jobs (id, url, status) VALUES (?, 'u', 'DUBBING')", arguments: ["extra-\(index)"])
                try db.execute(sql: "INSERT INTO media (job_id, audio_dubbed_path) VALUES (?, ?)", arguments: ["extra-\(index)", root + "/" + name])
            }
        }
        try queue.close()

        let report = try fixture.backup()
        let repository = try fixture.repository()
        var paths: [String] = []
        try repository.reader(for: try repository.resolve("latest")).files { paths.append(String(decoding: $0.path, as: UTF8.self)) }
        #expect(paths == paths.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }, "records in path byte order")
        for name in referenced { #expect(paths.contains(name), "\(name)") }
        for name in unreferenced { #expect(!paths.contains(name), "\(name)") }
        #expect(paths.filter { $0.hasPrefix("library/") }.count > 0)
        #expect(paths.filter { $0.hasPrefix("library/") }.count == fixture.volume.generated.filePaths.filter {
            String(decoding: $0, as: UTF8.self).hasPrefix(root + "/library/") }.count)
        #expect(report.files == paths.count)

        // The second run reuses them all, and a restore brings them back byte for byte.
        let second = try fixture.backup()
        #expect(second.bytesRead == 0 && second.filesAdded == 0)
        _ = try fixture.restore(into: "back")
        for name in referenced {
            let original = try Data(contentsOf: URL(fileURLWithPath: root + "/" + name))
            #expect(try Data(contentsOf: URL(fileURLWithPath: fixture.volume.directory.child("back/media/" + name))) == original)
        }
    }

    /// Restore skips all-zero blocks (a sparse file stays sparse); a file that ends in zeros,
    /// or holds nothing else, still gets its whole size and bytes.
    @Test func filesEndingInZerosAreRestoredWhole() throws {
        let fixture = try BackupFixture(jobs: 5, hostile: false)
        let library = fixture.volume.mediaRoot + "/library/zeros"
        try FileManager.default.createDirectory(atPath: library, withIntermediateDirectories: true)
        let contents: [String: [UInt8]] = [
            "tail.mkv": Array("head".utf8) + [UInt8](repeating: 0, count: 3 << 20),
            "all.mkv": [UInt8](repeating: 0, count: 5000),
            "middle.mkv": Array("a".utf8) + [UInt8](repeating: 0, count: 2 << 20) + Array("z".utf8),
        ]
        for (name, bytes) in contents {
            #expect(FileManager.default.createFile(atPath: library + "/" + name, contents: Data(bytes)))
        }
        try fixture.backup()
        let restored = try fixture.restore(into: "r")
        // No row refers to them (orphans), but a short file would also be a size finding.
        #expect(Set(restored.verify?.findings.map(\.kind) ?? []) == [.orphanFile], "\(restored.verify?.findingList ?? "")")
        for (name, bytes) in contents {
            let path = fixture.volume.directory.child("r/media/library/zeros/" + name)
            #expect(FileManager.default.contents(atPath: path) == Data(bytes), "\(name)")
        }
        // Runs of zeros become holes, not written blocks: on a filesystem with holes, the
        // restored files take a fraction of their size on disk.
        let probe = fixture.volume.directory.child("r/hole-probe")
        let fd = open(probe, O_CREAT | O_WRONLY, 0o600)
        defer { unlink(probe) }
        var info = stat()
        guard fd >= 0, ftruncate(fd, 1 << 20) == 0, fstat(fd, &info) == 0, close(fd) == 0, info.st_blocks == 0 else {
            print("skipped: the temporary folder's filesystem has no holes")
            return
        }
        for name in ["tail.mkv", "middle.mkv", "all.mkv"] {
            var restored = stat()
            #expect(stat(fixture.volume.directory.child("r/media/library/zeros/" + name), &restored) == 0)
            #expect(Int64(restored.st_blocks) * 512 < Int64(restored.st_size) / 4 || restored.st_size < 8192,
                    "\(name): \(restored.st_blocks) blocks of 512 bytes for \(restored.st_size) bytes")
        }
    }

    /// Restore stages into fresh folders only its user can enter, and never sets the process's
    /// umask to 0 (libarchive's archive_write_disk does, for a moment on every entry: a race
    /// for any thread creating files meanwhile). The umask is sampled while a restore runs.
    @Test func stagingIsPrivateAndTheUmaskNeverMoves() throws {
        let staging = try ScratchDirectory(prefix: ".coffer-restore-test")
        defer { staging.remove() }
        var info = stat()
        #expect(stat(staging.path, &info) == 0 && info.st_mode & 0o777 == 0o700)

        func umaskLine() -> String? {
            (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8))?
                .split(separator: "\n").first { $0.hasPrefix("Umask:") }.map(String.init)
        }
        guard let start = umaskLine(), !start.hasSuffix("0000") else {
            print("skipped: the umask is 0 already (or /proc/self/status has none), so a moment at 0 cannot be seen")
            return
        }
        let fixture = try BackupFixture(jobs: 60, hostile: false, maxFileBytes: 64 << 10)
        try fixture.backup()
        final class Samples: @unchecked Sendable {
            let lock = NSLock()
            var umasks = Set<String>()
            var count = 0
            var done = false
        }
        let samples = Samples()
        // On a thread of its own: a loop that spins on a worker of the shared queues would
        // starve the restores of the tests running beside it.
        let sampling = DispatchSemaphore(value: 0)
        let sampler = Thread {
            defer { sampling.signal() }
            while !samples.lock.withLock({ samples.done }) {
                guard let line = umaskLine() else { continue }
                samples.lock.withLock {
                    samples.umasks.insert(line)
                    samples.count += 1
                }
            }
        }
        sampler.start()
        let restored: RestoreReport
        do {
            defer {
                samples.lock.withLock { samples.done = true }
                sampling.wait()
            }
            restored = try fixture.restore(into: "sampled")
        }
        #expect(restored.files > 0)
        #expect(samples.count > 0)
        // Another test may set its own umask meanwhile (077); what must never be seen is the
        // 0 that archive_write_disk sets.
        #expect(!samples.umasks.contains { $0.hasSuffix("0000") }, "\(samples.umasks)")
    }

    /// A parent line whose digest is not 64 hex digits (a damaged record) is not trusted: that
    /// file is read again, the others are not.
    @Test func aFileWhoseRecordedDigestIsDamagedIsReadAgain() throws {
        let fixture = try BackupFixture(jobs: 20, hostile: false)
        let first = try fixture.backup()
        let record = fixture.repo + "/snapshots/\(try #require(first.snapshot)).jsonl"
        var lines = try String(contentsOfFile: record, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let index = try #require(lines.firstIndex { $0.contains(#""size":"#) && !$0.contains(#""size":0,"#) && $0.contains(#""sha256":""#) })
        let digest = try #require(lines[index].range(of: #""sha256":""#))
        let start = digest.upperBound, end = lines[index].index(start, offsetBy: 64)
        let damaged = String(lines[index][start..<end].dropLast()) + "g"
        lines[index].replaceSubrange(start..<end, with: damaged)
        let size = try #require(Int64(lines[index].split(separator: ",").first { $0.hasPrefix(#""size":"#) }?.dropFirst(7) ?? ""))
        chmod(record, 0o644)
        try lines.joined(separator: "\n").write(toFile: record, atomically: false, encoding: .utf8)
        try resealRecord(record) // the line alone is damaged, not the record's digest

        let second = try fixture.backup()
        #expect(second.parent == first.snapshot)
        #expect(second.filesAdded == 1)
        #expect(second.bytesRead == size)
    }

    @Test func anUnchangedSecondBackupReadsNoMediaAndAChangeIsPickedUp() throws {
        let fixture = try BackupFixture(jobs: 40, hostile: false, videoSizes: VolumeSpec.testVideoSizes)
        let first = try fixture.backup()
        let second = try fixture.backup()
        #expect(second.parent == first.snapshot)
        #expect(second.filesAdded == 0)
        #expect(second.bytesRead == 0)
        #expect(second.files == first.files)
        #expect(second.packBytes < first.packBytes / 4)

        let changed = try #require(fixture.volume.generated.filePaths.first { $0.starts(with: PathBytes((fixture.volume.mediaRoot + "/library").utf8)) })
        try FixtureFiles.append(changed, Array("new bytes".utf8))
        let third = try fixture.backup()
        #expect(third.filesAdded == 1)
        #expect(third.bytesRead == (try FileSystem.status(changed).get().size))

        let full = try fixture.backup(full: true)
        #expect(full.filesAdded == full.files)
        #expect(try fixture.verifyRepository().findings.isEmpty)

        // Each snapshot restores whole, including those whose files live in earlier packs.
        let restored = try fixture.restore(into: "r3", snapshot: try #require(third.snapshot))
        // The grown video no longer matches its row's size: the only finding.
        #expect(restored.verify?.findings.map(\.kind) == [.sizeMismatch], "\(restored.verify?.findingList ?? "")")
    }

    /// A file is taken as unchanged only when its size, mtime and inode are all the parent's:
    /// the same bytes with another mtime, or the same size and mtime under another inode (the
    /// file replaced by a copy of itself), are read again; the other files are not.
    @Test func aFileWithTheSameSizeButAnotherMtimeOrInodeIsReadAgain() throws {
        let fixture = try BackupFixture(jobs: 40, hostile: false)
        try fixture.backup()
        let library = PathBytes((fixture.volume.mediaRoot + "/library/").utf8)
        let files = fixture.volume.generated.filePaths.filter { $0.starts(with: library) && (try? FileSystem.status($0).get().size) ?? 0 > 0 }
        let (touched, replaced) = (try #require(files.first), try #require(files.last))
        #expect(touched != replaced)
        let before = (touched: try FileSystem.status(touched).get(), replaced: try FileSystem.status(replaced).get())

        // Another mtime, nothing else.
        var times = [timespec(tv_sec: 1_700_000_000, tv_nsec: 0), timespec(tv_sec: 1_700_000_000, tv_nsec: 0)]
        #expect(touched.withCPath { utimensat(AT_FDCWD, $0, &times, 0) } == 0)
        // Another inode, the same bytes, size and mtime to the nanosecond.
        var st = stat()
        #expect(replaced.withCPath { stat($0, &st) } == 0)
        let copy = replaced + Array(".copy".utf8)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: PathText.display(replaced)))
        try bytes.write(to: URL(fileURLWithPath: PathText.display(copy)))
        times = [st.st_atim, st.st_mtim]
        #expect(copy.withCPath { utimensat(AT_FDCWD, $0, &times, 0) } == 0)
        #expect(copy.withCPath { c in replaced.withCPath { rename(c, $0) } } == 0)
        let after = (touched: try FileSystem.status(touched).get(), replaced: try FileSystem.status(replaced).get())
        #expect(after.touched.size == before.touched.size && after.touched.inode == before.touched.inode && after.touched.modified != before.touched.modified)
        #expect(after.replaced.size == before.replaced.size && after.replaced.modified == before.replaced.modified && after.replaced.inode != before.replaced.inode)

        let next = try fixture.backup()
        #expect(next.filesAdded == 2)
        #expect(next.bytesRead == after.touched.size + after.replaced.size)
        #expect(try fixture.verifyRepository().findings.isEmpty)
    }

    @Test func aRepositoryInsideTheLibraryIsRefused() throws {
        let fixture = try BackupFixture(jobs: 4, hostile: false)
        var runner = BackupRunner(configuration: try fixture.configuration([.repo: fixture.volume.mediaRoot + "/library/backups"]))
        runner.full = true
        let error = #expect(throws: CofferError.self) { try runner.run() }
        #expect(error?.status == .usage)
        #expect(!FileManager.default.fileExists(atPath: fixture.volume.mediaRoot + "/library/backups"))
    }

    @Test func aDryRunWritesNothing() throws {
        let fixture = try BackupFixture(jobs: 10, hostile: false)
        let report = try fixture.backup(dryRun: true)
        #expect(report.dryRun && report.snapshot == nil)
        #expect(report.estimatedBytes > report.bytes)
        #expect(!FileManager.default.fileExists(atPath: fixture.repo))
    }

    @Test func missingFilesAreRecordedAndEndWithFindings() throws {
        let fixture = try BackupFixture(jobs: 40, hostile: false)
        let planted = try ProblemPlanter.plantAll(in: fixture.volume.generated)
        let report = try fixture.backup()
        #expect(report.status == .findings)
        let missing = try #require(planted.first { $0.kind == .missingFile }?.path)
        #expect(report.problems.contains { $0.kind == "missing" && $0.path == PathText.display(missing) })
        // A directory where a video should be is not backed up, and says so.
        #expect(report.problems.contains { $0.kind == "not_a_file" })
        let repository = try fixture.repository()
        let snapshot = try repository.resolve("latest")
        let details = try repository.reader(for: snapshot).details()
        #expect(details.problems == report.problems)
        #expect(snapshot.summary.problemCount == report.problems.count)
        #expect(snapshot.summary.findingCount == details.findings.count)
        #expect(Set(details.findings.map(\.kind)).isSuperset(of: [.missingFile, .sizeMismatch, .orphanFile, .foreignKey]))
        #expect(details.findings.allSatisfy { $0.kind != .foreignKey || $0.path == nil })
    }

    /// A finding as one comparable line: every field that is shown.
    static func key(_ finding: Finding) -> String {
        "\(finding.kind.rawValue) \(finding.jobID ?? "") \(finding.path ?? "") \(finding.expected ?? "") \(finding.actual ?? "") \(finding.message)"
    }

    /// The reconciliation inside a backup takes the library's files from the backup's own walk
    /// (no `stat` of each reference, no second walk) and finds exactly what `verify` finds on
    /// the same volume: every planted problem, plus links in the library (one a media row
    /// refers to, one it does not) and a library folder that is a link.
    @Test func theReconciliationInABackupFindsWhatVerifyFinds() throws {
        let fixture = try BackupFixture(jobs: 60, hostile: true)
        _ = try ProblemPlanter.plantAll(in: fixture.volume.generated)
        let library = fixture.volume.generated.mediaRoot + "/library"
        let video = try #require(fixture.volume.generated.filePaths.first { path in
            PathText.isUTF8(path) && path.count < 200 && (try? FileSystem.status(path).get().kind) == .regular
                && String(decoding: path, as: UTF8.self).hasPrefix(library + "/")
        })
        let linked = try #require(String(validating: video, as: UTF8.self))
        // A media row's video replaced by a link to a file elsewhere: fine for verify (it
        // follows the link), and reported by its size.
        try FileManager.default.moveItem(atPath: linked, toPath: fixture.volume.directory.child("moved.mkv"))
        try FileManager.default.createSymbolicLink(atPath: linked, withDestinationPath: fixture.volume.directory.child("moved.mkv"))
        try FileManager.default.createSymbolicLink(atPath: library + "/orphan-link.mkv", withDestinationPath: "/nowhere")
        try FileManager.default.createSymbolicLink(atPath: library + "/linked-folder", withDestinationPath: fixture.volume.directory.path)

        var runner = BackupRunner(configuration: try fixture.configuration())
        var walk: LibraryWalk?
        runner.libraryWalkMade = { walk = $0 }
        _ = try runner.run()
        let repository = try fixture.repository()
        let recorded = try repository.reader(for: try repository.resolve("latest")).details().findings
        var verifier = LiveVerifier(configuration: try fixture.configuration())
        verifier.minFreeSpaceBytes = 0
        verifier.alertFreeSpaceBytes = 0
        let verified = try verifier.run().findings.filter { $0.kind != .integrity }
        #expect(recorded.map(Self.key).sorted() == verified.map(Self.key).sorted())
        #expect(Set(recorded.map(\.kind)).isSuperset(of: [.missingFile, .sizeMismatch, .orphanFile, .notAFile]))
        #expect(recorded.contains { $0.kind == .orphanFile && $0.path?.hasSuffix("/orphan-link.mkv") == true })
        let used = try #require(walk)
        #expect(used.outcome == .complete)
        #expect(used.served >= 20, "the reconciliation looked at the library's files again")
    }

    /// A restore into fresh targets checks the volume while it is staged (beside the sync),
    /// and finds what `verify` finds once it is in place, under the final names; a forced
    /// restore over a media root that held files checks after the merge, and sees them.
    @Test func theRestoreCheckFindsWhatVerifyFindsAfterIt() throws {
        let fixture = try BackupFixture(jobs: 60, hostile: true)
        _ = try ProblemPlanter.plantAll(in: fixture.volume.generated)
        try fixture.backup()
        func verified(_ name: String) throws -> [String] {
            var verifier = LiveVerifier(configuration: try fixture.configuration([
                .dbPath: fixture.volume.directory.child("\(name)/data/db.sqlite"), .mediaRoot: fixture.volume.directory.child("\(name)/media"),
            ]))
            verifier.full = true
            return try verifier.run().findings.map(Self.key).sorted()
        }

        let fresh = try fixture.restore(into: "fresh")
        #expect(fresh.checkedWhileStaged)
        let check = try #require(fresh.verify)
        #expect(Set(check.findings.map(\.kind)).isSuperset(of: [.missingFile, .sizeMismatch, .orphanFile, .foreignKey]))
        #expect(check.findings.allSatisfy { $0.path.map { !$0.contains(".coffer-restore") } ?? true })
        #expect(check.counts.libraryFiles > 20 && check.counts.tempDirectories > 0)
        #expect(check.findings.map(Self.key).sorted() == (try verified("fresh")))

        let media = fixture.volume.directory.child("forced/media")
        try FileManager.default.createDirectory(atPath: media + "/library/already here", withIntermediateDirectories: true)
        try Data("old".utf8).write(to: URL(fileURLWithPath: media + "/library/already here/old.mkv"))
        let forced = try fixture.restore(into: "forced", force: true)
        #expect(!forced.checkedWhileStaged)
        let after = try #require(forced.verify)
        #expect(after.findings.contains { $0.kind == .orphanFile && $0.path?.hasSuffix("/already here/old.mkv") == true })
        #expect(after.findings.map(Self.key).sorted() == (try verified("forced")))

        // Over a database that is there (its space is freed only when it is replaced): after.
        try FileManager.default.createDirectory(atPath: fixture.volume.directory.child("over/data"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: fixture.volume.directory.child("fresh/data/db.sqlite"), toPath: fixture.volume.directory.child("over/data/db.sqlite"))
        let over = try fixture.restore(into: "over", force: true)
        #expect(!over.checkedWhileStaged)
        #expect(try #require(over.verify).findings.map(Self.key).sorted() == (try verified("over")))
    }

    /// The walk tells the reconciliation how it ended: whole (use what it saw), stopped by an
    /// error (stop too: no second walk while the run fails) or without the library (walk it
    /// yourself, and report it).
    @Test func theLibraryWalkSaysHowItEnded() throws {
        let fixture = try BackupFixture(jobs: 20, hostile: false)
        let runner = BackupRunner(configuration: try fixture.configuration())
        let layout = runner.configuration.layout
        var problems: [Snapshot.Problem] = []
        let whole = LibraryWalk()
        try runner.collect(copyPath: layout.dbPath, layout: layout, problems: &problems, libraryWalk: whole) { _ in }
        #expect(whole.outcome == .complete)
        #expect(try whole.awaitComplete() != nil)

        struct DiskFull: Error {}
        let stopped = LibraryWalk()
        var emitted = 0
        #expect(throws: DiskFull.self) {
            try runner.collect(copyPath: layout.dbPath, layout: layout, problems: &problems, libraryWalk: stopped) { _ in
                emitted += 1
                if emitted == 3 { throw DiskFull() }
            }
        }
        #expect(stopped.outcome == .abandoned)
        #expect(throws: CancellationError.self) { _ = try stopped.awaitComplete() }

        try FileManager.default.removeItem(atPath: layout.libraryRoot)
        let without = LibraryWalk()
        try runner.collect(copyPath: layout.dbPath, layout: layout, problems: &problems, libraryWalk: without) { _ in }
        #expect(without.outcome == .incomplete)
        #expect(try without.awaitComplete() == nil)
    }

    /// A MEDIA_ROOT pointed at the wrong place makes a problem per file: the text (what cron
    /// mails) lists 20 of each kind and counts the rest; --verbose and --json have them all.
    @Test func theTextListsAtMostTwentyProblemsOfEachKind() {
        var report = BackupReport(repository: "/repo", dryRun: false)
        report.problems = (0..<45).map { Snapshot.Problem(kind: "outside_media_root", path: "/old/media/\($0).mkv", jobID: "job-\($0)",
                                                          message: "referred to by the database but outside MEDIA_ROOT; not backed up") }
            + [Snapshot.Problem(kind: "missing", path: "/media/library/gone.mkv", jobID: nil, message: "referred to by the database: No such file")]
        let text = report.text()
        #expect(text.contains("/old/media/19.mkv"))
        #expect(!text.contains("/old/media/20.mkv"))
        #expect(text.contains("... and 25 more outside_media_root (--verbose or --json lists all)"))
        #expect(text.contains("missing: /media/library/gone.mkv"))
        let all = report.text(limit: nil)
        #expect(all.contains("/old/media/44.mkv"))
        #expect(!all.contains("more outside_media_root"))
        #expect(!text.contains("listed") && !text.contains("lists the first"))
        // Past what a record lists, the text says so.
        report.findings = Snapshot.Summary.listLimit + 1
        report.problems += Array(repeating: report.problems[0], count: Snapshot.Summary.listLimit)
        let long = report.text()
        #expect(long.contains("\(Snapshot.Summary.listLimit + 1) reconciliation finding(s) recorded in the snapshot (the first \(Snapshot.Summary.listLimit) listed)"))
        #expect(long.contains("the snapshot lists the first \(Snapshot.Summary.listLimit)"))
    }

    @Test func restoreRefusesTargetsThatAreNotFresh() throws {
        let fixture = try BackupFixture(jobs: 10, hostile: false)
        try fixture.backup()
        let media = fixture.volume.directory.child("busy/media")
        try FileManager.default.createDirectory(atPath: media, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: media + "/keep.txt", contents: Data("mine".utf8))
        let error = #expect(throws: CofferError.self) { try fixture.restore(into: "busy") }
        #expect(error?.status == .failed)
        #expect(try FileManager.default.contentsOfDirectory(atPath: media) == ["keep.txt"])
        #expect(!FileManager.default.fileExists(atPath: fixture.volume.directory.child("busy/data/db.sqlite")))

        let forced = try fixture.restore(into: "busy", force: true)
        #expect(forced.status == .ok, "\(forced.verify?.findingList ?? "")")
        #expect(FileManager.default.fileExists(atPath: media + "/keep.txt"))
    }

    /// A repository, or restore targets, on a read-only filesystem (one the kernel remounted
    /// read-only after errors, at 3 a.m.): the run fails (exit 2) naming the path, the cause and
    /// what to look at, and writes nothing anywhere.
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"))
    func aReadOnlyDiskIsNamedWithWhatToDo() throws {
        let fixture = try BackupFixture(jobs: 10, hostile: false)
        try fixture.backup()
        guard let disk = try SmallDisk(megabytes: 8, in: fixture.volume.directory.child("ro"), options: "ro") else { return }
        defer { withExtendedLifetime(disk) {} }
        func failure(_ run: () throws -> Void) -> CofferError? {
            do { try run() } catch let error as CofferError { return error } catch { Issue.record("\(error)") }
            return nil
        }
        var runner = BackupRunner(configuration: try fixture.configuration([.repo: disk.path + "/repo"]))
        runner.full = true
        let backup = try #require(failure { _ = try runner.run() })
        var restorer = Restorer(configuration: try fixture.configuration([.dbPath: disk.path + "/data/db.sqlite", .mediaRoot: disk.path + "/media"]))
        restorer.snapshot = "latest"
        let restore = try #require(failure { _ = try restorer.run() })
        for error in [backup, restore] {
            #expect(error.status == .failed && error.errno == EROFS, "\(error.message)")
            #expect(error.message.contains(disk.path) && error.message.contains("Read-only file system"), "\(error.message)")
            #expect(error.hint?.contains("read-only") == true && error.hint?.contains("dmesg") == true, "\(error.hint ?? "no hint")")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: disk.path).isEmpty)
        #expect(try fixture.repository().snapshots().snapshots.count == 1)
    }

    /// Every system error an operator can act on says what to do.
    @Test func systemErrorsAnOperatorCanActOnSayWhatToDo() {
        for (code, words) in [(ENOSPC, "free space"), (EDQUOT, "quota"), (EFBIG, "ulimit -f"), (EIO, "dmesg"), (EROFS, "read-only"),
                              (EACCES, "owner and mode"), (EPERM, "owner and mode")] {
            let error = CofferError.system("write", "/srv/x", errno: code)
            #expect(error.hint?.contains(words) == true, "\(code): \(error.hint ?? "no hint")")
            #expect(error.errno == code)
        }
        #expect(CofferError.system("write", "/srv/x", errno: EINVAL).hint == nil)
    }

    /// The disk of the repository, then of the restore's targets, fills in the middle of a run,
    /// after the free-space check passed: a file the pipeline is still writing grows past what
    /// the check counted, and another writer takes the space a restore was promised. Each run
    /// fails with exit 2 naming the cause and leaves nothing: no partial pack, no record, no
    /// scratch, the earlier snapshot whole; no target, no staging. A small tmpfs is the disk
    /// (mounting it needs root: skipped otherwise, saying so).
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"))
    func aDiskThatFillsDuringARunFailsCleanly() throws {
        let fixture = try BackupFixture(jobs: 40, hostile: false, maxFileBytes: 64 * 1024)
        guard let disk = try SmallDisk(megabytes: 8, in: fixture.volume.directory.child("small")) else { return }
        let mount = disk.path
        defer { withExtendedLifetime(disk) {} } // mounted until the end
        let repo = mount + "/repo"
        func entries(_ folder: String) throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: repo + "/" + folder).sorted() }

        var runner = BackupRunner(configuration: try fixture.configuration([.repo: repo]))
        #expect(try runner.run().status == .ok)
        let (packs, records) = (try entries("packs"), try entries("snapshots"))

        // A library file grows by 12 MiB once the walk has counted it: the pack outgrows the disk.
        var library: String?
        try DirectoryWalker(root: fixture.volume.mediaRoot + "/library").walk { entry in
            if library == nil, entry.kind == .regular { library = fixture.volume.mediaRoot + "/library/" + PathText.display(entry.relativePath) }
        }
        let growing = try #require(library)
        runner.full = true
        runner.afterCollecting = {
            try FixtureFiles.append(PathBytes(growing.utf8), [UInt8](repeating: 1, count: 12 << 20))
        }
        let backupError = #expect(throws: CofferError.self) { try runner.run() }
        #expect(backupError?.status == .failed)
        #expect(backupError?.message.contains("No space left on device") == true, "\(backupError?.message ?? "")")
        #expect(backupError?.message.contains(repo) == true, "\(backupError?.message ?? "")")
        #expect(backupError?.message.contains(" free of 8.0 MiB there)") == true, "\(backupError?.message ?? "")")
        #expect(try entries("packs") == packs)
        #expect(try entries("snapshots") == records)
        #expect(try entries("tmp").isEmpty)
        #expect(try RepositoryVerifier(repository: repo).run().findings.isEmpty)

        // A restore onto that disk: it fits when checked, then another writer takes all but
        // 64 KiB.
        var restorer = Restorer(configuration: try fixture.configuration([
            .repo: repo, .dbPath: mount + "/new/data/db.sqlite", .mediaRoot: mount + "/new/media",
        ]))
        let filler = mount + "/filler"
        restorer.afterCheckingSpace = {
            guard case .success(let space) = FileSystem.freeSpace(mount) else { throw CocoaError(.fileWriteUnknown) }
            let fd = try RawIO.createNew(filler)
            defer { close(fd) }
            let chunk = [UInt8](repeating: 0xAB, count: 64 << 10)
            for _ in 0..<max(0, Int(space.available) / chunk.count - 1) { try RawIO.writeAll(fd, chunk, chunk.count, path: filler) }
        }
        let restoreError = #expect(throws: CofferError.self) { try restorer.run() }
        #expect(restoreError?.status == .failed)
        #expect(restoreError?.message.contains("No space left on device") == true, "\(restoreError?.message ?? "")")
        // The targets are not created, no staging is left, and the space is given back.
        #expect(try FileManager.default.contentsOfDirectory(atPath: mount).sorted() == ["filler", "repo"])
        unlink(filler)
        restorer.afterCheckingSpace = nil
        #expect(try restorer.run().verify?.findings.isEmpty == true)
    }

    /// A new disk mounted at MEDIA_ROOT, as made (nothing on it but an empty lost+found): fresh,
    /// so no `--force` is needed; the tree is staged on that disk (a rename cannot leave it)
    /// and moved into place, checked while staged. A restore killed there leaves its staging
    /// inside the mount, which the next run sweeps.
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"))
    func aRestoreOntoANewlyMountedDiskStagesOnIt() throws {
        let fixture = try BackupFixture(jobs: 40, hostile: true)
        try fixture.backup()
        let target = fixture.volume.directory.child("new")
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false)
        guard let disk = try SmallDisk(megabytes: 64, in: target + "/media") else { return }
        defer { withExtendedLifetime(disk) {} }
        try FileManager.default.createDirectory(atPath: disk.path + "/lost+found", withIntermediateDirectories: false)
        // What a killed restore left there.
        try FileManager.default.createDirectory(atPath: disk.path + "/.coffer-restore-media.ab12cd/library", withIntermediateDirectories: true)

        var restorer = Restorer(configuration: try fixture.configuration([.dbPath: target + "/data/db.sqlite", .mediaRoot: disk.path]))
        let report = try restorer.run()
        #expect(report.verify?.findings.isEmpty == true, "\(report.verify?.findingList ?? "")")
        #expect(report.checkedWhileStaged)
        #expect(try FileManager.default.contentsOfDirectory(atPath: target).sorted() == ["data", "media"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: disk.path).sorted() == ["library", "lost+found", "tmp"])
        var recorded = Set<PathBytes>()
        try fixture.repository().reader(for: try fixture.repository().resolve("latest")).files { recorded.insert($0.path) }
        let source = try TreeSnapshot(fixture.volume.mediaRoot) { !recorded.contains($0) }
        let restored = try TreeSnapshot(disk.path) { $0 == PathBytes("lost+found".utf8) }
        #expect(restored.items == source.items)

        // A disk that holds something is not fresh: refused without --force, merged with it.
        try FileManager.default.removeItem(atPath: target + "/data")
        let refused = #expect(throws: CofferError.self) { try restorer.run() }
        #expect(refused?.message.contains("the media root is not empty") == true, "\(refused?.message ?? "")")
        restorer.force = true
        #expect(try restorer.run().verify?.findings.isEmpty == true)
        #expect(try FileManager.default.contentsOfDirectory(atPath: disk.path).sorted() == ["library", "lost+found", "tmp"])
        #expect(try TreeSnapshot(disk.path) { $0 == PathBytes("lost+found".utf8) }.items == source.items)
    }

    /// The database copy is the first thing a backup writes (into the repository's tmp/): a
    /// disk without room for it refuses the run before it starts, saying how much is needed;
    /// one that fills while the copy is written names the copy and the cause (SQLite itself
    /// reports only "not an error" then), and nothing is left.
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"))
    func aDatabaseCopyThatDoesNotFitFailsCleanly() throws {
        let fixture = try BackupFixture(jobs: 40, hostile: false)
        let queue = try DatabaseQueue(path: fixture.volume.dbPath)
        try queue.write { db in
            try db.execute(sql: """
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
                INSERT INTO job_events (job_id, ts, event, payload)
                SELECT (SELECT id FROM jobs ORDER BY rowid LIMIT 1), datetime('now'), 'progress', hex(randomblob(2000)) FROM n
                """)
        }
        try queue.close()
        let size = try FileSystem.status(fixture.volume.dbPath).get().size
        guard let disk = try SmallDisk(megabytes: 1, in: fixture.volume.directory.child("small")) else { return }
        defer { withExtendedLifetime(disk) {} }
        #expect(size > 1 << 20, "the database (\(size) bytes) must not fit")

        let repo = disk.path + "/repo"
        let refused = #expect(throws: CofferError.self) { try BackupRunner(configuration: try fixture.configuration([.repo: repo])).run() }
        #expect(refused?.status == .failed)
        #expect(refused?.message.contains("check free space in \(repo)/tmp") == true, "\(refused?.message ?? "")")
        #expect(refused?.message.contains("needed") == true, "\(refused?.message ?? "")")
        #expect(try FileManager.default.contentsOfDirectory(atPath: repo + "/tmp").isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: repo + "/packs").isEmpty)

        let copy = disk.path + "/copy.sqlite"
        let failed = #expect(throws: CofferError.self) { try DatabaseCopy.take(from: fixture.volume.dbPath, to: copy) }
        #expect(failed?.status == .failed)
        #expect(failed?.message.contains("write the database copy \(copy): No space left on device (") == true, "\(failed?.message ?? "")")
        #expect(failed?.message.contains(" free of 1.0 MiB there)") == true, "\(failed?.message ?? "")")
        #expect(failed?.message.contains("not an error") == false)
    }

    /// The compressed database copy is counted twice by the free-space check of a local
    /// repository (made in its tmp/ first, then copied into the pack), at the parent's
    /// compression ratio with a margin, or at its full size without a parent.
    @Test func theSpaceCheckCountsTheCompressedCopyBesideThePack() throws {
        let mib: Int64 = 1 << 20
        #expect(BackupRunner.compressedCopyEstimate(100 * mib, parent: nil) == 101 * mib)
        var parent = Snapshot.Database(entry: "db.sqlite.zst", pack: "packs/p.tar", offset: 0, storedSize: 25 * mib, storedSha256: "",
                                       size: 100 * mib, sha256: "", pageSize: 4096, pageCount: 25_600, schemaVersion: 1,
                                       rowCounts: [:], integrityCheck: "ok")
        #expect(BackupRunner.compressedCopyEstimate(200 * mib, parent: parent) == 76 * mib) // 200 × 0.25 × 1.5, + 1
        parent.storedSize = 90 * mib
        #expect(BackupRunner.compressedCopyEstimate(200 * mib, parent: parent) == 201 * mib) // never above the copy
    }

    /// A database that does not compress (5 MiB of random bytes) on a repository disk with
    /// room for the pack but not for the pack and the compressed copy beside it: refused up
    /// front, naming the space, with nothing written (it used to fail with ENOSPC at the end).
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"))
    func anIncompressibleDatabaseIsCountedTwiceUpFront() throws {
        let fixture = try BackupFixture(jobs: 10, hostile: false, maxFileBytes: 1024)
        try DatabaseQueue(path: fixture.volume.dbPath).write { db in
            try db.execute(sql: "CREATE TABLE attachments (data BLOB); INSERT INTO attachments VALUES (randomblob(5 * 1024 * 1024))")
        }
        guard let disk = try SmallDisk(megabytes: 12, in: fixture.volume.directory.child("small")) else { return }
        let mount = disk.path
        defer { withExtendedLifetime(disk) {} } // mounted until the end
        let repo = mount + "/repo"
        let runner = BackupRunner(configuration: try fixture.configuration([.repo: repo]))
        let error = #expect(throws: CofferError.self) { try runner.run() }
        #expect(error?.message.contains("check free space in \(repo)") == true, "\(error?.message ?? "")")
        for folder in ["packs", "snapshots", "tmp"] {
            #expect((try? FileManager.default.contentsOfDirectory(atPath: repo + "/" + folder))?.isEmpty ?? true, "\(folder)")
        }
    }

    /// A backup whose database copy goes beside the database (a dry run here; a backup into a
    /// bucket does the same) leaves MIN_FREE_SPACE_GB free on that disk, the pipeline's: a
    /// copy that would take the disk below it is refused up front (exit 2, naming the setting),
    /// with nothing left there; with the threshold lower, the same run goes through.
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"))
    func aCopyBesideTheDatabaseKeepsTheMinimumFreeSpace() throws {
        let base = try TemporaryDirectory("coffer-reserve")
        guard let disk = try SmallDisk(megabytes: 48, in: base.child("small")) else { return }
        defer { withExtendedLifetime(disk) {} } // mounted until the end
        let fixture = try BackupFixture(jobs: 400, hostile: false, maxFileBytes: 1024, base: disk.path)
        try DatabaseQueue(path: fixture.volume.dbPath).write { db in
            try db.execute(sql: "CREATE TABLE attachments (data BLOB); INSERT INTO attachments VALUES (randomblob(4 * 1024 * 1024))")
        }
        let databaseBytes = try FileSystem.status(fixture.volume.dbPath).get().size + ((try? FileSystem.status(fixture.volume.dbPath + "-wal").get().size) ?? 0)
        let available = Int64(try FileSystem.freeSpace(fixture.volume.dbPath).get().available)
        func gigabytes(_ bytes: Int64) -> String { String(format: "%.6f", Double(bytes) / CofferConfiguration.bytesPerGB) }
        func dryRun(reserve: Int64) throws -> BackupReport {
            var runner = BackupRunner(configuration: try fixture.configuration([.minFreeSpaceGB: gigabytes(reserve), .alertFreeSpaceGB: gigabytes(reserve)]))
            runner.dryRun = true
            return try runner.run()
        }
        let folder = PathText.parent(fixture.volume.dbPath)
        // Not SQLite's own -wal and -shm (a reader of the database may leave them).
        func listing() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: folder).filter { !$0.hasSuffix("-wal") && !$0.hasSuffix("-shm") }.sorted()
        }
        let before = try listing()
        // Room for the copy, but not for the copy and the reserve.
        let error = #expect(throws: CofferError.self) { try dryRun(reserve: available - databaseBytes / 2) }
        #expect(error?.status == .failed)
        #expect(error?.message.contains("below MIN_FREE_SPACE_GB") == true, "\(error?.message ?? "")")
        #expect(try listing() == before)
        #expect(try dryRun(reserve: available - databaseBytes * 2).dryRun)
        #expect(try listing() == before)
    }

    /// Files that change between the walk and their reading, as the pipeline may: one removed,
    /// one swapped for a link, one for a FIFO, and a whole folder swapped for a link to a copy
    /// of it (its files are not read through the link). Each is recorded as a problem of its
    /// kind, every other file is backed up, the run ends with findings (exit 1), and it restores.
    @Test func filesGoneBetweenTheWalkAndTheReadingAreRecorded() throws {
        let fixture = try BackupFixture(jobs: 30, hostile: false)
        let root = fixture.volume.mediaRoot
        var library: [String] = []
        try DirectoryWalker(root: root + "/library").walk { entry in
            if entry.kind == .regular { library.append("library/" + PathText.display(entry.relativePath)) }
        }
        library.sort()
        #expect(library.count >= 5)
        let (removed, linked, fifo) = (library[0], library[1], library[2])
        // The last file's folder, holding none of the files above.
        let folder = PathText.parent(library.last!)
        try #require(folder != "library" && !library.prefix(4).contains { PathText.parent($0) == folder })
        let inFolder = library.filter { PathText.parent($0) == folder }
        library.removeAll { PathText.parent($0) == folder }
        let elsewhere = fixture.volume.directory.child("folder-copy")
        var runner = BackupRunner(configuration: try fixture.configuration())
        runner.afterCollecting = {
            #expect(unlink(root + "/" + removed) == 0)
            #expect(unlink(root + "/" + linked) == 0 && symlink("/etc/hostname", root + "/" + linked) == 0)
            #expect(unlink(root + "/" + fifo) == 0 && mkfifo(root + "/" + fifo, 0o644) == 0)
            #expect(rename(root + "/" + folder, elsewhere) == 0 && symlink(elsewhere, root + "/" + folder) == 0)
        }
        let report = try runner.run()
        #expect(report.status == .findings)
        func kind(of relative: String) -> String? {
            report.problems.first { $0.path == PathText.display(root + "/" + relative) }?.kind
        }
        #expect(kind(of: removed) == "missing", "\(report.problems)")
        #expect(kind(of: linked) == "unreadable", "\(report.problems)")
        #expect(kind(of: fifo) == "not_a_file", "\(report.problems)")
        for file in inFolder { #expect(kind(of: file) == "unreadable", "\(report.problems)") }
        var stored = Set<String>()
        let repository = try fixture.repository()
        try repository.reader(for: try repository.resolve("latest")).files { stored.insert(PathText.display($0.path)) }
        #expect(stored.isDisjoint(with: [removed, linked, fifo] + inFolder))
        #expect(Set(library.dropFirst(3)).isSubset(of: stored))
        #expect(try fixture.verifyRepository().findings.isEmpty)
        _ = try fixture.restore(into: "after")
        let restored = fixture.volume.directory.child("after/media/")
        #expect(FileManager.default.fileExists(atPath: restored + library[3]))
        for gone in [removed, linked, fifo] { #expect(FileSystem.status(restored + gone).isFailure) }
    }

    /// Paths are rewritten from the snapshot's MEDIA_ROOT to the new one only where they are
    /// under it (a sibling with the same prefix, `/srv/media2`, is not), as text and as bytes.
    /// A database of one job per row (`video_path` as given) whose paths restore rewrites from
    /// `old` to `new`: how many it changed, and each job's `video_path` after, in id order.
    func rewrite(_ rows: [(id: String, video: DatabaseValueConvertible?)], from old: String, to new: String) throws
        -> (changed: Int, after: [(id: String, video: DatabaseValue)]) {
        let directory = try TemporaryDirectory()
        let path = directory.path + "/db.sqlite"
        let queue = try DatabaseQueue(path: path)
        try queue.write { db in
            try db.execute(sql: SeedSchema.sql)
            for (id, video) in rows {
                try db.execute(sql: "INSERT INTO jobs (id, url, status) VALUES (?, 'u', 'COMPLETE')", arguments: [id])
                try db.execute(sql: "INSERT INTO media (job_id, video_path) VALUES (?, ?)", arguments: [id, video])
            }
        }
        try queue.close()
        let restorer = Restorer(configuration: try CofferConfiguration.resolve(flags: [.dbPath: path, .mediaRoot: new], environment: [:]))
        let changed = try restorer.rewritePaths(in: path, from: old, to: new)
        let after = try DatabaseQueue(path: path).read { db in
            try Row.fetchAll(db, sql: "SELECT job_id, video_path FROM media ORDER BY job_id").map { ($0["job_id"] as String, $0["video_path"] as DatabaseValue) }
        }
        return (changed, after)
    }

    @Test func onlyPathsUnderTheOldMediaRootAreRewritten() throws {
        let rows: [(id: String, video: DatabaseValueConvertible?)] = [
            ("a", "/srv/media/library/x.mkv"), ("b", "/srv/media2/library/y.mkv"), ("c", "/srv/media"),
            ("d", "/srv/mediaX"), ("e", "relative/srv/media/z"), ("f", Data("/srv/media/library/\u{FF}.mkv".utf8) + [0xFF]),
            ("g", Data("/srv/media2/w".utf8)), ("h", nil),
        ]
        let (changed, after) = try rewrite(rows, from: "/srv/media", to: "/new/root")
        #expect(changed == 3)
        let expected: [DatabaseValueConvertible?] = ["/new/root/library/x.mkv", "/srv/media2/library/y.mkv", "/new/root", "/srv/mediaX",
                                                     "relative/srv/media/z", Data("/new/root/library/\u{FF}.mkv".utf8) + [0xFF],
                                                     Data("/srv/media2/w".utf8), nil]
        #expect(after.map(\.id) == rows.map(\.id))
        for (row, value) in zip(after, expected) { #expect(row.video == (value?.databaseValue ?? .null), "\(row.id)") }
    }

    /// One restore at a time into a place: while another holds the folder of a target, a
    /// restore exits 3 before it checks, stages or sweeps anything there; once it is released,
    /// the same restore goes through.
    @Test func aSecondRestoreIntoTheSamePlaceExitsThree() throws {
        let fixture = try BackupFixture(jobs: 8, hostile: false)
        try fixture.backup()
        let place = fixture.volume.directory.child("busy")
        var held: Restorer.TargetLock? = try Restorer.TargetLock(folders: [place + "/data"])
        let error = #expect(throws: CofferError.self) { try fixture.restore(into: "busy") }
        #expect(error?.status == .locked, "\(String(describing: error))")
        #expect(error?.subject == place + "/data")
        #expect(try FileManager.default.contentsOfDirectory(atPath: place) == ["data"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: place + "/data").isEmpty)
        withExtendedLifetime(held) {}
        held = nil
        #expect(try fixture.restore(into: "busy").files > 0)
        // A refused restore leaves no folder it made for its targets.
        let refused = fixture.volume.directory.child("refused")
        try FileManager.default.createDirectory(atPath: refused + "/media", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: refused + "/media/in-the-way", contents: Data("x".utf8))
        #expect(throws: CofferError.self) { try fixture.restore(into: "refused") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: refused) == ["media"])
    }

    /// `_` and `%` in the old MEDIA_ROOT are plain characters to the rewrite (no LIKE pattern):
    /// `/srv/m_dia` does not take `/srv/mXdia` along.
    @Test func wildcardsInTheOldMediaRootAreJustCharacters() throws {
        let (changed, after) = try rewrite([("a", "/srv/m_d%a/library/x.mkv"), ("b", "/srv/mXdZZa/library/y.mkv"), ("c", "/srv/mXd%a/library/z.mkv")],
                                           from: "/srv/m_d%a", to: "/new")
        #expect(changed == 1)
        #expect(after.map(\.video) == ["/new/library/x.mkv", "/srv/mXdZZa/library/y.mkv", "/srv/mXd%a/library/z.mkv"].map(\.databaseValue))
    }

    /// The pipeline goes on between the database copy and the media walk: one job's media row
    /// and video deleted, a new job's row and video added. The snapshot is reconciled against
    /// the copy, not the live database: the deleted video is a recorded problem (the copy still
    /// refers to it), the new one an orphan (the copy has no row for it), and the restored
    /// volume says the same.
    @Test func theMediaAreReconciledAgainstTheCopy() throws {
        let fixture = try BackupFixture(jobs: 30, hostile: false)
        let root = fixture.volume.mediaRoot
        let live = try DatabaseQueue(path: fixture.volume.dbPath)
        let victims = try live.read { db in
            try Row.fetchAll(db, sql: "SELECT job_id, video_path FROM media WHERE video_path LIKE ? ORDER BY job_id", arguments: [root + "/library/%"])
                .map { ($0["job_id"] as String, $0["video_path"] as String) }
        }
        let victim = try #require(victims.first { FileManager.default.fileExists(atPath: $0.1) })
        let late = root + "/library/late/late.mkv"
        var runner = BackupRunner(configuration: try fixture.configuration())
        runner.afterCopying = {
            try live.write { db in
                try db.execute(sql: "DELETE FROM media WHERE job_id = ?", arguments: [victim.0])
                try db.execute(sql: "INSERT INTO jobs (id, url, status) VALUES ('late-job', 'https://late', 'COMPLETE')")
                try db.execute(sql: "INSERT INTO media (job_id, video_path, file_size_bytes) VALUES ('late-job', ?, 5)", arguments: [late])
            }
            #expect(unlink(victim.1) == 0)
            try FileManager.default.createDirectory(atPath: root + "/library/late", withIntermediateDirectories: false)
            FileManager.default.createFile(atPath: late, contents: Data("late!".utf8))
        }
        let report = try runner.run()
        #expect(report.status == .findings)
        #expect(report.problems.contains { $0.kind == "missing" && $0.path == PathText.display(victim.1) }, "\(report.problems)")
        let repository = try fixture.repository()
        let snapshot = try repository.resolve("latest")
        let details = try repository.reader(for: snapshot).details()
        #expect(details.findings.contains { $0.kind == .orphanFile && $0.path == PathText.display(late) }, "\(details.findings)")
        #expect(!details.findings.contains { $0.path == PathText.display(victim.1) && $0.kind == .orphanFile })
        // The counts are the copy's: the live database has one job more by now.
        #expect(snapshot.summary.database.rowCounts["jobs"] == 30)
        #expect(try live.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM jobs") } == 31)

        // Restored: the copy's rows, so the same two findings, at the new place.
        let restored = try fixture.restore(into: "after")
        let newRoot = fixture.volume.directory.child("after/media")
        let findings = restored.verify?.findings ?? []
        let newVictim = newRoot + victim.1.dropFirst(root.count)
        #expect(findings.contains { $0.kind == .missingFile && $0.path == PathText.display(newVictim) }, "\(findings)")
        #expect(findings.contains { $0.kind == .orphanFile && $0.path == PathText.display(newRoot + "/library/late/late.mkv") }, "\(findings)")
        let rows = try DatabaseQueue(path: fixture.volume.directory.child("after/data/db.sqlite")).read { db in
            (try Int.fetchOne(db, sql: "SELECT count(*) FROM media WHERE job_id = ?", arguments: [victim.0])!,
             try Int.fetchOne(db, sql: "SELECT count(*) FROM jobs WHERE id = 'late-job'")!)
        }
        #expect(rows == (1, 0))
    }

    /// A forced restore writes only inside its targets: a link in the media root that leads out
    /// of it, or a file where a folder must go, refuses the restore before anything is moved.
    @Test func aForcedRestoreFollowsNoLinkOutOfItsTarget() throws {
        let fixture = try BackupFixture(jobs: 10, hostile: false)
        try fixture.backup()
        let place = fixture.volume.directory.child("linked")
        let media = place + "/media", outside = fixture.volume.directory.child("outside")
        try FileManager.default.createDirectory(atPath: media, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: media + "/keep.txt", contents: Data("mine".utf8))
        #expect(symlink(outside, media + "/library") == 0)
        let error = #expect(throws: CofferError.self) { try fixture.restore(into: "linked", force: true) }
        #expect(error?.status == .failed)
        #expect(error?.message.contains(media + "/library") == true, "\(error?.message ?? "")")
        #expect(try FileManager.default.contentsOfDirectory(atPath: outside).isEmpty)
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: media)) == ["keep.txt", "library"])
        #expect(!FileManager.default.fileExists(atPath: place + "/data/db.sqlite"))
        // No staging left, nor the database's folder the restore made.
        #expect(try FileManager.default.contentsOfDirectory(atPath: place).sorted() == ["media"])

        // A plain file where the library folder must go: refused the same way, the file kept.
        unlink(media + "/library")
        FileManager.default.createFile(atPath: media + "/library", contents: Data("a file".utf8))
        let again = #expect(throws: CofferError.self) { try fixture.restore(into: "linked", force: true) }
        #expect(again?.status == .failed)
        #expect(try String(contentsOfFile: media + "/library", encoding: .utf8) == "a file")

        // Moved aside, the forced restore goes through, keeping what else was there.
        unlink(media + "/library")
        let forced = try fixture.restore(into: "linked", force: true)
        #expect(forced.status == .ok, "\(forced.verify?.findingList ?? "")")
        #expect(FileManager.default.fileExists(atPath: media + "/keep.txt"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: outside).isEmpty)
    }

    /// A forced restore over a database must not let that database's write-ahead log be
    /// replayed into the restored one.
    @Test func aForcedRestoreDropsTheOldWriteAheadLog() throws {
        let fixture = try BackupFixture(jobs: 12, hostile: false)
        try fixture.backup()
        _ = try fixture.restore(into: "twice")
        let db = fixture.volume.directory.child("twice/data/db.sqlite")
        let writer = try DatabaseQueue(path: db)
        try writer.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 0")
            try db.execute(sql: "INSERT INTO jobs (id, url, status) VALUES ('after-backup', 'u', 'QUEUED')")
        }
        // Simulate a crashed pipeline: copy the live WAL aside, close, and put it back.
        let wal = try Data(contentsOf: URL(fileURLWithPath: db + "-wal"))
        #expect(!wal.isEmpty)
        try writer.close()
        try wal.write(to: URL(fileURLWithPath: db + "-wal"))
        let refused = #expect(throws: CofferError.self) { try fixture.restore(into: "twice", only: .db) }
        #expect(refused?.status == .failed)
        let forced = try fixture.restore(into: "twice", only: .db, force: true)
        #expect(forced.verify?.findings.filter { $0.kind == .integrity }.isEmpty == true)
        let ids = try DatabaseQueue(path: db).read { try String.fetchAll($0, sql: "SELECT id FROM jobs WHERE id = 'after-backup'") }
        #expect(ids.isEmpty)
    }

    @Test func restoreOnlyTheDatabaseOrOnlyTheMedia() throws {
        let fixture = try BackupFixture(jobs: 12, hostile: false)
        try fixture.backup()
        _ = try fixture.restore(into: "dbonly", only: .db)
        #expect(FileManager.default.fileExists(atPath: fixture.volume.directory.child("dbonly/data/db.sqlite")))
        #expect(!FileManager.default.fileExists(atPath: fixture.volume.directory.child("dbonly/media")))
        let media = try fixture.restore(into: "mediaonly", only: .media)
        #expect(media.verify == nil)
        #expect(!FileManager.default.fileExists(atPath: fixture.volume.directory.child("mediaonly/data/db.sqlite")))
        #expect(FileManager.default.fileExists(atPath: fixture.volume.directory.child("mediaonly/media/library")))
    }

    @Test func aSecondRunIsRefusedWhileTheLockIsHeld() throws {
        let fixture = try BackupFixture(jobs: 5, hostile: false)
        try fixture.backup()
        let held = try fixture.repository().lock(exclusive: true, command: "backup")
        let error = #expect(throws: CofferError.self) { try fixture.backup() }
        #expect(error?.status == .locked)
        #expect(error?.cause.contains("pid \(getpid())") == true)
        withExtendedLifetime(held) {}
    }

    @Test func theFirstPackIsReadableWithoutCoffer() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/bsdtar") else {
            print("skipped: bsdtar is not installed (make test installs libarchive-tools)")
            return
        }
        let fixture = try BackupFixture(jobs: 30, videoSizes: VolumeSpec.testVideoSizes)
        try fixture.backup()
        let pack = try #require(try fixture.packs().first)
        var recorded = Set<PathBytes>()
        let repository = try fixture.repository()
        try repository.reader(for: try repository.resolve("latest")).files { recorded.insert($0.path) }
        for tool in [["/usr/bin/bsdtar", "-xf", pack], ["/bin/tar", "--warning=no-unknown-keyword", "-xf", pack]]
        where FileManager.default.isExecutableFile(atPath: tool[0]) {
            let out = fixture.volume.directory.child("by-hand-\((tool[0] as NSString).lastPathComponent)")
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
            #expect(try run(tool, in: out) == 0, "\(tool[0])")
            let extracted = try TreeSnapshot(out + "/media")
            #expect(Set(extracted.items.keys) == recorded, "\(tool[0])")
            let original = try TreeSnapshot(fixture.volume.mediaRoot) { !recorded.contains($0) }
            for (path, item) in extracted.items { #expect(original.items[path]?.content == item.content) }
            // The database copy: bsdcat (libarchive) decompresses it; sqlite3 finds it sound.
            #expect(try run(["/bin/sh", "-c", "bsdcat db.sqlite.zst > db.sqlite"], in: out) == 0)
            #expect(try tableRows(out + "/db.sqlite", "jobs") == tableRows(fixture.volume.dbPath, "jobs"))
        }
    }

    /// Media between half a megabyte and a few megabytes among small files, as a real library
    /// has them: the pack holds each file's header and bytes in order (a large piece of a file
    /// was once written before the small files and the header gathered ahead of it, and the
    /// pack was damaged from there on). Verified, restored, and read by bsdtar, byte for byte.
    @Test func filesOfEverySizeAmongSmallOnesLandInOrder() throws {
        let fixture = try BackupFixture(jobs: 10)
        let folder = fixture.volume.mediaRoot + "/library/sizes"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        let sizes: [(String, Int)] = [
            ("a0", 100), ("a1", 3000), ("b", 600 << 10), ("c0", 10), ("c1", 700), ("d", (3 << 20) + 1),
            ("e0", 1), ("e1", 200 << 10), ("f", (512 << 10) + 7), ("g", 1000 << 10), ("h", 5),
        ]
        for (index, (name, size)) in sizes.enumerated() {
            let data = Data((0..<size).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ index) })
            #expect(FileManager.default.createFile(atPath: folder + "/" + name, contents: data))
        }
        try fixture.backup()
        let damage = try fixture.verifyRepository(readData: true).findings
        #expect(damage.isEmpty, "\(damage.map { "\($0.kind) \($0.path)" })")

        _ = try fixture.restore(into: "restored")
        let original = try TreeSnapshot(folder)
        #expect(try TreeSnapshot(fixture.volume.directory.child("restored/media/library/sizes")) == original)
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/bsdtar") {
            let out = fixture.volume.directory.child("by-hand")
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
            #expect(try run(["/usr/bin/bsdtar", "-xf", try #require(try fixture.packs().first), "media/library/sizes"], in: out) == 0)
            #expect(try TreeSnapshot(out + "/media/library/sizes").items.mapValues(\.content) == original.items.mapValues(\.content))
        } else {
            print("skipped (the bsdtar part): bsdtar is not installed (make test installs libarchive-tools)")
        }
    }

    /// Restore reads each pack once beside the snapshot's files, both in path order; a pack
    /// whose entries come in another order (made by hand with bsdtar here) is restored the
    /// way that needs no order, byte for byte.
    @Test func aPackInAnotherOrderIsStillRestored() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/bsdtar") else {
            print("skipped: bsdtar is not installed (make test installs libarchive-tools)")
            return
        }
        let fixture = try BackupFixture(jobs: 20, hostile: false)
        try fixture.backup()
        let pack = try #require(try fixture.packs().first)
        let out = fixture.volume.directory.child("unpacked")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        #expect(try run(["/usr/bin/bsdtar", "-xf", pack], in: out) == 0)
        // The same entries, the files in reverse path order, the database last as before (at
        // the same offset: plain ASCII names, whole-second mtimes, ustar headers like Coffer's).
        let repository = try fixture.repository()
        var paths: [String] = []
        try repository.reader(for: try repository.resolve("latest")).files { paths.append("media/" + String(decoding: $0.path, as: UTF8.self)) }
        #expect(paths.count > 2)
        let list = out + "/list"
        try (paths.reversed() + ["db.sqlite.zst"]).joined(separator: "\n").write(toFile: list, atomically: false, encoding: .utf8)
        let rebuilt = fixture.volume.directory.child("rebuilt.tar")
        #expect(try run(["/usr/bin/bsdtar", "--format", "ustar", "-cf", rebuilt, "-n", "-T", list], in: out) == 0)
        unlink(pack)
        try FileManager.default.copyItem(atPath: rebuilt, toPath: pack)

        let restored = try fixture.restore(into: "restored")
        #expect(restored.status == .ok, "\(restored.verify?.findingList ?? "")")
        for path in paths {
            let relative = String(path.dropFirst("media/".count))
            #expect(FileManager.default.contents(atPath: fixture.volume.directory.child("restored/media/" + relative))
                    == FileManager.default.contents(atPath: fixture.volume.mediaRoot + "/" + relative), "\(relative)")
        }
    }
}
