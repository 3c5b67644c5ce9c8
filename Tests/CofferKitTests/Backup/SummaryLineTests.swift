import CofferFixtures
@testable import CofferKit
import Foundation
import Testing

/// The summary line's problems and findings: written element by element, counted (not decoded)
/// when records are listed, decoded on demand, and carried over when prune rewrites a record.
@Suite struct SummaryLineTests {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    /// Strings a list's scan must step over: brackets, commas, quotes, escapes, a key's text.
    static let hostile = ["plain", "\"problems\":[]", "a],[b", "back\\slash\\", "x\",\"findings\":[1,2]", "line\nbreak",
                          "{\"nested\":[[]]}", "é ü 日本", "\\\"", ""]

    static func summary(problems: Int, findings: Int) -> Snapshot.Summary {
        let database = Snapshot.Database(entry: "db.sqlite.zst", pack: "packs/p.tar", offset: 512, storedSize: 10, storedSha256: "ab",
                                         size: 4096, sha256: "cd", pageSize: 4096, pageCount: 1, schemaVersion: 1,
                                         rowCounts: ["problems": 3, "findings": 4], integrityCheck: "ok")
        return Snapshot.Summary(
            files: 3, bytes: 40, bytesAdded: 40, bytesRead: 40, pack: .init(name: "packs/p.tar", size: 1024, sha256: "ef"),
            database: database,
            problems: (0..<problems).map { n in
                Snapshot.Problem(kind: "missing", path: hostile[n % hostile.count], jobID: n % 2 == 0 ? nil : "job-\(n)",
                                 message: hostile[(n + 3) % hostile.count])
            },
            findings: (0..<findings).map { n in
                Finding(.missingFile, jobID: "job-\(n)", path: n % 3 == 0 ? nil : hostile[n % hostile.count],
                        expected: hostile[(n + 1) % hostile.count], message: "[\(n)]")
            },
            seconds: ["total": 1.5], repacked: [.init(name: "packs/q.tar", size: 1, sha256: "00")])
    }

    /// The record's last line, as `SnapshotWriter` writes it (`rawLists` as given).
    static func written(_ summary: Snapshot.Summary, rawLists: [String: [UInt8]] = [:]) throws -> [UInt8] {
        try writtenAndRead(summary, rawLists: rawLists).line
    }

