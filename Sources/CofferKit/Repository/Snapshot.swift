import Crypto
import Foundation

/// A snapshot record, stored as `snapshots/ID.jsonl`: a header line, one line per file, and a
/// summary line. The summary comes last, so a record without it is incomplete and refused.
/// The format is described in FORMAT.md.
public struct Snapshot: Sendable {
    /// 2: records end with their digest (``SnapshotWriter``); 1 had none.
    public static let formatVersion = 2

    public struct Header: Codable, Sendable {
        public var type = "snapshot"
        public var format = Snapshot.formatVersion
        public var id: String
        public var time: String
        public var host: String
        public var cofferVersion: String
        public var parent: String?
        public var tags: [String]
        public var full: Bool
        public var dbPath: String
        public var mediaRoot: String

        enum CodingKeys: String, CodingKey {
            case type, format, id, time, host, cofferVersion = "coffer_version", parent, tags, full
            case dbPath = "db_path", mediaRoot = "media_root"
        }
    }

    /// One media file: its path under MEDIA_ROOT (bytes), facts, digest and where its bytes are.
    public struct File: Codable, Sendable, Equatable {
        public var path: PathBytes
        public var size: Int64
        public var mode: UInt32
        public var mtime: Double
        public var inode: UInt64
        public var sha256: String
        /// The pack that holds the bytes, and the offset of the entry's data in it.
        public var pack: String
        public var offset: Int64

        enum CodingKeys: String, CodingKey {
            case type, path, pathBase64 = "path_b64", size, mode, mtime, inode, sha256, pack, offset
        }

        public init(path: PathBytes, size: Int64, mode: UInt32, mtime: Double, inode: UInt64, sha256: String, pack: String, offset: Int64) {
            self.path = path; self.size = size; self.mode = mode; self.mtime = mtime
            self.inode = inode; self.sha256 = sha256; self.pack = pack; self.offset = offset
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            if let text = try c.decodeIfPresent(String.self, forKey: .path) {
                path = PathBytes(text.utf8)
            } else {
                let encoded = try c.decode(String.self, forKey: .pathBase64)
                guard let data = Data(base64Encoded: encoded) else {
                    throw DecodingError.dataCorruptedError(forKey: .pathBase64, in: c, debugDescription: "not base64")
                }
                path = PathBytes(data)
            }
            size = try c.decode(Int64.self, forKey: .size)
            mode = try c.decode(UInt32.self, forKey: .mode)
            mtime = try c.decode(Double.self, forKey: .mtime)
            inode = try c.decode(UInt64.self, forKey: .inode)
            sha256 = try c.decode(String.self, forKey: .sha256)
            pack = try c.decode(String.self, forKey: .pack)
            offset = try c.decode(Int64.self, forKey: .offset)
        }

        /// A path that is UTF-8 is stored as text; any other as base64 of its bytes.
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode("file", forKey: .type)
            if let text = String(validating: path, as: UTF8.self) {
                try c.encode(text, forKey: .path)
            } else {
                try c.encode(Data(path).base64EncodedString(), forKey: .pathBase64)
            }
            try c.encode(size, forKey: .size)
            try c.encode(mode, forKey: .mode)
            try c.encode(mtime, forKey: .mtime)
            try c.encode(inode, forKey: .inode)
            try c.encode(sha256, forKey: .sha256)
            try c.encode(pack, forKey: .pack)
            try c.encode(offset, forKey: .offset)
        }

