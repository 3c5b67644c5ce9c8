import CArchive
import CofferFixtures
import Crypto
@testable import CofferKit
import Foundation
import GRDB
import Glibc
import Testing

@Suite struct DamagedRepositoryTests {
    /// A repository with two snapshots: the second reuses the first one's files, and stores a
    /// database copy of its own (the pipeline wrote between them).
    func twoSnapshots() throws -> (BackupFixture, Snapshot, Snapshot) {
        let fixture = try BackupFixture(jobs: 30, hostile: true, videoSizes: VolumeSpec.testVideoSizes)
        try fixture.backup()
        try fixture.addEvent()
        try fixture.backup()
        let all = try fixture.repository().snapshots().snapshots
        return (fixture, all[0], all[1])
    }

    @Test func aFlippedDataByteIsFoundAndNamedWithEverySnapshotThatNeedsIt() throws {
        let (fixture, first, second) = try twoSnapshots()
        #expect(try fixture.verifyRepository().findings.isEmpty)
        let file = try fixture.firstFile(in: first)
        try flipByte(fixture.repo + "/" + file.pack, at: file.offset + file.size / 2)

        // Without reading data the references still resolve: only --read-data sees bytes.
        #expect(try fixture.verifyRepository(readData: false).findings.isEmpty)
        let report = try fixture.verifyRepository()
        #expect(report.status == .findings)
        let damaged = try #require(report.findings.first { $0.kind == "file_damaged" })
        #expect(damaged.path == PathText.display(file.path))
        #expect(damaged.snapshots == [first.id, second.id].sorted())
        #expect(report.findings.contains { $0.kind == "pack_damaged" && $0.path == file.pack && $0.snapshots == [first.id, second.id].sorted() }, "\(report.findings)")
        // Read beside the records in path order, the pack shows the same damage as when its
        // entries are gathered in memory.
        let both = try fixture.readPacksBothWays()
        let merge = try both.merge.get()
        #expect(merge.damaged.map(\.key.offset) == [file.offset] && both.inMemoryDamage == [file.offset])
        #expect(merge.damagedPacks.map(\.name) == [file.pack])
        // Checking only the second snapshot reads the same pack and names the same damage.
        let selected = try fixture.verifyRepository(snapshot: second.id)
        #expect(selected.findings.contains { $0.kind == "file_damaged" && $0.path == PathText.display(file.path) })

        // Restoring a snapshot that needs the damaged file fails and leaves no target behind.
        let error = #expect(throws: CofferError.self) { try fixture.restore(into: "after-flip") }
        #expect(error?.status == .failed)
        #expect(!FileManager.default.fileExists(atPath: fixture.volume.directory.child("after-flip/media")))
        #expect(!FileManager.default.fileExists(atPath: fixture.volume.directory.child("after-flip/data/db.sqlite")))
        // Nor the folders it made for them.
        #expect(!FileManager.default.fileExists(atPath: fixture.volume.directory.child("after-flip")))
    }

