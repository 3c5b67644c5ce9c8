import CofferFixtures
import Crypto
@testable import CofferKit
import Foundation
import Testing

@Suite struct KeepPolicyTests {
    /// `2026-MM-DD HH:00` UTC.
    static func date(_ month: Int, _ day: Int, _ hour: Int = 12) -> Date {
        var c = DateComponents()
        c.year = 2026; c.month = month; c.day = day; c.hour = hour
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar.date(from: c)!
    }

    /// A fabricated timeline: two snapshots a day (03:00 and 15:00) from 1 January to 30 June
    /// 2026, with the 10–20 March gap of a broken cron.
    static let timeline: [Date] = {
        var dates: [Date] = []
        for month in 1...6 {
            for day in 1...28 + (month == 2 ? 0 : 2) where !(month == 3 && (10...20).contains(day)) {
                dates.append(date(month, day, 3))
                dates.append(date(month, day, 15))
            }
        }
        return dates.shuffled()
    }()

    func kept(_ policy: KeepPolicy) -> [Date] {
        policy.apply(Self.timeline).keys.map { Self.timeline[$0] }.sorted(by: >)
    }

    @Test func lastKeepsTheNewest() {
        #expect(kept(KeepPolicy(last: 3)) == [Self.date(6, 30, 15), Self.date(6, 30, 3), Self.date(6, 29, 15)])
    }

    @Test func dailyKeepsTheNewestOfEachDayWithSnapshots() {
        #expect(kept(KeepPolicy(daily: 3)) == [Self.date(6, 30, 15), Self.date(6, 29, 15), Self.date(6, 28, 15)])
    }

    @Test func daysWithoutSnapshotsDoNotCount() {
        // Only snapshots up to 21 March: the gap 10–20 March is skipped, not counted.
        let early = Self.timeline.filter { $0 < Self.date(3, 21, 23) }
        let kept = KeepPolicy(daily: 3).apply(early).keys.map { early[$0] }.sorted(by: >)
        #expect(kept == [Self.date(3, 21, 15), Self.date(3, 9, 15), Self.date(3, 8, 15)])
    }

    @Test func weeklyAndMonthlyUseISOWeeksAndMonths() {
        // 2026-06-28 is a Sunday (end of ISO week 26); 2026-06-21 ends week 25; 2026-06-14 week 24.
        #expect(kept(KeepPolicy(weekly: 3)) == [Self.date(6, 30, 15), Self.date(6, 28, 15), Self.date(6, 21, 15)])
        #expect(kept(KeepPolicy(monthly: 4)) == [Self.date(6, 30, 15), Self.date(5, 30, 15), Self.date(4, 30, 15), Self.date(3, 30, 15)])
    }

    @Test func rulesCombineAndAKeptSnapshotCountsForAll() {
        let policy = KeepPolicy(last: 2, daily: 2, weekly: 2, monthly: 2)
        let reasons = policy.apply(Self.timeline)
        let kept = reasons.keys.map { Self.timeline[$0] }.sorted(by: >)
        // last: 30th 15:00 and 03:00; daily: 30th, 29th; weekly: week 27 (30th), week 26 (28th);
        // monthly: June (30th), May (30th).
        #expect(kept == [Self.date(6, 30, 15), Self.date(6, 30, 3), Self.date(6, 29, 15), Self.date(6, 28, 15), Self.date(5, 30, 15)])
        let newest = Self.timeline.firstIndex(of: Self.date(6, 30, 15))!
        #expect(reasons[newest]?.count == 4)
        #expect(KeepPolicy().apply(Self.timeline).isEmpty)
        #expect(KeepPolicy(yearly: 5).apply(Self.timeline).count == 1)
    }
}

@Suite struct PruneTests {
    /// Four snapshots, each after changing some files, so each adds a pack. `apart`: each in
    /// a second of its own (ids, and so pack names, are to the second).
    func timeline(apart: Bool = false) throws -> BackupFixture {
        let fixture = try BackupFixture(jobs: 40, hostile: true)
        try fixture.backup()
        for round in 1...3 {
            if apart { Thread.sleep(forTimeInterval: 1.05) }
            try fixture.touchLibrary(every: 4, round: round)
            try fixture.addEvent("round \(round)")
            try fixture.backup()
        }
        return fixture
    }