    /// The line, and the problems and findings read back from the record one at a time.
    static func writtenAndRead(_ summary: Snapshot.Summary, rawLists: [String: [UInt8]] = [:]) throws
        -> (line: [UInt8], problems: [Snapshot.Problem], findings: [Finding]) {
        let directory = try TemporaryDirectory()
        let repository = try Repository.open(directory.path + "/repo", create: true)
        let pending = try repository.storage.create("snapshots/x.jsonl")
        let header = Snapshot.Header(id: "x", time: "2026-11-26T00:00:00Z", host: "h", cofferVersion: "0", parent: nil, tags: [],
                                     full: true, dbPath: "/d", mediaRoot: "/m")
        let writer = try SnapshotWriter(pending: pending, header: header)
        try writer.summary(summary, rawLists: rawLists)
        try writer.flush()
        try repository.storage.commit(pending)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: repository.location + "/snapshots/x.jsonl")))
        let lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false)
        #expect(lines.count == 3 && lines[2].isEmpty)
        let reader = SnapshotReader(name: "snapshots/x.jsonl", storage: repository.storage)
        try reader.checkDigest()
        let details = try reader.details()
        // The line ends with the record's digest, its last member: the rest is the summary.
        let digestLength = SnapshotReader.digestKey.utf8.count + 64 + SnapshotReader.digestEnd.utf8.count
        let line = [UInt8](lines[1])
        #expect(line.dropLast(digestLength - SnapshotReader.digestKey.utf8.count).suffix(SnapshotReader.digestKey.utf8.count).elementsEqual(SnapshotReader.digestKey.utf8))
        return (Array(line.dropLast(digestLength)) + [UInt8(ascii: "}")], details.problems, details.findings)
    }

    @Test(arguments: [(0, 0), (1, 0), (0, 1), (7, 5), (25_000, 12_000)])
    func theSummaryIsTheLineJSONEncoderWouldWrite(problems: Int, findings: Int) throws {
        let summary = Self.summary(problems: problems, findings: findings)
        let expected = [UInt8](try Self.encoder.encode(summary))
        let (line, problemsRead, findingsRead) = try Self.writtenAndRead(summary)
        #expect(line == expected)
        // Read back one element at a time: the same lists.
        #expect(problemsRead == summary.problems && findingsRead == summary.findings)
        // Counted, not decoded; what is left decodes to the rest of the summary.
        let lists = try #require(SummaryLine.lists(in: line))
        #expect(lists["problems"]?.count == problems && lists["findings"]?.count == findings)
        let counted = try SnapshotReader.decodeCounting(Data(line), with: JSONDecoder())
        #expect(counted.problems.isEmpty && counted.findings.isEmpty)
        #expect(counted.problemCount == problems && counted.findingCount == findings)
        #expect(counted.database == summary.database && counted.repacked == summary.repacked && counted.files == 3)
        // The lists as raw bytes (a record rewritten by prune) give the same line again.
        var shell = summary
        shell.problems = []
        shell.findings = []
        let raw = lists.mapValues { Array(line[$0.contents]) }
        #expect(try Self.written(shell, rawLists: raw) == expected)
    }

    /// `backup --json` writes its problems one at a time: the same document, byte for byte, as
    /// the report encoded whole.
    @Test(arguments: [0, 1, 2, 3_000])
    func theJSONReportIsWrittenAsOneDocumentWouldBe(problems: Int) throws {
        var report = BackupReport(repository: "/repo/\"quoted\"", dryRun: false)
        report.problems = Self.summary(problems: problems, findings: 0).problems
        report.databaseRows = ["jobs": 3, "problems": 1]
        report.findings = 2
        var shell = report
        shell.problems = []
        var written: [UInt8] = []
        var pieces = 0
        try Formatting.writeJSON(shell, list: "problems", elements: report.problems) { written += $0; pieces += 1 }
        #expect(String(decoding: written, as: UTF8.self) == (try Formatting.json(report)))
        if problems == 3_000 { #expect(pieces > 3) }
    }

    @Test func theScanFollowsStringsAndNestingWhateverTheLayout() throws {
        func counts(_ text: String) -> [String: Int]? {
            SummaryLine.lists(in: Array(text.utf8))?.mapValues(\.count)
        }
        #expect(counts(#"{"findings":[],"problems":[]}"#) == ["findings": 0, "problems": 0])
        #expect(counts(#"{"a":{"problems":[1,2,3]},"findings":[{"x":[1,2]},"y,]",[[],[]]],"problems":[" ]",null],"z":"\"problems\":[1]"}"#)
                == ["findings": 3, "problems": 2])
        #expect(counts("{\n  \"findings\" : [ ],\n  \"problems\" : [\n    1 ,\n    2\n  ]\n}\n") == ["findings": 0, "problems": 2])
        // Pretty-printed by JSONEncoder, and counted the same.
        let pretty = JSONEncoder()
        pretty.outputFormatting = [.prettyPrinted, .sortedKeys]
        let summary = Self.summary(problems: 4, findings: 9)
        let prettyLine = [UInt8](try pretty.encode(summary))
        let prettyLists = try #require(SummaryLine.lists(in: prettyLine))
        #expect(prettyLists.mapValues(\.count) == ["findings": 9, "problems": 4])
        var problems: [Snapshot.Problem] = []
        try prettyLine.withUnsafeBytes { raw in
            try SummaryLine.forEachElement(of: prettyLists["problems"]!, in: raw) {
                problems.append(try JSONDecoder().decode(Snapshot.Problem.self, from: Data($0)))
            }
        }
        #expect(problems == summary.problems)
        // What the scan cannot follow is left to JSONDecoder.
        #expect(counts(#"{"findings":[]}"#) == nil)
        #expect(counts(#"{"findings":[],"problems":[]} x"#) == nil)
        #expect(counts(#"{"findings":[],"problems":["unterminated]}"#) == nil)
        #expect(counts(#"{"findings":[],"problems":{}}"#) == nil)
        #expect(counts(#"[{"findings":[],"problems":[]}]"#) == nil)
        #expect(counts(#"{"findings":[],"problems":[],"problems":[1,2]}"#) == nil)
        #expect(counts(#"{"findings":[],"problems":[1,2],"problems":null}"#) == nil)
        #expect(counts(#"{"findings":[],"problems":[1],"x":{"problems":[]}}"#) == ["findings": 0, "problems": 1]) // not top-level
    }

    @Test func recordsAreListedWithCountsAndVerifyDecodesTheirLists() throws {
        let fixture = try BackupFixture(jobs: 40, hostile: false)
        _ = try ProblemPlanter.plantAll(in: fixture.volume.generated)
        let report = try fixture.backup()
        #expect(report.problems.count >= 2)
        let repository = try fixture.repository()
        let snap = try #require(try repository.snapshots().snapshots.first)
        #expect(snap.summary.problems.isEmpty && snap.summary.findings.isEmpty) // not held
        #expect(snap.summary.problemCount == report.problems.count)
        let details = try repository.reader(for: snap).details()
        #expect(details.problems == report.problems)
        #expect(snap.summary.findingCount == details.findings.count && report.findings == details.findings.count)
        #expect(try SnapshotListing.read(fixture.configuration()).snapshots.first?.problems == report.problems.count)
        #expect(try fixture.verifyRepository(readData: false).findings.isEmpty)

        // A problem damaged so that only decoding sees it: the record is still listed (its
        // lists are counted), and verify names it.
        let path = fixture.repo + "/snapshots/\(snap.id).jsonl"
        chmod(path, 0o644)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let damagedText = text.replacingOccurrences(of: #"{"job_id""#, with: #"{"kind":42,"job_id""#)
        #expect(damagedText != text)
        try damagedText.write(toFile: path, atomically: false, encoding: .utf8)
        try resealRecord(path) // found by decoding, not by the record's digest
        #expect(try fixture.repository().snapshots().snapshots.map(\.id) == [snap.id])
        #expect(throws: CofferError.self) { try fixture.repository().reader(for: snap).details() }
        let verify = try fixture.verifyRepository(readData: false)
        #expect(verify.findings.contains { $0.kind == "snapshot_damaged" && $0.path.contains(snap.id) }, "\(verify.findings)")
        // A drill of it restores, and names the record, not the restore, as what failed.
        let drill = try Drill(configuration: fixture.configuration()).run()
        #expect(drill.restore != nil)
        #expect(drill.findings.contains { $0.kind == "snapshot_damaged" && $0.path.contains(snap.id) }, "\(drill.findings)")
        #expect(!drill.findings.contains { $0.kind == "restore_failed" }, "\(drill.findings)")
        #expect(drill.status == .findings)
    }

    /// A record lists at most so many problems and findings, and says how many there were:
    /// listings show the totals; the report of the run has them all.
    @Test func aRecordListsAtMostTheLimitAndKeepsTheTotals() throws {
        let fixture = try BackupFixture(jobs: 40, hostile: false)
        _ = try ProblemPlanter.plantAll(in: fixture.volume.generated)
        var runner = BackupRunner(configuration: try fixture.configuration())
        runner.recordedListLimit = 1
        let report = try runner.run()
        #expect(report.problems.count >= 2 && report.findings >= 2)
        let repository = try fixture.repository()
        let snap = try #require(try repository.snapshots().snapshots.first)
        #expect(snap.summary.problemCount == report.problems.count && snap.summary.findingCount == report.findings)
        let details = try repository.reader(for: snap).details()
        #expect(details.problems == [report.problems[0]] && details.findings.count == 1)
        #expect(try SnapshotListing.read(fixture.configuration()).snapshots.first?.problems == report.problems.count)
        #expect(try fixture.verifyRepository(readData: false).findings.isEmpty)
        // Under the limit, the record has no totals: the lists are whole.
        let line = String(decoding: try Self.lastLine(fixture.repo + "/snapshots/\(snap.id).jsonl"), as: UTF8.self)
        #expect(line.contains("\"problems_total\":\(report.problems.count)"))
        runner.recordedListLimit = Snapshot.Summary.listLimit
        _ = try runner.run()
        let newest = try #require(try fixture.repository().snapshots().snapshots.last)
        #expect(!String(decoding: try Self.lastLine(fixture.repo + "/snapshots/\(newest.id).jsonl"), as: UTF8.self).contains("_total"))
    }

    /// Three backups of a volume with every kind of problem planted, some files changed
    /// before each later one (so that a prune of the first two rewrites the newest record).
    static func threeNightsWithProblems(hostile: Bool) throws -> BackupFixture {
        let fixture = try BackupFixture(jobs: 40, hostile: hostile)
        _ = try ProblemPlanter.plantAll(in: fixture.volume.generated)
        for round in 0...2 {
            if round > 0 { try fixture.touchLibrary(every: 3, round: round) }
            try fixture.backup()
        }
        return fixture
    }

    @Test func aRecordRewrittenByPruneKeepsItsProblemsAndFindings() throws {
        let fixture = try Self.threeNightsWithProblems(hostile: true)
        let repository = try fixture.repository()
        let newest = try #require(try repository.snapshots().snapshots.last)
        let before = try repository.reader(for: newest).details()
        #expect(!before.problems.isEmpty && !before.findings.isEmpty)
        let lineBefore = try Self.lastLine(fixture.repo + "/snapshots/\(newest.id).jsonl")

        let pruned = try Pruner(repository: fixture.repo, policy: KeepPolicy(last: 1)).run()
        #expect(pruned.recordsRewritten == 1, "\(pruned.text())")
        let after = try fixture.repository().reader(for: newest).details()
        #expect(after.problems == before.problems && after.findings == before.findings)
        let lineAfter = try Self.lastLine(fixture.repo + "/snapshots/\(newest.id).jsonl")
        #expect(lineAfter != lineBefore) // its references moved
        #expect(try fixture.verifyRepository().findings.isEmpty)
    }

    /// Prune copies a record's lists as they are, but decodes them first: a damaged one stops
    /// the prune instead of being carried into a rewritten record; every record and pack stays.
    @Test func aDamagedListStopsThePruneThatWouldRewriteIt() throws {
        let fixture = try Self.threeNightsWithProblems(hostile: false)
        let newest = try #require(try fixture.repository().snapshots().snapshots.last)
        let path = fixture.repo + "/snapshots/\(newest.id).jsonl"
        chmod(path, 0o644)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try text.replacingOccurrences(of: #"{"job_id""#, with: #"{"kind":42,"job_id""#).write(toFile: path, atomically: false, encoding: .utf8)
        let damaged = try String(contentsOfFile: path, encoding: .utf8)
        #expect(damaged != text)
        let packs = try fixture.packs()

        let error = #expect(throws: CofferError.self) { try Pruner(repository: fixture.repo, policy: KeepPolicy(last: 1)).run() }
        #expect(error?.status == .failed)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == damaged)
        #expect(Set(try fixture.packs()).isSuperset(of: packs))
        #expect(try fixture.repository().snapshots().snapshots.count == 3)
    }

    static func lastLine(_ path: String) throws -> [UInt8] {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        return [UInt8](bytes.split(separator: 0x0A).last ?? [])
    }
}