    @Test func aFlippedHeaderByteIsFound() throws {
        let (fixture, first, _) = try twoSnapshots()
        // Whole packs (hostile names: pax headers, non-UTF-8 bytes): no header looks damaged.
        let repository = try fixture.repository()
        let all = try repository.snapshots().snapshots
        let packs = Set(try repository.storage.list("packs"))
        #expect(packs.count == 2)
        #expect(try RepositoryVerifier(repository: fixture.repo).damagedHeaders(in: packs, all: all, repository: repository).isEmpty)
        let file = try fixture.firstFile(in: first)
        try flipByte(fixture.repo + "/" + file.pack, at: file.offset - 512 + 10) // inside the entry's ustar header name
        let report = try fixture.verifyRepository()
        #expect(report.findings.contains { $0.kind == "pack_damaged" }, "\(report.findings)")
        // The file whose header it was, with every snapshot that needs it.
        #expect(report.findings.contains {
            $0.kind == "file_damaged" && $0.path == PathText.display(file.path) && $0.message.contains("tar header") && $0.snapshots.contains(first.id)
        }, "\(report.findings)")
        #expect(throws: CofferError.self) { try fixture.restore(into: "after-header-flip") }
    }

    /// A name that is not plain ASCII has a pax extended header in front of its ustar header:
    /// a byte changed there (in its own header, a record's length, the path, the charset, the
    /// zeros after the records) names the file too. Each byte is flipped back before the next.
    @Test func aFlippedPaxHeaderByteIsFound() throws {
        let (fixture, first, _) = try twoSnapshots()
        var target: Snapshot.File?
        try fixture.repository().reader(for: first).files { file in
            if target == nil, file.size > 0, file.path.contains(where: { $0 >= 0x80 }) { target = file }
        }
        let file = try #require(target)
        // The pax header, found by walking the pack's headers from its start.
        let pack = try [UInt8](Data(contentsOf: URL(fileURLWithPath: fixture.repo + "/" + file.pack)))
        var position = 0, pax: (header: Int, length: Int)?
        while position + 512 <= Int(file.offset) - 512 {
            let header = Array(pack[position..<position + 512])
            let length = Int(try #require(TarHeader.octal(header[124..<136])))
            if header[156] == UInt8(ascii: "x") { pax = (position, length) }
            position += 512 + Int(TarHeader.padded(Int64(length)))
        }
        #expect(position == Int(file.offset) - 512)
        let (header, length) = try #require(pax)
        #expect(header + 512 + Int(TarHeader.padded(Int64(length))) == Int(file.offset) - 512, "the pax header is the entry's")
        let records = Array(pack[(header + 512)..<(header + 512 + length)])
        let text = String(decoding: records, as: UTF8.self)
        #expect(text.contains("path=media/"), "\(text)")
        let charset = try #require(text.range(of: "hdrcharset=")).upperBound.utf16Offset(in: text)
        let places: [(String, Int, saying: String)] = [
            ("its own header's name", header + 10, "checksum does not add up"),
            ("a record's length", header + 512, "a record does not parse"),
            ("the last byte of the path", header + 512 + length - 2, "another path"),
            ("the charset", header + 512 + charset, "hdrcharset"),
            ("the zeros after the records", header + 512 + length, "bytes after its records"),
        ]
        #expect(try fixture.verifyRepository().findings.isEmpty)
        for (place, offset, saying) in places {
            try flipByte(fixture.repo + "/" + file.pack, at: Int64(offset))
            let report = try fixture.verifyRepository()
            #expect(report.findings.contains { $0.kind == "pack_damaged" }, "\(place): \(report.findings)")
            #expect(report.findings.contains {
                $0.kind == "file_damaged" && $0.path == PathText.display(file.path) && $0.message.contains(saying) && $0.snapshots.contains(first.id)
            }, "\(place): \(report.findings)")
            try flipByte(fixture.repo + "/" + file.pack, at: Int64(offset))
        }
        #expect(try fixture.verifyRepository().findings.isEmpty)
    }

    /// The database copies are decompressed in the repository's own tmp/ (on the backup disk),
    /// elsewhere in $TMPDIR. A place too small for one fails the run (exit 2) saying so before
    /// anything is written; one that runs out during the decompression fails it too. Neither
    /// is reported as damage to the copy, which is whole.
    @Test(.enabled(if: geteuid() == 0, "mounting a tmpfs needs root"))
    func aScratchPlaceWithoutRoomFailsVerifyWithoutCallingTheCopyDamaged() throws {
        let fixture = try BackupFixture(jobs: 1200, hostile: false, maxFileBytes: 1024)
        try fixture.backup()
        let repository = try fixture.repository()
        #expect(RepositoryVerifier.scratchParent(for: repository) == fixture.repo + "/tmp")
        let database = try repository.resolve("latest").summary.database
        #expect(database.size > 1 << 20, "a copy larger than the small disk: \(database.size)")
        var verifier = RepositoryVerifier(repository: fixture.repo)
        verifier.readData = true

        guard let small = try SmallDisk(megabytes: 1, in: fixture.volume.directory.child("small")) else { return }
        verifier.scratchParent = small.path
        let tooSmall = #expect(throws: CofferError.self) { try verifier.run() }
        #expect(tooSmall?.status == .failed)
        #expect(tooSmall?.message.contains("decompressing it needs") == true, "\(String(describing: tooSmall))")
        #expect(tooSmall?.hint?.contains("TMPDIR") == true)
        #expect(try FileManager.default.contentsOfDirectory(atPath: small.path).isEmpty)

        // Room enough, but files for only part of the work: the disk runs out during it.
        guard let few = try SmallDisk(megabytes: 64, in: fixture.volume.directory.child("few"), options: "nr_inodes=3") else { return }
        verifier.scratchParent = few.path
        let ranOut = #expect(throws: CofferError.self) { try verifier.run() }
        #expect(ranOut?.errno == ENOSPC, "\(String(describing: ranOut))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: few.path).isEmpty)
        // Files enough to decompress, not for SQLite's own beside the copy: it cannot open it.
        guard let four = try SmallDisk(megabytes: 64, in: fixture.volume.directory.child("four"), options: "nr_inodes=4") else { return }
        verifier.scratchParent = four.path
        let cannotOpen = #expect(throws: CofferError.self) { try verifier.run() }
        #expect(cannotOpen?.operation == "check the database copy", "\(String(describing: cannotOpen))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: four.path).isEmpty)
        withExtendedLifetime((small, few, four)) {}

        // Room enough once a killed verify's leftover copy is gone: it is swept first.
        guard let crowded = try SmallDisk(megabytes: 12, in: fixture.volume.directory.child("crowded")) else { return }
        let gone = try Process.run(URL(fileURLWithPath: "/bin/true"), arguments: [])
        gone.waitUntilExit()
        let leftover = crowded.path + "/\(RepositoryVerifier.scratchPrefix)\(gone.processIdentifier).AbCdEf"
        try FileManager.default.createDirectory(atPath: leftover, withIntermediateDirectories: false)
        try Data(count: (12 << 20) - (256 << 10)).write(to: URL(fileURLWithPath: leftover + "/db.sqlite")) // 256 KiB left
        verifier.scratchParent = crowded.path
        #expect(try verifier.run().findings.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: leftover))
        withExtendedLifetime(crowded) {}

        // With room, the copy is whole.
        verifier.scratchParent = nil
        #expect(try verifier.run().findings.isEmpty)
    }

    /// A verify killed while it checked a database copy leaves its scratch folder: the next
    /// verify removes it (not another live run's, not another host's, not another user's),
    /// and the next backup removes everything in the repository's tmp/.
    @Test func aKilledVerifysScratchIsSweptByTheNextRun() throws {
        let fixture = try BackupFixture(jobs: 10, hostile: false)
        try fixture.backup()
        let tmp = fixture.repo + "/tmp"
        let gone = try Process.run(URL(fileURLWithPath: "/bin/true"), arguments: [])
        gone.waitUntilExit()
        let left = tmp + "/\(RepositoryVerifier.scratchPrefix)\(gone.processIdentifier).AbCdEf"
        let live = tmp + "/\(RepositoryVerifier.scratchPrefix)\(getpid()).GhIjKl"
        let otherHost = tmp + "/coffer-verify-another-host-\(gone.processIdentifier).MnOpQr"
        let otherUser = tmp + "/\(RepositoryVerifier.scratchPrefix)\(gone.processIdentifier).StUvWx"
        for folder in [left, live, otherHost, otherUser] {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
            try Data(count: 4096).write(to: URL(fileURLWithPath: folder + "/db.sqlite"))
        }
        let foreign = geteuid() == 0 && chown(otherUser, 65534, 65534) == 0
        #expect(try fixture.verifyRepository().findings.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: left))
        #expect(FileManager.default.fileExists(atPath: live), "a live run's scratch stays")
        #expect(FileManager.default.fileExists(atPath: otherHost), "another host's pids are not this host's to judge")
        if foreign { #expect(FileManager.default.fileExists(atPath: otherUser), "another user's folder stays") }
        try? FileManager.default.removeItem(atPath: otherUser)
        try fixture.backup()
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp).isEmpty, "the backup sweeps tmp/ under its exclusive lock")
    }

    @Test func aDamagedDatabaseCopyIsFound() throws {
        let (fixture, _, second) = try twoSnapshots()
        let db = second.summary.database
        try flipByte(fixture.repo + "/" + db.pack, at: db.offset + db.storedSize / 2)
        let report = try fixture.verifyRepository(snapshot: second.id)
        #expect(report.findings.contains { $0.kind == "file_damaged" && $0.path == "db.sqlite.zst" && $0.snapshots == [second.id] })
        #expect(report.findings.contains { $0.kind == "database_damaged" })
        let error = #expect(throws: CofferError.self) { try fixture.restore(into: "bad-db", snapshot: second.id) }
        #expect(error?.status == .failed)
        #expect(!FileManager.default.fileExists(atPath: fixture.volume.directory.child("bad-db/data/db.sqlite")))
    }

    /// A database the pipeline did not write to between two backups is stored once: the second
    /// snapshot refers to the first one's copy, as to an unchanged file. Damage to that copy is
    /// then named with both snapshots, both refuse to restore, and a prune that forgets the
    /// first snapshot keeps the copy the second one needs.
    @Test func anUnchangedDatabaseIsStoredOnceAndNamedWithEverySnapshotThatNeedsIt() throws {
        let fixture = try BackupFixture(jobs: 30, hostile: true)
        let firstRun = try fixture.backup()
        #expect(!firstRun.databaseUnchanged)
        let secondRun = try fixture.backup()
        #expect(secondRun.databaseUnchanged)
        #expect(secondRun.text().contains("unchanged since the parent"))
        let all = try fixture.repository().snapshots().snapshots
        let (first, second) = (all[0], all[1])
        #expect(second.summary.database == first.summary.database)
        #expect(second.summary.database.pack == first.summary.pack.name)
        #expect(second.summary.pack.size < 4096, "the second pack holds no database copy") // the tar's end blocks only
        #expect(try fixture.verifyRepository().findings.isEmpty)
        // Restore checks the decompressed copy against the recorded SHA-256 before anything else.
        let restored = try fixture.restore(into: "shared", snapshot: second.id)
        #expect(restored.databaseBytes == first.summary.database.size)

        // A write in between: the next copy is stored again.
        try fixture.addEvent()
        let thirdRun = try fixture.backup()
        #expect(!thirdRun.databaseUnchanged)
        let third = try fixture.repository().snapshots().snapshots[2]
        #expect(third.summary.database.pack == third.summary.pack.name)
        #expect(third.summary.database.sha256 != first.summary.database.sha256)

        // Prune keeps the copy the second snapshot shares with the forgotten first one.
        let pruner = Pruner(repository: fixture.repo, policy: KeepPolicy(last: 2))
        let pruned = try pruner.run()
        #expect(pruned.forgotten == [first.id])
        #expect(try fixture.verifyRepository().findings.isEmpty)
        _ = try fixture.restore(into: "after-prune", snapshot: second.id)

        // Damage to the shared copy names every snapshot that needs it (the records rewritten
        // by the prune say where the copy is now).
        let kept = try fixture.repository().snapshots().snapshots
        let db = kept[0].summary.database
        try flipByte(fixture.repo + "/" + db.pack, at: db.offset + db.storedSize / 2)
        let report = try fixture.verifyRepository()
        #expect(report.findings.contains { $0.kind == "file_damaged" && $0.path == "db.sqlite.zst" && $0.snapshots == [second.id] }, "\(report.findings)")
        #expect(report.findings.contains { $0.kind == "database_damaged" && $0.snapshots == [second.id] }, "\(report.findings)")
        let error = #expect(throws: CofferError.self) { try fixture.restore(into: "bad-shared-db", snapshot: second.id) }
        #expect(error?.status == .failed)
    }

    /// Two snapshots sharing one damaged database copy: one finding names both.
    @Test func aDamagedSharedDatabaseCopyNamesBothSnapshots() throws {
        let fixture = try BackupFixture(jobs: 30, hostile: true)
        try fixture.backup()
        try fixture.backup()
        let all = try fixture.repository().snapshots().snapshots
        let db = all[1].summary.database
        #expect(db.pack == all[0].summary.pack.name)
        try flipByte(fixture.repo + "/" + db.pack, at: db.offset + db.storedSize / 2)
        let report = try fixture.verifyRepository()
        let both = all.map(\.id).sorted()
        #expect(report.findings.contains { $0.kind == "file_damaged" && $0.path == "db.sqlite.zst" && $0.snapshots == both }, "\(report.findings)")
        #expect(report.findings.filter { $0.kind == "database_damaged" }.map(\.snapshots) == [both], "\(report.findings)")
        // Checking one of them still names both: the other needs the same bytes.
        let one = try fixture.verifyRepository(snapshot: all[1].id)
        #expect(one.findings.filter { $0.kind == "database_damaged" }.map(\.snapshots) == [both], "\(one.findings)")
    }

    @Test func aTruncatedPackIsFound() throws {
        let (fixture, first, second) = try twoSnapshots()
        let pack = fixture.repo + "/" + first.summary.pack.name
        chmod(pack, 0o644)
        let size = try FileSystem.status(pack).get().size
        #expect(truncate(pack, off_t(size / 2)) == 0)
        let quick = try fixture.verifyRepository(readData: false)
        let pastEnd = quick.findings.filter { $0.kind == "file_damaged" }
        #expect(!pastEnd.isEmpty)
        // Media the second snapshot reuses name both snapshots; the database copy (the pack's
        // last entry) belongs to the first alone.
        #expect(pastEnd.filter { $0.path != "db.sqlite.zst" }.allSatisfy { Set($0.snapshots) == [first.id, second.id] }, "\(pastEnd)")
        #expect(pastEnd.first { $0.path == "db.sqlite.zst" }?.snapshots == [first.id])
        #expect(quick.findings.contains { $0.kind == "pack_damaged" && $0.message.hasPrefix("size") })
        #expect(throws: CofferError.self) { try fixture.restore(into: "after-truncate") }
    }

    /// `latest`, a backup's parent and a prefix pass over a record whose summary is damaged,
    /// as the listing leaves it out, though they read only the headers of the others.
    @Test func aDamagedNewestRecordIsPassedOverByLatestAndByTheNextBackup() throws {
        let (fixture, first, second) = try twoSnapshots()
        #expect(try fixture.repository().resolve("latest").id == second.id)
        let record = fixture.repo + "/snapshots/\(second.id).jsonl"
        chmod(record, 0o644)
        let text = try String(contentsOfFile: record, encoding: .utf8)
        try String(text.dropLast(40)).write(toFile: record, atomically: false, encoding: .utf8)
        let repository = try fixture.repository()
        #expect(try repository.snapshots().snapshots.map(\.id) == [first.id])
        #expect(try repository.resolve("latest").id == first.id)
        #expect(try repository.resolve(String(first.id.prefix(first.id.count - 2))).id == first.id)
        #expect(throws: CofferError.self) { try repository.resolve(second.id) }
        #expect(try fixture.backup().parent == first.id)
    }

    /// A record ends with its own digest: a byte changed anywhere in it is found by verify,
    /// even where the record still reads as valid JSON (a mode, a time, a row count); restore
    /// does not follow it, and the next backup does not build on it.
    @Test func aChangedByteInARecordIsFound() throws {
        let (fixture, first, second) = try twoSnapshots()
        #expect(try fixture.verifyRepository(readData: false).findings.isEmpty)
        let record = fixture.repo + "/snapshots/\(first.id).jsonl"
        chmod(record, 0o644)
        let original = try Data(contentsOf: URL(fileURLWithPath: record))
        func damageFound(_ what: String) throws {
            let findings = try fixture.verifyRepository(readData: false).findings
            #expect(findings.contains { $0.kind == "snapshot_damaged" && $0.path.contains(first.id) }, "\(what): \(findings)")
            try original.write(to: URL(fileURLWithPath: record))
        }
        /// The first `key` followed by digits, its last digit changed: still valid JSON.
        func changeNumber(after key: String, from start: Int = 0) throws {
            var bytes = [UInt8](original)
            let pattern = [UInt8](key.utf8)
            var index = try #require((start..<(bytes.count - pattern.count)).first { bytes[$0..<($0 + pattern.count)].elementsEqual(pattern) })
            index += pattern.count
            while bytes[index + 1] >= UInt8(ascii: "0") && bytes[index + 1] <= UInt8(ascii: "9") { index += 1 }
            bytes[index] = bytes[index] == UInt8(ascii: "9") ? UInt8(ascii: "8") : bytes[index] + 1
            try Data(bytes).write(to: URL(fileURLWithPath: record))
        }
        let summaryStart = try #require([UInt8](original).dropLast().lastIndex(of: 0x0A))
        try changeNumber(after: #""mode":"#)
        try damageFound("a file's mode")
        try changeNumber(after: #""time":"20"#)
        try damageFound("the header's time")
        try changeNumber(after: #""jobs":"#, from: summaryStart)
        try damageFound("a row count in the summary")
        var random = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            let offset = Int64.random(in: 0..<Int64(original.count), using: &random)
            try flipByte(record, at: offset)
            try damageFound("a flipped byte at \(offset)")
        }

        // The newest record changed: restore refuses it before writing anything, and the next
        // backup stores everything again, saying why.
        let newest = fixture.repo + "/snapshots/\(second.id).jsonl"
        chmod(newest, 0o644)
        let text = try String(contentsOfFile: newest, encoding: .utf8)
        let changed = try #require(text.range(of: #""mode":4"#))
        try text.replacingCharacters(in: changed, with: #""mode":5"#).write(toFile: newest, atomically: false, encoding: .utf8)
        let refused = #expect(throws: CofferError.self) { try fixture.restore(into: "restored", snapshot: second.id) }
        #expect(refused?.message.contains("SHA-256 of the record differs") == true, "\(refused?.message ?? "")")
        #expect(!FileManager.default.fileExists(atPath: fixture.volume.directory.child("restored")))
        let next = try fixture.backup()
        #expect(next.parent == nil)
        #expect(next.filesAdded == next.files)
        #expect(next.problems.contains { $0.kind == "parent_damaged" && $0.path.contains(second.id) }, "\(next.problems)")
        #expect(next.status == .findings)
        let after = try fixture.verifyRepository(readData: true).findings
        #expect(after.map(\.kind) == ["snapshot_damaged"], "\(after)")
    }

    /// A record in format 1 (before records carried a digest) has none to check: it is read,
    /// verified and restored as before. In format 2 the digest is required.
    @Test func aFormatOneRecordHasNoDigestToCheck() throws {
        let (fixture, first, _) = try twoSnapshots()
        let record = fixture.repo + "/snapshots/\(first.id).jsonl"
        chmod(record, 0o644)
        var text = try String(contentsOfFile: record, encoding: .utf8)
        let digest = try #require(text.range(of: #",\"record_sha256\":\"[0-9a-f]{64}\"\}\n$"#, options: .regularExpression))
        text.replaceSubrange(digest, with: "}\n")
        try text.write(toFile: record, atomically: false, encoding: .utf8)
        #expect(try fixture.verifyRepository(readData: false).findings.map(\.kind) == ["snapshot_damaged"], "format 2 without a digest")
        try text.replacingOccurrences(of: #""format":2"#, with: #""format":1"#).write(toFile: record, atomically: false, encoding: .utf8)
        #expect(try fixture.verifyRepository().findings.isEmpty)
        #expect(try fixture.restore(into: "old", snapshot: first.id).status == .ok)
    }

    @Test func aMissingPackAndADamagedRecordAreFound() throws {
        let (fixture, first, second) = try twoSnapshots()
        try FileManager.default.removeItem(atPath: fixture.repo + "/" + second.summary.pack.name)
        let record = fixture.repo + "/snapshots/\(first.id).jsonl"
        chmod(record, 0o644)
        let text = try String(contentsOfFile: record, encoding: .utf8)
        try String(text.dropLast(40)).write(toFile: record, atomically: false, encoding: .utf8)
        let report = try fixture.verifyRepository(readData: false)
        #expect(report.findings.contains { $0.kind == "pack_missing" && $0.snapshots == [second.id] })
        #expect(report.findings.contains { $0.kind == "snapshot_damaged" && $0.path.contains(first.id) })
    }
}

/// Packs that try to write outside the restore target, or to create what restore never
/// creates, are refused before anything reaches the target.
@Suite struct HostilePackTests {
    enum Evil: CaseIterable {
        case dotDot, absolute, symlink, hardlink, device, fifo, setuidOutside

        /// Writes the hostile entry with libarchive directly.
        func write(to archive: OpaquePointer) {
            let entry = archive_entry_new()!
            defer { archive_entry_free(entry) }
            archive_entry_set_perm(entry, 0o644)
            archive_entry_set_filetype(entry, UInt32(Glibc.S_IFREG))
            archive_entry_set_size(entry, 0)
            switch self {
            case .dotDot: archive_entry_copy_pathname(entry, "media/../../escaped.txt")
            case .absolute: archive_entry_copy_pathname(entry, "/tmp/coffer-escaped.txt")
            case .symlink:
                archive_entry_copy_pathname(entry, "media/library/link")
                archive_entry_set_filetype(entry, UInt32(Glibc.S_IFLNK))
                archive_entry_copy_symlink(entry, "/etc")
            case .hardlink:
                archive_entry_copy_pathname(entry, "media/library/hard")
                archive_entry_copy_hardlink(entry, "/etc/passwd")
            case .device:
                archive_entry_copy_pathname(entry, "media/library/dev")
                archive_entry_set_filetype(entry, UInt32(Glibc.S_IFCHR))
                archive_entry_set_rdev(entry, dev_t((1 << 8) | 3)) // 1,3: /dev/null
            case .fifo:
                archive_entry_copy_pathname(entry, "media/library/fifo")
                archive_entry_set_filetype(entry, UInt32(Glibc.S_IFIFO))
            case .setuidOutside:
                archive_entry_copy_pathname(entry, "escaped-setuid")
                archive_entry_set_perm(entry, 0o4755)
            }
            archive_write_header(archive, entry)
            archive_write_finish_entry(archive)
        }
    }

    /// Rewrites the snapshot's pack: the hostile entry first, then the real entries (in another
    /// archive format if `zip` or `cpio`), then `appended` entries.
    func plant(_ evil: Evil?, in fixture: BackupFixture, dropping dropped: String? = nil,
               format: String = "pax", appended: [(path: String, bytes: [UInt8])] = []) throws {
        let repository = try fixture.repository()
        let snapshot = try repository.resolve("latest")
        let packPath = fixture.repo + "/" + snapshot.summary.pack.name
        let original = try Data(contentsOf: URL(fileURLWithPath: packPath))
        chmod(packPath, 0o644)
        unlink(packPath)
        let archive = archive_write_new()!
        defer { archive_write_free(archive) }
        switch format {
        case "zip": archive_write_set_format_zip(archive)
        case "cpio": archive_write_set_format_cpio_newc(archive)
        default:
            archive_write_set_format_pax(archive)
            archive_write_set_format_option(archive, "pax", "hdrcharset", "BINARY")
        }
        #expect(archive_write_open_filename(archive, packPath) == ARCHIVE_OK)
        evil?.write(to: archive)
        // Copy the original entries after it.
        let reader = archive_read_new()!
        defer { archive_read_free(reader) }
        archive_read_support_format_tar(reader)
        try original.withUnsafeBytes { bytes in
            #expect(archive_read_open_memory(reader, bytes.baseAddress, bytes.count) == ARCHIVE_OK)
            var entry: OpaquePointer?
            var buffer = [UInt8](repeating: 0, count: 65536)
            while archive_read_next_header(reader, &entry) == ARCHIVE_OK {
                if let dropped, String(cString: archive_entry_pathname(entry)) == dropped { continue }
                archive_write_header(archive, entry)
                while true {
                    let n = archive_read_data(reader, &buffer, buffer.count)
                    if n <= 0 { break }
                    archive_write_data(archive, buffer, n)
                }
                archive_write_finish_entry(archive)
            }
        }
        for (path, bytes) in appended {
            let entry = archive_entry_new()!
            defer { archive_entry_free(entry) }
            archive_entry_copy_pathname(entry, path)
            archive_entry_set_filetype(entry, UInt32(Glibc.S_IFREG))
            archive_entry_set_perm(entry, 0o644)
            archive_entry_set_size(entry, la_int64_t(bytes.count))
            archive_write_header(archive, entry)
            archive_write_data(archive, bytes, bytes.count)
            archive_write_finish_entry(archive)
        }
        archive_write_close(archive)
    }

    /// Restore reads tar only: the same entries in a zip or a cpio archive (libarchive would
    /// read either, if allowed) refuse the restore.
    @Test(arguments: ["zip", "cpio"])
    func aPackInAnotherFormatIsRefused(format: String) throws {
        let fixture = try BackupFixture(jobs: 8, hostile: false)
        try fixture.backup()
        try plant(nil, in: fixture, format: format)
        _ = expectRefused(fixture)
    }

    /// A pack may hold entries a snapshot does not list (an older version of a file, kept for
    /// an earlier snapshot): they are read past, never written. A second entry for a listed
    /// path, with other bytes, after the first, is read past too: what lands is the recorded
    /// file, checked against its SHA-256.
    @Test func entriesTheRecordDoesNotListAreNotRestored() throws {
        let fixture = try BackupFixture(jobs: 8, hostile: false)
        try fixture.backup()
        let snapshot = try fixture.repository().resolve("latest")
        let listed = try fixture.firstFile(in: snapshot)
        let listedPath = String(decoding: listed.path, as: UTF8.self)
        try plant(nil, in: fixture, appended: [("media/library/extra.mkv", Array("not in the record".utf8)),
                                               ("media/" + listedPath, Array("other bytes".utf8))])
        // The media only: the rewritten pack moved the database copy away from its recorded offset.
        let report = try fixture.restore(into: "target", only: .media)
        #expect(report.files == snapshot.summary.files)
        let media = fixture.volume.directory.child("target/media")
        #expect(!FileManager.default.fileExists(atPath: media + "/library/extra.mkv"))
        let restored = try Data(contentsOf: URL(fileURLWithPath: media + "/" + listedPath))
        #expect(restored.count == Int(listed.size) && Digest.hex(SHA256.hash(data: restored)) == listed.sha256)
    }

    /// A restore into `target` that must be refused (exit 2) and leave nothing: no media, no
    /// database, no staging folder.
    func expectRefused(_ fixture: BackupFixture, sourceLocation: SourceLocation = #_sourceLocation) -> CofferError? {
        let error = #expect(throws: CofferError.self, sourceLocation: sourceLocation) { try fixture.restore(into: "target") }
        #expect(error?.status == .failed, sourceLocation: sourceLocation)
        let target = fixture.volume.directory.child("target")
        #expect(!FileManager.default.fileExists(atPath: target + "/media"), sourceLocation: sourceLocation)
        #expect(!FileManager.default.fileExists(atPath: target + "/data/db.sqlite"), sourceLocation: sourceLocation)
        let siblings = (try? FileManager.default.contentsOfDirectory(atPath: target)) ?? []
        #expect(siblings.allSatisfy { !$0.hasPrefix(".coffer-restore") }, "\(siblings)", sourceLocation: sourceLocation)
        return error
    }

    @Test(arguments: Evil.allCases)
    func aHostileEntryIsRefused(evil: Evil) throws {
        let fixture = try BackupFixture(jobs: 8, hostile: false)
        try fixture.backup()
        try plant(evil, in: fixture)
        let error = expectRefused(fixture)
        #expect(error?.cause.hasPrefix("refused ") == true, "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: fixture.volume.directory.child("escaped.txt")))
        #expect(!FileManager.default.fileExists(atPath: "/tmp/coffer-escaped.txt"))
    }

    /// Restore reads only what backup writes: a pack swapped for a gzip-compressed tar of the
    /// same entries (libarchive would read it happily, if allowed) refuses the restore, and
    /// verify names the pack.
    @Test func aCompressedPackIsRefused() throws {
        let fixture = try BackupFixture(jobs: 8, hostile: false)
        try fixture.backup()
        let snapshot = try fixture.repository().resolve("latest")
        let packPath = fixture.repo + "/" + snapshot.summary.pack.name
        chmod(packPath, 0o644)
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/sh")
        gzip.arguments = ["-c", "gzip -c \"$0\" > \"$0.gz\" && mv \"$0.gz\" \"$0\"", packPath]
        try gzip.run()
        gzip.waitUntilExit()
        #expect(gzip.terminationStatus == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: packPath)).prefix(2) == Data([0x1F, 0x8B]))
        _ = expectRefused(fixture)
        let verify = try fixture.verifyRepository()
        #expect(verify.findings.contains { $0.path.contains(snapshot.summary.pack.name) && $0.snapshots == [snapshot.id] }, "\(verify.findings)")
    }

    /// A pack of a few KB whose entry declares 1 GiB (a header written by hand, the data
    /// missing): refused on the declared size before anything is written for it.
    @Test func aDeclaredSizeBeyondTheRecordIsRefused() throws {
        let fixture = try BackupFixture(jobs: 8, hostile: false)
        try fixture.backup()
        let repository = try fixture.repository()
        let snapshot = try repository.resolve("latest")
        var first: Snapshot.File?
        try repository.reader(for: snapshot).files { if first == nil, $0.path.count < 90 { first = $0 } }
        let file = try #require(first)
        var header = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int) { for (i, byte) in text.utf8.enumerated() { header[offset + i] = byte } }
        header.replaceSubrange(0..<(6 + file.path.count), with: Array("media/".utf8) + file.path)
        put("0000644", at: 100); put("0000000", at: 108); put("0000000", at: 116)
        put("10000000000", at: 124) // 1 GiB, octal
        put("00000000000", at: 136)
        put("        ", at: 148)
        header[156] = UInt8(ascii: "0")
        put("ustar", at: 257); put("00", at: 263)
        let sum = header.reduce(0) { $0 + Int($1) }
        put(String(sum, radix: 8).leftPadded(to: 6) + "\0 ", at: 148)
        let packPath = fixture.repo + "/" + snapshot.summary.pack.name
        chmod(packPath, 0o644)
        try Data(header + [UInt8](repeating: 0x41, count: 4096)).write(to: URL(fileURLWithPath: packPath))

        let error = expectRefused(fixture)
        #expect(error?.cause.contains("size 1073741824 in the pack") == true, "\(String(describing: error))")
    }

    /// Restore's rewrite of the media paths changes those columns and nothing else: the
    /// snapshot's triggers do not fire. One that logs every update of `media` would add an
    /// event per path; one brought by a tampered snapshot, emptying an FTS index through its
    /// shadow table (SQLite 3.40's integrity_check does not look inside FTS5: it would still
    /// say "ok"), would spoil the restored database unseen.
    @Test func theSnapshotsTriggersDoNotFireDuringTheRewrite() throws {
        let fixture = try BackupFixture(jobs: 8, hostile: false)
        let live = try DatabaseQueue(path: fixture.volume.dbPath)
        try live.write { db in
            try db.execute(sql: """
                CREATE VIRTUAL TABLE notes USING fts5(body);
                INSERT INTO notes VALUES ('dubbed into Russian');
                CREATE TRIGGER spoil AFTER UPDATE ON media BEGIN DELETE FROM notes_data; END;
                CREATE TRIGGER log AFTER UPDATE ON media BEGIN
                    INSERT INTO job_events (job_id, event, payload) VALUES (NEW.job_id, 'media changed', NULL);
                END;
                """)
        }
        let events = try live.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM job_events") }
        try live.close()
        try fixture.backup()
        let report = try fixture.restore(into: "target")
        #expect(report.pathsRewritten > 0)
        let restored = try DatabaseQueue(path: fixture.volume.directory.child("target/data/db.sqlite"))
        try restored.read { db in
            #expect(try Int.fetchOne(db, sql: "SELECT count(*) FROM job_events") == events)
            #expect(try Int.fetchOne(db, sql: "SELECT count(*) FROM notes WHERE notes MATCH 'russian'") == 1)
            #expect(try String.fetchAll(db, sql: "PRAGMA integrity_check") == ["ok"])
            let root = fixture.volume.directory.child("target/media") + "/"
            let paths = try String.fetchAll(db, sql: "SELECT video_path FROM media WHERE typeof(video_path) = 'text'")
            #expect(!paths.isEmpty && paths.allSatisfy { $0.hasPrefix(root) }, "\(paths)")
        }
        try restored.close()
    }

    @Test func aPackWithoutARecordedFileRefusesTheRestore() throws {
        let fixture = try BackupFixture(jobs: 8, hostile: false)
        try fixture.backup()
        let repository = try fixture.repository()
        var paths: [PathBytes] = []
        try repository.reader(for: try repository.resolve("latest")).files { paths.append($0.path) }
        let victim = try #require(paths.dropFirst(paths.count / 2).first)
        try plant(nil, in: fixture, dropping: "media/" + String(decoding: victim, as: UTF8.self))
        let error = expectRefused(fixture)
        #expect(error?.cause.contains("1 file(s) of the snapshot are not in the pack") == true, "\(String(describing: error))")
        #expect(error?.cause.contains(PathText.display(victim)) == true)
    }

    /// A backed-up volume whose latest record was edited: `edit` gets its lines and the index
    /// of the first file line.
    func editedRecord(jobs: Int, _ edit: (inout [String], Int) -> Void) throws -> BackupFixture {
        let fixture = try BackupFixture(jobs: jobs, hostile: false)
        try fixture.backup()
        let snapshot = try fixture.repository().resolve("latest")
        let record = fixture.repo + "/snapshots/\(snapshot.id).jsonl"
        chmod(record, 0o644)
        var lines = try String(contentsOfFile: record, encoding: .utf8).split(separator: "\n").map(String.init)
        let first = try #require(lines.firstIndex { $0.contains(#""type":"file""#) })
        edit(&lines, first)
        try (lines.joined(separator: "\n") + "\n").write(toFile: record, atomically: false, encoding: .utf8)
        try resealRecord(record)
        return fixture
    }

    /// Records written in another order (two file lines swapped) cannot be merged with their
    /// packs: verify gathers each pack's entries in memory instead, and still finds a damaged byte.
    @Test func aRecordOutOfPathOrderIsStillVerified() throws {
        let fixture = try editedRecord(jobs: 12) { lines, first in lines.swapAt(first, first + 1) }
        #expect(throws: PackMerge.OutOfOrder.self) { try fixture.readPacksBothWays().merge.get() }
        let clean = try fixture.verifyRepository()
        #expect(clean.findings.isEmpty, "\(clean.findings)")
        #expect(clean.filesChecked > 5)
        let snapshot = try fixture.repository().resolve("latest")
        let file = try fixture.firstFile(in: snapshot, minimumSize: 100)
        try flipByte(fixture.repo + "/" + file.pack, at: file.offset + 50)
        let report = try fixture.verifyRepository()
        #expect(report.findings.contains { $0.kind == "file_damaged" && $0.path == PathText.display(file.path) && $0.snapshots == [snapshot.id] },
                "\(report.findings)")
        #expect(report.findings.contains { $0.kind == "pack_damaged" && $0.path == file.pack })
    }

    @Test(arguments: ["../../escaped.txt", "/etc/cron.d/escaped", "library/./x", "library//x", "library/../../x"])
    func aHostileRecordIsRefusedBeforeAnythingIsWritten(path: String) throws {
        let fixture = try editedRecord(jobs: 8) { lines, index in
            lines[index] = lines[index].replacingOccurrences(
                of: #""path":"[^"]*""#, with: "\"path\":\"\(path)\"", options: .regularExpression)
        }
        let error = #expect(throws: CofferError.self) { try fixture.restore(into: "target") }
        #expect(error?.status == .failed)
        #expect(error?.cause.hasPrefix("refused ") == true)
        #expect(!FileManager.default.fileExists(atPath: fixture.volume.directory.child("target")))
    }

    /// A file listed twice (next to itself, or far apart in a record out of order) is refused.
    @Test(arguments: [true, false])
    func aFileListedTwiceIsRefused(adjacent: Bool) throws {
        let fixture = try editedRecord(jobs: 12) { lines, first in
            lines.insert(lines[first], at: adjacent ? first + 1 : lines.count - 1)
        }
        let error = #expect(throws: CofferError.self) { try fixture.restore(into: "target") }
        #expect(error?.cause.contains("listed twice") == true, "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: fixture.volume.directory.child("target")))
    }

    /// The one-pass path check says what the plain rule (split on `/`, look at each part) says,
    /// for every path of up to seven bytes over `/`, `.`, `a` and NUL, and at the length limits.
    @Test func thePathCheckAgreesWithThePlainRule() {
        func plain(_ path: PathBytes) -> Bool {
            guard !path.isEmpty, path.count <= RestorePlan.maxPath, !path.contains(0), path.first != UInt8(ascii: "/") else { return false }
            return path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).allSatisfy {
                !$0.isEmpty && !$0.elementsEqual([0x2E]) && !$0.elementsEqual([0x2E, 0x2E]) && $0.count <= RestorePlan.maxComponent
            }
        }
        var paths: [PathBytes] = [[]]
        var checked = 0
        for _ in 0..<7 {
            paths = paths.flatMap { path in [UInt8(ascii: "/"), 0x2E, UInt8(ascii: "a"), 0].map { path + [$0] } }
            for path in paths {
                #expect((RestorePlan.problem(with: path) == nil) == plain(path), "\(path)")
                checked += 1
            }
        }
        #expect(checked > 20_000)
        func text(_ string: String) -> PathBytes { PathBytes(string.utf8) }
        func name(_ length: Int) -> String { String(repeating: "a", count: length) }
        // 4095 and 4096 bytes in components of 199.
        func long(_ length: Int) -> PathBytes { PathBytes((0..<length).map { $0 % 200 == 199 ? UInt8(ascii: "/") : UInt8(ascii: "a") }) }
        let edges: [PathBytes] = [text("a/" + name(255)), text("a/" + name(256) + "/a"), text(name(255)), long(4095), long(4096),
                                  text("a/..."), text("..a"), text("a/.b/c")]
        for path in edges {
            #expect((RestorePlan.problem(with: path) == nil) == plain(path), "\(path.count) bytes")
        }
    }

    /// A snapshot records permission bits only (a setuid media file is stored as 0755), and a
    /// record that holds more (setuid, setgid, sticky: written by hand) is refused by restore.
    @Test func modesAreMaskedToPermissionBits() throws {
        let fixture = try BackupFixture(jobs: 12, hostile: false)
        var chosen: String?
        try DirectoryWalker(root: fixture.volume.mediaRoot + "/library").walk { entry in
            if chosen == nil, entry.kind == .regular { chosen = "library/" + PathText.display(entry.relativePath) }
        }
        let relative = try #require(chosen)
        #expect(chmod(fixture.volume.mediaRoot + "/" + relative, 0o7755) == 0)
        try fixture.backup()
        let snap = try fixture.repository().resolve("latest")
        var recorded: UInt32?
        try fixture.repository().reader(for: snap).files { if PathText.display($0.path) == relative { recorded = $0.mode } }
        #expect(recorded == 0o755)
        _ = try fixture.restore(into: "masked")
        let restored = try #require(try? FileSystem.status(fixture.volume.directory.child("masked/media/") + relative).get())
        #expect(restored.mode & 0o7777 == 0o755)
    }

    @Test(arguments: [0o4755, 0o2755, 0o1755])
    func aRecordWithSpecialModeBitsIsRefused(mode: Int) throws {
        let fixture = try editedRecord(jobs: 8) { lines, index in
            lines[index] = lines[index].replacingOccurrences(of: #""mode":[0-9]+"#, with: "\"mode\":\(mode)", options: .regularExpression)
        }
        let error = #expect(throws: CofferError.self) { try fixture.restore(into: "target") }
        #expect(error?.status == .failed)
        #expect(error?.cause.contains("mode \(String(mode, radix: 8)) has setuid, setgid or sticky bits") == true, "\(String(describing: error))")
        #expect(!FileManager.default.fileExists(atPath: fixture.volume.directory.child("target")))
    }

    @Test func pathRulesRefuseOverlongNamesAndNULBytes() {
        #expect(RestorePlan.problem(with: PathBytes("library/ok name\nwith newline.mkv".utf8)) == nil)
        #expect(RestorePlan.problem(with: PathBytes(repeating: UInt8(ascii: "a"), count: 256)) != nil)
        #expect(RestorePlan.problem(with: [0x61, 0x00, 0x62]) != nil)
    }
}