    func prune(_ fixture: BackupFixture, _ policy: KeepPolicy, dryRun: Bool = false) throws -> PruneReport {
        var pruner = Pruner(repository: fixture.repo, policy: policy)
        pruner.dryRun = dryRun
        return try pruner.run()
    }

    /// Every pack, the later ones (only new content) and those prune rewrote too, is a plain
    /// tar that GNU tar extracts: each kept file is there, under `media/`, with its recorded
    /// SHA-256.
    @Test func everyPackIsAPlainTarEvenAfterAPrune() throws {
        let fixture = try timeline()
        let report = try prune(fixture, KeepPolicy(last: 2))
        #expect(!report.packsRepacked.isEmpty, "\(report.text())")
        let repository = try fixture.repository()
        var files: [String: [Snapshot.File]] = [:]
        for snap in try repository.snapshots().snapshots {
            try repository.reader(for: snap).files { files[$0.pack, default: []].append($0) }
        }
        #expect(files.count >= 2)
        var checked = 0
        for (index, pack) in try fixture.packs().enumerated() {
            let out = fixture.volume.directory.child("tar-\(index)")
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
            #expect(try run(["/bin/tar", "--warning=no-unknown-keyword", "-xf", pack], in: out) == 0, "\(pack)")
            #expect(FileManager.default.fileExists(atPath: out + "/db.sqlite.zst") || files[String(pack.dropFirst(fixture.repo.count + 1))] != nil)
            for file in files[String(pack.dropFirst(fixture.repo.count + 1))] ?? [] {
                #expect(Self.sha256(PathBytes((out + "/media/").utf8) + file.path) == file.sha256, "\(PathText.display(file.path))")
                checked += 1
            }
        }
        #expect(checked == files.values.map(\.count).reduce(0, +) && checked > 20)
    }

    /// The SHA-256 of the file at `path` (bytes: some names are not UTF-8), nil when it cannot
    /// be opened.
    static func sha256(_ path: PathBytes) -> String? {
        let fd = path.withCPath { open($0, O_RDONLY) }
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while case let n = read(fd, &buffer, buffer.count), n > 0 { hasher.update(data: buffer[0..<n]) }
        return Digest.hex(hasher.finalize())
    }