        /// The entry's name in its pack.
        public var entryName: PathBytes { PathBytes("media/".utf8) + path }
    }

    /// The database copy: where it is, and what was true of it when it was taken.
    public struct Database: Codable, Sendable, Equatable {
        /// Entry name in the pack (`db.sqlite.zst`), its pack and data offset.
        public var entry: String
        public var pack: String
        public var offset: Int64
        /// The zstd stream as stored.
        public var storedSize: Int64
        public var storedSha256: String
        /// The database file itself.
        public var size: Int64
        public var sha256: String
        public var pageSize: Int
        public var pageCount: Int
        public var schemaVersion: Int?
        public var rowCounts: [String: Int]
        public var integrityCheck: String

        enum CodingKeys: String, CodingKey {
            case entry, pack, offset, storedSize = "stored_size", storedSha256 = "stored_sha256", size, sha256
            case pageSize = "page_size", pageCount = "page_count", schemaVersion = "schema_version"
            case rowCounts = "row_counts", integrityCheck = "integrity_check"
        }
    }

    public struct Pack: Codable, Sendable, Equatable {
        public var name: String
        public var size: Int64
        public var sha256: String
    }

    /// Something about a file that kept it from being backed up as it should.
    public struct Problem: Codable, Sendable, Equatable {
        /// `missing`, `changed`, `unreadable`, `not_a_file`, `outside_media_root`.
        public var kind: String
        public var path: String
        public var jobID: String?
        public var message: String
        enum CodingKeys: String, CodingKey { case kind, path, jobID = "job_id", message }
    }

    public struct Summary: Codable, Sendable {
        public var type = "end"
        public var files: Int
        public var bytes: Int64
        /// Bytes of media this run wrote to its pack (new or changed content).
        public var bytesAdded: Int64
        /// Bytes of media this run read from the volume.
        public var bytesRead: Int64
        public var pack: Pack
        public var database: Database
        public var problems: [Problem]
        /// Reconciliation of the database copy against the files, at the time of the snapshot.
        public var findings: [Finding]
        public var seconds: [String: Double]
        /// Packs `coffer prune` rewrote that this snapshot refers to, with their digests.
        public var repacked: [Pack]?
        /// How many problems and findings the run had, when there were more than the record
        /// lists (``listLimit``; a MEDIA_ROOT pointed at the wrong place gives one per file).
        public var problemsTotal: Int?
        public var findingsTotal: Int?
        /// Entries of this snapshot's pack that no file line lists: files whose reading failed
        /// midway (their entries padded with zeros), left out of the snapshot. Listed so that
        /// the pack's digest, which counts every entry's digest, can be checked.
        public var dropped: [File]?
        /// How many problems and findings the record lists, when they were counted rather than
        /// decoded (``SnapshotReader/snapshot()``: `problems` and `findings` are then empty).
        var countedProblems: Int?
        var countedFindings: Int?

        /// A record lists at most this many problems and this many findings: the summary line
        /// stays well under what a reader accepts (``SnapshotReader/longestLine``).
        public static let listLimit = 50_000

        public var problemCount: Int { problemsTotal ?? countedProblems ?? problems.count }
        public var findingCount: Int { findingsTotal ?? countedFindings ?? findings.count }

        enum CodingKeys: String, CodingKey {
            case type, files, bytes, bytesAdded = "bytes_added", bytesRead = "bytes_read", pack, database, problems, findings, seconds, repacked
            case problemsTotal = "problems_total", findingsTotal = "findings_total", dropped
        }
    }

    public var header: Header
    public var summary: Summary

    public var id: String { header.id }

    /// All packs the snapshot needs.
    public var packs: Set<String> = []

    /// Makes a sortable id from the time: `20261125T160102Z-3fa9c1d2`.
    public static func makeID(_ date: Date) -> String { UTCTime.compact(date) + "-" + randomPart() }

    /// An id's part after its time: 8 random hex digits.
    static func randomPart() -> String { String(UInt32.random(in: 0...UInt32.max), radix: 16).leftPadded(to: 8) }
}

/// Writes a snapshot record line by line into a pending object.
///
/// The summary line ends with the record's digest, its last member: `"record_sha256"`, the
/// SHA-256 of every byte of the record before that digest's hex (``SnapshotReader/checkDigest()``).
final class SnapshotWriter {
    let pending: PendingObject
    let encoder: JSONEncoder
    private var buffer: [UInt8] = []
    private var hasher = SHA256()
    private var sealed = false

    init(pending: PendingObject, header: Snapshot.Header) throws {
        self.pending = pending
        encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        buffer.reserveCapacity(1 << 20 + 4096)
        try line(header)
    }

    func line(_ value: some Encodable) throws {
        buffer.append(contentsOf: try encoder.encode(value))
        try endLine()
    }