    /// FORMAT.md's restore by hand of a snapshot spread over several packs: its packs
    /// extracted with tar in name order, oldest first, give every file it lists with the
    /// bytes it recorded, and its database copy, also when prune rewrote some of them. (The
    /// first pack, rewritten, keeps the old versions of files the other kept snapshot needs;
    /// named by the prune's time, it sorted after the packs with the newer versions, and tar
    /// laid the old ones over them.)
    @Test func aPrunedSnapshotIsRestoredByHandFromItsPacksInNameOrder() throws {
        let fixture = try timeline(apart: true)
        let report = try prune(fixture, KeepPolicy(last: 2))
        #expect(report.packsRepacked.count >= 1, "\(report.text())")
        let repository = try fixture.repository()
        let newest = try repository.resolve("latest")
        var files: [Snapshot.File] = []
        try repository.reader(for: newest).files { files.append($0) }
        let packs = Set(files.map(\.pack) + [newest.summary.database.pack]).sorted()
        let rewritten = Set(try repository.snapshots().snapshots.flatMap { $0.summary.repacked ?? [] }.map(\.name))
        #expect(packs.contains { rewritten.contains($0) }, "the snapshot needs no rewritten pack: \(packs)")

        let out = fixture.volume.directory.child("by-hand")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        for pack in packs {
            #expect(try run(["/bin/tar", "--warning=no-unknown-keyword", "-xf", fixture.repo + "/" + pack], in: out) == 0, "\(pack)")
        }
        for file in files {
            #expect(Self.sha256(PathBytes((out + "/media/").utf8) + file.path) == file.sha256, "\(PathText.display(file.path))")
        }
        #expect(files.count > 20)
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/bsdcat") else {
            print("skipped the database copy: bsdcat is not installed (make test installs libarchive-tools)")
            return
        }
        #expect(try run(["/bin/sh", "-c", "bsdcat db.sqlite.zst > db.sqlite"], in: out) == 0)
        #expect(Self.sha256(PathBytes((out + "/db.sqlite").utf8)) == newest.summary.database.sha256)
    }

    @Test func prunedRepositoriesKeepEveryByteTheKeptSnapshotsNeed() throws {
        let fixture = try timeline()
        let all = try fixture.repository().snapshots().snapshots
        #expect(all.count == 4)
        #expect(try fixture.packs().count == 4)
        // What the two newest snapshots restore to, before the prune.
        for snap in all.suffix(2) { _ = try fixture.restore(into: "before-\(snap.id)", snapshot: snap.id) }
        let packsBefore = try fixture.packs()

        let dry = try prune(fixture, KeepPolicy(last: 2), dryRun: true)
        #expect(dry.forgotten == all.prefix(2).map(\.id))
        #expect(try fixture.packs() == packsBefore)
        #expect(try fixture.repository().snapshots().snapshots.count == 4)

        let report = try prune(fixture, KeepPolicy(last: 2))
        #expect(report.status == .ok, "\(report.text())")
        #expect(report.kept.map(\.id) == all.suffix(2).map(\.id))
        #expect(report.forgotten == all.prefix(2).map(\.id))
        // The first (full) pack still holds files the kept snapshots reuse, but also files only
        // the forgotten ones had: it was rewritten; the second pack only served forgotten ones.
        #expect(report.packsRepacked.contains(all[0].summary.pack.name), "\(report.text())")
        #expect(report.packsDeleted.contains(all[1].summary.pack.name), "\(report.text())")
        #expect(report.recordsRewritten >= 1)
        #expect(report.bytesFreed > 0)
        #expect(try fixture.repository().snapshots().snapshots.map(\.id) == all.suffix(2).map(\.id))

        // Every byte checks out, and the kept snapshots restore to exactly what they did before.
        let verify = try fixture.verifyRepository()
        #expect(verify.findings.isEmpty, "\(verify.findings)")
        // Repacked packs keep their entries in path order: verify still reads them beside the
        // records in one merge, and reads and checks what the in-memory way does.
        let both = try fixture.readPacksBothWays()
        let merge = try both.merge.get()
        #expect(merge.damaged.isEmpty && merge.damagedPacks.isEmpty)
        #expect(merge.entriesChecked == both.inMemory.filesChecked && merge.bytesRead == both.inMemory.bytesRead)
        #expect(merge.entriesChecked > 20)
        for snap in all.suffix(2) {
            _ = try fixture.restore(into: "after-\(snap.id)", snapshot: snap.id)
            #expect(try TreeSnapshot(fixture.volume.directory.child("after-\(snap.id)/media"))
                    == TreeSnapshot(fixture.volume.directory.child("before-\(snap.id)/media")))
        }
        // Nothing left to do the second time; the next backup still reuses kept content.
        let again = try prune(fixture, KeepPolicy(last: 2))
        #expect(again.forgotten.isEmpty && again.packsDeleted.isEmpty && again.packsRepacked.isEmpty, "\(again.text())")
        #expect(try fixture.backup().bytesRead == 0)
    }

    @Test func noRuleIsAUsageErrorAndDamageStopsThePrune() throws {
        let fixture = try timeline()
        let error = #expect(throws: CofferError.self) { try prune(fixture, KeepPolicy()) }
        #expect(error?.status == .usage)
        // A damaged record: nothing is deleted (its packs might be all that is left of it).
        // One that still reads (a mode changed) is damaged too: prune would otherwise rewrite
        // it with a digest that vouches for the change.
        let all = try fixture.repository().snapshots().snapshots
        let record = fixture.repo + "/snapshots/\(all[1].id).jsonl"
        chmod(record, 0o644)
        let original = try Data(contentsOf: URL(fileURLWithPath: record))
        let text = String(decoding: original, as: UTF8.self)
        let mode = try #require(text.range(of: #""mode":4"#))
        try text.replacingCharacters(in: mode, with: #""mode":5"#).write(toFile: record, atomically: false, encoding: .utf8)
        let records = try FileManager.default.contentsOfDirectory(atPath: fixture.repo + "/snapshots").sorted()
        let packs = try fixture.packs()
        let changed = #expect(throws: CofferError.self) { try prune(fixture, KeepPolicy(last: 1)) }
        #expect(changed?.status == .failed)
        #expect(changed?.message.contains(all[1].id) == true, "\(changed?.message ?? "")")
        #expect(try fixture.packs() == packs)
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.repo + "/snapshots").sorted() == records)
        #expect(truncate(record, 100) == 0)
        let damaged = #expect(throws: CofferError.self) { try prune(fixture, KeepPolicy(last: 1)) }
        #expect(damaged?.status == .failed)
        #expect(try fixture.packs() == packs)
    }
}