    /// The summary line: the bytes `line(summary)` would write, its `problems` and `findings`
    /// encoded one element at a time instead of the whole line as one JSON tree (with 187,000
    /// problems that tree and its text took 170 MB). `rawLists` gives a list's elements as
    /// encoded bytes (``SnapshotReader/checkedRawLists()``, for a record being rewritten): they are
    /// written as they are, in place of the summary's.
    func summary(_ summary: Snapshot.Summary, rawLists: [String: [UInt8]] = [:]) throws {
        var shell = summary
        shell.problems = []
        shell.findings = []
        let bytes = [UInt8](try encoder.encode(shell))
        guard let lists = SummaryLine.lists(in: bytes) else {
            // Not reached (the encoder writes both keys); the plain way stays correct.
            buffer.append(contentsOf: try encoder.encode(summary))
            return try seal()
        }
        var from = 0
        for (name, list) in lists.sorted(by: { $0.value.contents.lowerBound < $1.value.contents.lowerBound }) {
            buffer.append(contentsOf: bytes[from..<list.contents.lowerBound])
            if let raw = rawLists[name] {
                buffer.append(contentsOf: raw)
            } else if name == "problems" {
                try elements(summary.problems)
            } else {
                try elements(summary.findings)
            }
            if buffer.count > 1 << 20 { try flush() }
            from = list.contents.upperBound
        }
        buffer.append(contentsOf: bytes[from...])
        try seal()
    }

    /// Ends the summary (the object just written) with the record's digest and a line break.
    private func seal() throws {
        guard buffer.last == UInt8(ascii: "}") else { throw CofferError(.failed, operation: "write snapshot record", cause: "summary not an object") }
        buffer.removeLast()
        buffer.append(contentsOf: SnapshotReader.digestKey.utf8)
        hasher.update(data: buffer)
        sealed = true
        buffer.append(contentsOf: Digest.hex(hasher.finalize()).utf8)
        buffer.append(contentsOf: SnapshotReader.digestEnd.utf8)
        try endLine()
    }

    private func elements(_ values: [some Encodable]) throws {
        for (index, value) in values.enumerated() {
            if index > 0 { buffer.append(UInt8(ascii: ",")) }
            buffer.append(contentsOf: try encoder.encode(value))
            if buffer.count > 1 << 20 { try flush() }
        }
    }

    /// A file line, through the fast codec.
    func line(_ file: Snapshot.File) throws {
        FileLine.append(file, to: &buffer)
        try endLine()
    }

    private func endLine() throws {
        buffer.append(0x0A)
        if buffer.count > 1 << 20 { try flush() }
    }

    func flush() throws {
        if !sealed { hasher.update(data: buffer) }
        try buffer.withUnsafeBytes { try pending.write($0) }
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Reads a snapshot record: the header and summary from its two ends, and the file lines one
/// at a time through a fixed buffer, so a record of any size is read in constant memory.
public struct SnapshotReader {
    public let name: String
    let storage: RepositoryStorage

    /// Lines longer than this are refused (a file line is a few hundred bytes; a summary with
    /// many problems may be large, but not this).
    static let longestLine = 256 << 20

    public init(name: String, storage: RepositoryStorage) { self.name = name; self.storage = storage }

    func damaged(_ cause: String = "incomplete or damaged record") -> CofferError {
        CofferError(.failed, operation: "read snapshot", subject: name, cause: cause,
                    hint: "`coffer verify --repo` checks every snapshot")
    }

    /// The summary line's last member, the record's digest (``SnapshotWriter``): this, 64
    /// hex digits, ``digestEnd``, a line break.
    static let digestKey = #","record_sha256":""#
    static let digestEnd = #""}"#

    /// Reads the whole record once and compares its digest with the one its summary ends with:
    /// a byte changed anywhere in it (a mode, an mtime, an offset, a row count) is found.
    /// Returns what is wrong, `nil` when the record is whole (or, written in format 1, has no
    /// digest to check). Throws only when the record cannot be read (a network or disk error).
    public func digestProblem() throws -> String? {
        guard let size = try storage.size(name) else { throw damaged() }
        let (head, firstBreak) = try firstLine(size: size, reading: 4 << 10)
        guard let header = try? JSONDecoder().decode(Snapshot.Header.self, from: head.prefix(firstBreak)) else { return "its header cannot be read" }
        guard header.format >= 2 else { return nil }
        let tailLength = Int64(Self.digestKey.utf8.count + 64 + Self.digestEnd.utf8.count + 1)
        guard size > tailLength else { return "the record is too short to hold its digest" }
        let tail = [UInt8](try storage.get(name, offset: size - tailLength, length: Int(tailLength)))
        let key = Array(Self.digestKey.utf8), end = Array(Self.digestEnd.utf8) + [0x0A]
        let recorded = String(decoding: tail[key.count..<(key.count + 64)], as: UTF8.self)
        guard tail.starts(with: key), tail.suffix(end.count).elementsEqual(end), SHA256Value(validHex: recorded) != nil else {
            return "its summary does not end with the record's digest (record_sha256)"
        }
        var hasher = SHA256()
        try storage.read(name, offset: 0, length: size - tailLength + Int64(key.count)) { hasher.update(bufferPointer: $0) }
        return Digest.hex(hasher.finalize()) == recorded ? nil : "its bytes changed (the SHA-256 of the record differs from the one it ends with)"
    }

    /// ``digestProblem()``, thrown as damage.
    public func checkDigest() throws {
        if let problem = try digestProblem() { throw damaged(problem) }
    }

    /// Where the header ends and the summary line starts.
    struct Layout {
        var size: Int64
        var header: Data
        var filesStart: Int64
        var summaryStart: Int64
        var summary: Data
    }

    func layout() throws -> Layout {
        guard let size = try storage.size(name), size > 0 else { throw damaged() }
        // The header: the first line.
        let (head, firstBreak) = try firstLine(size: size, reading: 64 << 10)
        let filesStart = Int64(firstBreak) + 1
        // The summary: the last line (after a final line break, if any).
        var tailLength = min(Int64(64 << 10), size)
        while true {
            let tail = try storage.get(name, offset: size - tailLength, length: Int(tailLength))
            guard tail.last == 0x0A else { throw damaged() }
            if let lastBreak = Self.lastBreak(in: tail, before: tail.count - 1) {
                let summaryStart = size - tailLength + Int64(lastBreak) + 1
                guard summaryStart >= filesStart else { throw damaged() }
                return Layout(size: size, header: head.prefix(firstBreak), filesStart: filesStart, summaryStart: summaryStart,
                              summary: tail.dropFirst(lastBreak + 1).dropLast())
            }
            guard tailLength < size, tailLength < Int64(Self.longestLine) else { throw damaged() }
            tailLength = min(tailLength * 4, size)
        }
    }

    // Line breaks found over the raw bytes (memchr forwards): Data's own element-wise search
    // paid an exclusivity check per byte, most of `coffer snapshots`'s time with many records
    // (their summary lines run to tens of KB).

    /// The offset of the first line break in `data`.
    static func firstBreak(in data: Data) -> Int? {
        data.withUnsafeBytes { raw in
            guard let base = raw.baseAddress, let hit = memchr(base, 0x0A, raw.count) else { return nil }
            return base.distance(to: UnsafeRawPointer(hit))
        }
    }

    /// The offset of the last line break in the first `end` bytes of `data`.
    static func lastBreak(in data: Data, before end: Int) -> Int? {
        data.withUnsafeBytes { raw in
            var index = min(end, raw.count) - 1
            while index >= 0, raw[index] != 0x0A { index -= 1 }
            return index >= 0 ? index : nil
        }
    }

    /// The header alone (the first line): what choosing among many records needs.
    public func header() throws -> Snapshot.Header {
        guard let size = try storage.size(name), size > 0 else { throw damaged() }
        let (head, firstBreak) = try firstLine(size: size, reading: 4 << 10)
        guard let header = try? JSONDecoder().decode(Snapshot.Header.self, from: head.prefix(firstBreak)), header.type == "snapshot" else {
            throw damaged()
        }
        return header
    }

    /// The record's first bytes, `initial` of them and more until they hold a line break, and
    /// that break's offset.
    func firstLine(size: Int64, reading initial: Int64) throws -> (Data, Int) {
        var length = min(initial, size)
        var head = try storage.get(name, offset: 0, length: Int(length))
        while Self.firstBreak(in: head) == nil, length < size, length < Int64(Self.longestLine) {
            length = min(length * 4, size)
            head = try storage.get(name, offset: 0, length: Int(length))
        }
        guard let firstBreak = Self.firstBreak(in: head) else { throw damaged() }
        return (head, firstBreak)
    }

    /// The header (first line) and summary (last line), without reading the file lines.
    public func snapshot() throws -> Snapshot {
        let layout = try layout()
        let decoder = JSONDecoder()
        guard let header = try? decoder.decode(Snapshot.Header.self, from: layout.header), header.type == "snapshot",
              let summary = try? Self.decodeCounting(layout.summary, with: decoder), summary.type == "end" else {
            throw damaged()
        }
        // A record is named after its snapshot: one whose header says otherwise was changed.
        guard name == "snapshots/\(header.id).jsonl" else { throw damaged("its header names snapshot \(header.id)") }
        guard header.format <= Snapshot.formatVersion else {
            throw CofferError(.failed, operation: "read snapshot", subject: name,
                              cause: "format \(header.format) is newer than this coffer knows (\(Snapshot.formatVersion))",
                              hint: "use a newer coffer")
        }
        var snapshot = Snapshot(header: header, summary: summary)
        snapshot.packs = [summary.pack.name, summary.database.pack]
        return snapshot
    }

    /// The summary without its problems and findings, which are counted: listing records, or
    /// choosing a parent, never holds them (a week of backups with a wrong MEDIA_ROOT would
    /// hold a million). A line the count cannot follow is decoded whole.
    static func decodeCounting(_ line: Data, with decoder: JSONDecoder) throws -> Snapshot.Summary {
        let counted: (bytes: [UInt8], problems: Int, findings: Int)? = line.withUnsafeBytes { raw in
            guard let lists = SummaryLine.lists(in: raw), let problems = lists["problems"], let findings = lists["findings"] else { return nil }
            return (SummaryLine.stripped(raw, lists), problems.count, findings.count)
        }
        guard let counted else { return try decoder.decode(Snapshot.Summary.self, from: line) }
        var summary = try decoder.decode(Snapshot.Summary.self, from: Data(counted.bytes))
        summary.countedProblems = counted.problems
        summary.countedFindings = counted.findings
        return summary
    }

    /// The summary's problems and findings, decoded (``snapshot()`` only counts them).
    public func details() throws -> (problems: [Snapshot.Problem], findings: [Finding]) {
        var problems: [Snapshot.Problem] = [], findings: [Finding] = []
        try forEachDetail(problem: { problems.append($0) }, finding: { findings.append($0) })
        return (problems, findings)
    }

    /// Decodes the summary's problems and findings one at a time (a record may list a million:
    /// `verify --repo` checks them without holding them).
    public func forEachDetail(problem: (Snapshot.Problem) throws -> Void, finding: (Finding) throws -> Void) throws {
        try forEachDetail(in: try layout().summary, problem: problem, finding: finding)
    }

    /// ``forEachDetail(problem:finding:)`` over a summary line already read.
    func forEachDetail(in line: Data, problem: (Snapshot.Problem) throws -> Void, finding: (Finding) throws -> Void) throws {
        let unreadable = damaged("its summary's problems or findings cannot be read")
        let decoder = JSONDecoder()
        let counted: Bool = try line.withUnsafeBytes { raw in
            guard let lists = SummaryLine.lists(in: raw), let problems = lists["problems"], let findings = lists["findings"] else { return false }
            do {
                try SummaryLine.forEachElement(of: problems, in: raw) { try problem(decoder.decode(Snapshot.Problem.self, from: Data($0))) }
                try SummaryLine.forEachElement(of: findings, in: raw) { try finding(decoder.decode(Finding.self, from: Data($0))) }
            } catch is DecodingError {
                throw unreadable
            }
            return true
        }
        guard !counted else { return }
        // A line the count cannot follow: decoded whole.
        guard let summary = try? decoder.decode(Snapshot.Summary.self, from: line) else { throw unreadable }
        try summary.problems.forEach(problem)
        try summary.findings.forEach(finding)
    }

    /// The summary's problems and findings as the record has them (the bytes between each
    /// list's brackets), for writing the record again; empty when its line is one the count
    /// cannot follow (``snapshot()`` then decoded them whole). They are decoded first, one
    /// element at a time, from the same read: a damaged list is refused, not copied.
    func checkedRawLists() throws -> [String: [UInt8]] {
        let line = try layout().summary
        try forEachDetail(in: line, problem: { _ in }, finding: { _ in })
        return line.withUnsafeBytes { raw in
            guard let lists = SummaryLine.lists(in: raw) else { return [:] }
            return lists.mapValues { [UInt8](raw[$0.contents]) }
        }
    }

    /// Calls `body` with every file record, in order.
    public func files(_ body: (Snapshot.File) throws -> Void) throws {
        let cursor = try makeCursor()
        while let file = try cursor.next() { try body(file) }
    }

    /// The file records one at a time, in the order they were written. `bufferSize` is where
    /// the cursor starts (it grows for a longer line); many cursors open at once want it small.
    public func makeCursor(bufferSize: Int = 1 << 20) throws -> FileCursor {
        let layout = try layout()
        return try FileCursor(name: name, object: storage.openReader(name), start: layout.filesStart, end: layout.summaryStart,
                              bufferSize: bufferSize, damaged: damaged)
    }
}

/// Pulls file records out of a record, one line at a time, through one buffer.
public final class FileCursor {
    let name: String
    let object: ObjectReader
    let end: Int64
    var position: Int64
    var buffer: UnsafeMutableRawBufferPointer
    var start = 0, filled = 0
    var packs: [String] = []
    let damaged: (String) -> CofferError
    lazy var decoder = JSONDecoder()

    init(name: String, object: ObjectReader, start: Int64, end: Int64, bufferSize: Int, damaged: @escaping (String) -> CofferError) throws {
        self.name = name; self.object = object; self.position = start; self.end = end; self.damaged = damaged
        buffer = .allocate(byteCount: max(bufferSize, 4096), alignment: 16)
    }

    deinit { buffer.deallocate() }

    /// The next file, or `nil` after the last.
    public func next() throws -> Snapshot.File? {
        while true {
            // memchr: a generic search of the slice cost 3,000 instructions a line.
            if filled > start, let found = memchr(buffer.baseAddress! + start, 0x0A, filled - start) {
                let newline = buffer.baseAddress!.distance(to: found)
                let line = UnsafeRawBufferPointer(rebasing: buffer[start..<newline])
                start = newline + 1
                return try decode(line)
            }
            // No whole line left: keep the partial one, read more.
            if start > 0 {
                if filled > start { memmove(buffer.baseAddress!, buffer.baseAddress! + start, filled - start) }
                filled -= start
                start = 0
            }
            if filled == buffer.count {
                guard buffer.count < SnapshotReader.longestLine else { throw damaged("a file line longer than \(buffer.count) bytes") }
                let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: buffer.count * 2, alignment: 16)
                bigger.copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[0..<filled]))
                buffer.deallocate()
                buffer = bigger
            }
            let want = Int(min(Int64(buffer.count - filled), end - position))
            if want == 0 {
                guard filled == 0 else { throw damaged("the file lines do not end with a line break") }
                return nil
            }
            try object.read(into: buffer.baseAddress! + filled, count: want, at: position)
            filled += want
            position += Int64(want)
        }
    }

    func decode(_ line: UnsafeRawBufferPointer) throws -> Snapshot.File {
        if let file = FileLine.decode(line, packs: &packs) { return file }
        do {
            return try decoder.decode(Snapshot.File.self, from: Data(line))
        } catch {
            throw damaged("damaged file record: \(error)")
        }
    }
}
