import Crypto
import Foundation
import GRDB
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// `coffer verify --repo`: checks a repository, its snapshots and, with `--read-data`, every byte.
///
/// Without reading data: every snapshot record is complete and every reference resolves (the
/// pack exists and is long enough). With `--read-data`: every pack a checked snapshot needs is
/// read once, sequentially; its SHA-256 is compared with the one recorded when it was written,
/// and every file's bytes are re-hashed from the same pass; every database copy is
/// decompressed, re-hashed and integrity-checked in a scratch folder. A damaged byte anywhere
/// in a pack is found, and the damaged file is named with every snapshot that depends on it.
/// Read-only (a shared lock: backups wait, other readers do not).
public struct RepositoryVerifier {
    public var repositoryLocation: String?
    public var snapshot: String?
    public var readData = false
    public var logger = Logger(label: "coffer.verify")
    public var progress: Progress?
    /// The volume the run was configured for: what `--snapshot latest` prefers.
    public var volume: Repository.Volume?
    /// Where database copies are decompressed, in place of ``scratchParent(for:)``'s choice.
    var scratchParent: String?

    public init(repository: String?) { repositoryLocation = repository }

    /// One stored entry: where it is in its pack and what its bytes must hash to. Entries are
    /// shared by every snapshot that refers to them, so this grows with what the repository
    /// stores, not with snapshots × files; names and dependent snapshots are looked up again
    /// only for an entry found damaged.
    struct Entry {
        var offset: Int64
        var size: Int64
        var sha256: SHA256Value
    }

    struct EntryKey: Hashable {
        var pack: String
        var offset: Int64
    }

    public func run() throws -> RepositoryReport {
        let started = Date()
        let repository = try Repository.open(repositoryLocation)
        let lock = try repository.lock(exclusive: false, command: "verify")
        defer { withExtendedLifetime(lock) {} }
        var report = RepositoryReport(repository: repository.location, readData: readData)
        let (listed, damaged) = try repository.snapshots()
        for (name, error) in damaged where snapshot == nil {
            report.findings.append(.init(kind: "snapshot_damaged", path: name, snapshots: [], message: error.cause))
        }
        let chosen = try snapshot.map { [try repository.resolve($0, volume: volume)] } ?? listed
        report.snapshots = chosen.map(\.id)
        // Every record's digest (a byte changed anywhere in it), and the problems and findings
        // of those being verified (listing records only counts them). A damaged record is
        // reported (when it is one being verified) and left out of what follows, which reads
        // the records again.
        var unreadable = Set<String>()
        for snap in listed {
            let isChosen = chosen.contains { $0.id == snap.id }
            do {
                let reader = try repository.reader(for: snap)
                try reader.checkDigest()
                if isChosen { try reader.forEachDetail(problem: { _ in }, finding: { _ in }) }
            } catch let error as CofferError {
                unreadable.insert(snap.id)
                guard isChosen else { continue }
                report.findings.append(.init(kind: "snapshot_damaged", path: "snapshots/\(snap.id).jsonl", snapshots: [snap.id], message: error.cause))
            }
        }
        let all = listed.filter { !unreadable.contains($0.id) }
        let selected = chosen.filter { !unreadable.contains($0.id) }

        // The packs the selected snapshots need. A pack's digest covers all its entries, so the
        // entries of other snapshots in those packs are read too.
        var needed: Set<String>?
        if snapshot != nil {
            var packs = Set<String>()
            for snap in selected {
                packs.insert(snap.summary.database.pack)
                try repository.reader(for: snap).files { packs.insert($0.pack) }
            }
            needed = packs
        }
        var packDigests: [String: (size: Int64, sha256: String)] = [:]
        for pack in all.flatMap({ [$0.summary.pack] + ($0.summary.repacked ?? []) }) { packDigests[pack.name] = (pack.size, pack.sha256) }

        // References resolve: one streaming pass over the records, keeping per pack only its
        // size and the snapshots that need it.
        var dependents: [String: Set<Int>] = [:] // pack -> indices into `all`
        var packSizes: [String: Int64?] = [:]
        var damagedEntries: [(key: EntryKey, message: String)] = []
        var seenDamaged = Set<EntryKey>()
        func reference(_ pack: String, _ offset: Int64, _ size: Int64, _ index: Int) throws {
            guard needed?.contains(pack) ?? true else { return }
            if dependents[pack]?.contains(index) != true { dependents[pack, default: []].insert(index) }
            let packSize: Int64?
            if let known = packSizes[pack] { packSize = known } else {
                packSize = try repository.storage.size(pack)
                packSizes[pack] = packSize
            }
            if let packSize, offset + size > packSize, seenDamaged.insert(EntryKey(pack: pack, offset: offset)).inserted {
                damagedEntries.append((EntryKey(pack: pack, offset: offset), "its bytes lie past the end of the pack"))
            }
        }
        for (index, snap) in all.enumerated() {
            let db = snap.summary.database
            try reference(db.pack, db.offset, db.storedSize, index)
            try repository.reader(for: snap).files { try reference($0.pack, $0.offset, $0.size, index) }
        }
        report.packs = dependents.count
        func snapshotsNeeding(_ pack: String) -> [String] { (dependents[pack] ?? []).map { all[$0].id }.sorted() }

        var usablePacks: [String: Int64] = [:]
        for pack in dependents.keys.sorted() {
            guard let size = packSizes[pack] ?? nil else {
                report.findings.append(.init(kind: "pack_missing", path: pack, snapshots: snapshotsNeeding(pack),
                                             message: "a pack snapshots need is missing"))
                continue
            }
            if let expected = packDigests[pack], expected.size != size {
                report.findings.append(.init(kind: "pack_damaged", path: pack, snapshots: snapshotsNeeding(pack),
                                             message: "size \(size), recorded \(expected.size)"))
            }
            usablePacks[pack] = size
        }

        if readData {
            progress?.start(total: usablePacks.values.reduce(0, +))
            // Two independent lanes on two cores: the packs, read and hashed in one pass, and
            // the database copies, decompressed and integrity-checked (each snapshot has its own).
            var packReport = report, databaseReport = RepositoryReport(repository: report.repository, readData: true)
            var packDamage: [(key: EntryKey, message: String)] = []
            var failures: [Error?] = [nil, nil]
            let packLane = { [self] in
                let merge = PackMerge(repository: repository, snapshots: all, packs: usablePacks, digests: packDigests,
                                      progress: progress)
                do {
                    try merge.run()
                    packReport.bytesRead += merge.bytesRead
                    packReport.filesChecked += merge.entriesChecked
                    packDamage = merge.damaged
                    for pack in merge.damagedPacks {
                        packReport.findings.append(.init(kind: "pack_damaged", path: pack.name, snapshots: snapshotsNeeding(pack.name),
                                                         message: pack.message))
                    }
                } catch is PackMerge.OutOfOrder {
                    // Records or packs written in another order (older formats): the entries
                    // of each pack are gathered in memory and each pack read on its own.
                    logger.info("verify: records not in pack order, reading pack by pack")
                    progress?.start(total: usablePacks.values.reduce(0, +))
                    packDamage = try readPacksInMemory(all: all, usable: usablePacks, digests: packDigests, repository: repository,
                                                       into: &packReport, snapshotsNeeding: snapshotsNeeding)
                }
            }
            // A copy that serves several snapshots (the database was unchanged between them)
            // is checked once; a finding names every snapshot that needs it. Records that point
            // at the same bytes but disagree on their digests are checked each on their own.
            // Only the selected snapshots' copies are checked, but a finding names every
            // snapshot that shares the copy, selected or not.
            func key(_ db: Snapshot.Database) -> String { "\(db.pack)\u{0}\(db.offset)\u{0}\(db.storedSha256)\u{0}\(db.sha256)" }
            var sharing: [String: [Snapshot]] = [:]
            var order: [String] = []
            for snap in selected where sharing[key(snap.summary.database)] == nil {
                order.append(key(snap.summary.database))
                sharing[key(snap.summary.database)] = [snap]
            }
            for snap in all {
                let shared = key(snap.summary.database)
                if let users = sharing[shared], !users.contains(where: { $0.id == snap.id }) { sharing[shared]!.append(snap) }
            }
            // Room for the largest copy before hours of reading packs, not after.
            let scratchPlace = scratchParent ?? Self.scratchParent(for: repository)
            ScratchDirectory.sweep(in: scratchPlace, prefix: Self.scratchPrefix) // a killed run's copy takes room
            if let largest = order.map({ sharing[$0]![0] }).max(by: {
                $0.summary.database.storedSize + $0.summary.database.size < $1.summary.database.storedSize + $1.summary.database.size
            }) {
                try checkRoom(for: largest.summary.database, snapshots: (sharing[key(largest.summary.database)] ?? []).map(\.id).sorted(), in: scratchPlace)
            }
            let databaseLane = { [self] in
                for key in order {
                    let users = sharing[key]!
                    try checkDatabase(users[0].summary.database, snapshots: users.map(\.id).sorted(), repository: repository,
                                      scratchIn: scratchPlace, into: &databaseReport)
                }
            }
            failures.withUnsafeMutableBufferPointer { failed in
                DispatchQueue.concurrentPerform(iterations: 2) { lane in
                    do { try (lane == 0 ? packLane : databaseLane)() } catch { failed[lane] = error }
                }
            }
            if let failure = failures.compactMap({ $0 }).first { throw failure }
            report = packReport
            report.findings += databaseReport.findings
            for item in packDamage where seenDamaged.insert(item.key).inserted { damagedEntries.append(item) }
            // A pack whose digest differs while every entry's data is whole was changed in
            // its headers: the entry whose header it was is named, when its header says so.
            let damagedPacks = Set(report.findings.filter { $0.kind == "pack_damaged" }.map(\.path))
            for item in try damagedHeaders(in: damagedPacks, all: all, repository: repository) where seenDamaged.insert(item.key).inserted {
                damagedEntries.append(item)
            }
            progress?.finish()
        }
        if !damagedEntries.isEmpty {
            report.findings += try describe(damagedEntries, all: all, repository: repository)
        }
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    /// The fallback of `--read-data` for records or packs not in path order: every stored
    /// entry of the usable packs in memory (one compact entry each), then each pack read once.
    func readPacksInMemory(all: [Snapshot], usable: [String: Int64], digests: [String: (size: Int64, sha256: String)],
                           repository: Repository, into report: inout RepositoryReport,
                           snapshotsNeeding: (String) -> [String]) throws -> [(key: EntryKey, message: String)] {
        var entries: [String: [Int64: Entry]] = [:]
        func add(_ pack: String, _ offset: Int64, _ size: Int64, _ sha256: String) {
            guard let packSize = usable[pack], offset + size <= packSize, entries[pack]?[offset] == nil else { return }
            entries[pack, default: [:]][offset] = Entry(offset: offset, size: size, sha256: SHA256Value(hex: sha256))
        }
        for snap in all {
            let db = snap.summary.database
            add(db.pack, db.offset, db.storedSize, db.storedSha256)
            for entry in snap.summary.dropped ?? [] { add(entry.pack, entry.offset, entry.size, entry.sha256) }
            try repository.reader(for: snap).files { add($0.pack, $0.offset, $0.size, $0.sha256) }
        }
        let merge = PackMerge(repository: repository, snapshots: all, packs: usable, digests: digests, progress: progress)
        for pack in usable.keys.sorted() {
            try merge.readPack(pack, entries: Array((entries[pack] ?? [:]).values))
        }
        report.bytesRead += merge.bytesRead
        report.filesChecked += merge.entriesChecked
        for pack in merge.damagedPacks {
            report.findings.append(.init(kind: "pack_damaged", path: pack.name, snapshots: snapshotsNeeding(pack.name), message: pack.message))
        }
        return merge.damaged
    }

    /// The entries of `packs` whose tar headers are damaged: the ustar header (the 512 bytes
    /// before their data) whose checksum does not add up or that gives another size than the
    /// record, or the pax extended header in front of it (a name that is not plain ASCII, or
    /// too long for ustar) that does not parse or names another path or size.
    func damagedHeaders(in packs: Set<String>, all: [Snapshot], repository: Repository) throws -> [(key: EntryKey, message: String)] {
        guard !packs.isEmpty else { return [] }
        var entries: [EntryKey: (size: Int64, name: PathBytes)] = [:]
        for snap in all {
            let db = snap.summary.database
            if packs.contains(db.pack) { entries[EntryKey(pack: db.pack, offset: db.offset)] = (db.storedSize, PathBytes(db.entry.utf8)) }
            for entry in snap.summary.dropped ?? [] where packs.contains(entry.pack) {
                entries[EntryKey(pack: entry.pack, offset: entry.offset)] = (entry.size, entry.entryName)
            }
            try repository.reader(for: snap).files {
                if packs.contains($0.pack) { entries[EntryKey(pack: $0.pack, offset: $0.offset)] = ($0.size, $0.entryName) }
            }
        }
        var damaged: [(key: EntryKey, message: String)] = []
        var previous: (pack: String, end: Int64)?
        for (key, entry) in entries.sorted(by: { ($0.key.pack, $0.key.offset) < ($1.key.pack, $1.key.offset) }) where key.offset >= 512 {
            // What lies between the previous entry's data and this header: its pax header, if any.
            let gapStart = previous?.pack == key.pack ? previous!.end : 0
            previous = (key.pack, key.offset + TarHeader.padded(min(entry.size, Int64.max / 4))) // a size no record can mean
            guard let header = try? [UInt8](repository.storage.get(key.pack, offset: key.offset - 512, length: 512)) else { continue }
            if let problem = TarHeader.problem(header, size: entry.size) {
                damaged.append((key, problem))
            } else if gapStart < key.offset - 512, let problem = try? TarHeader.extendedHeaderProblem(
                from: gapStart, to: key.offset - 512, name: entry.name, size: entry.size,
                read: { [UInt8](try repository.storage.get(key.pack, offset: $0, length: $1)) }) {
                damaged.append((key, problem))
            }
        }
        return damaged
    }

    /// Names damaged entries: the file (or database copy) each one holds, and every snapshot
    /// that refers to it (one more pass over the records, only when something is damaged).
    func describe(_ damaged: [(key: EntryKey, message: String)], all: [Snapshot], repository: Repository) throws -> [RepositoryReport.Finding] {
        var labels: [EntryKey: String] = [:]
        var snapshots: [EntryKey: Set<String>] = [:]
        let wanted = Set(damaged.map(\.key))
        func see(_ key: EntryKey, _ label: @autoclosure () -> String, _ snapshot: String) {
            guard wanted.contains(key) else { return }
            if labels[key] == nil { labels[key] = label() }
            snapshots[key, default: []].insert(snapshot)
        }
        for snap in all {
            let db = snap.summary.database
            see(EntryKey(pack: db.pack, offset: db.offset), db.entry, snap.id)
            try repository.reader(for: snap).files { see(EntryKey(pack: $0.pack, offset: $0.offset), PathText.display($0.path), snap.id) }
        }
        return damaged.map { item in
            .init(kind: "file_damaged", path: labels[item.key] ?? "offset \(item.key.offset)", pack: item.key.pack,
                  snapshots: (snapshots[item.key] ?? []).sorted(), message: item.message)
        }
    }

    /// Where database copies are decompressed: the repository's own tmp/ when it is a local
    /// folder this run may write (on the backup disk, which holds the packs; what a killed run
    /// leaves there is swept by the next verify or backup), else `$TMPDIR`.
    static func scratchParent(for repository: Repository) -> String {
        if let own = repository.storage.scratchDirectory, access(own, W_OK) == 0 { return own }
        return NSTemporaryDirectory()
    }

    /// `coffer-verify-HOST-`, then the pid: a repository's tmp/ may be shared by hosts whose
    /// verifies run at once (a shared lock each), and a pid is only this host's to judge.
    static var scratchPrefix: String {
        "coffer-verify-" + String(ProcessInfo.processInfo.hostName.map { $0 == "/" || $0 == "." ? "_" : $0 }) + "-"
    }

    /// Fails the run when `parent` has no room for the database copy and its compressed stream
    /// side by side (before the packs are read for it, and again before each copy).
    func checkRoom(for database: Snapshot.Database, snapshots: [String], in parent: String) throws {
        let needed = database.storedSize + database.size
        if case .success(let space) = FileSystem.freeSpace(parent), space.available < UInt64(clamping: needed) {
            throw CofferError(.failed, operation: "check the database copy of", subject: snapshots.joined(separator: ", "),
                              cause: "decompressing it needs \(Formatting.bytes(needed)) in \(parent), where \(Formatting.bytes(Int64(clamping: space.available))) is free of \(Formatting.bytes(Int64(clamping: space.total)))",
                              hint: "free space there, or set TMPDIR to a folder with room (a repository in a folder this run can write uses its tmp/)")
        }
    }

    /// Decompresses a database copy into a scratch folder, re-hashes and integrity-checks it.
    /// What the stored bytes cause is a finding (`database_damaged`); what the scratch place
    /// causes (no room, no permission) or a stop fails the run instead: the copy is not damaged.
    /// `parent` is where its scratch folder goes, swept of killed runs' folders by the caller.
    func checkDatabase(_ database: Snapshot.Database, snapshots: [String], repository: Repository,
                       scratchIn parent: String, into report: inout RepositoryReport) throws {
        try checkRoom(for: database, snapshots: snapshots, in: parent)
        let scratch = try ScratchDirectory(prefix: "\(Self.scratchPrefix)\(getpid())", in: parent)
        defer { scratch.remove() }
        let path = scratch.path + "/db.sqlite"
        do {
            let sha = try DatabaseExtractor.extract(database, from: repository, to: path)
            guard sha == database.sha256 else {
                report.findings.append(.init(kind: "database_damaged", path: database.entry, pack: database.pack, snapshots: snapshots,
                                             message: "the decompressed copy's SHA-256 differs from the one recorded"))
                return
            }
            let queue = try DatabaseQueue(path: path, configuration: DatabaseAccess.untrustedConfiguration())
            let check = try queue.read { try DatabaseAccess.check($0, limit: 20, mapped: true) }
            try queue.close()
            if check != ["ok"] {
                report.findings.append(.init(kind: "database_damaged", path: database.entry, pack: database.pack, snapshots: snapshots,
                                             message: "integrity_check: " + check.joined(separator: "; ")))
            }
        } catch let error as CofferError {
            // The scratch place (no room, no files), the network or a stop says nothing of
            // the stored bytes: only their own damage is a finding.
            guard error.storedBytesDamaged else { throw error }
            report.findings.append(.init(kind: "database_damaged", path: database.entry, pack: database.pack, snapshots: snapshots,
                                         message: error.message))
        } catch let error as DatabaseError {
            // The copy's bytes matched their digest: only what SQLite says of the contents is
            // damage; a file it could not open or write, or memory, fails the run.
            guard [.SQLITE_CORRUPT, .SQLITE_NOTADB].contains(error.resultCode) else {
                throw DatabaseAccess.databaseFailure("check the database copy", path, error)
            }
            report.findings.append(.init(kind: "database_damaged", path: database.entry, pack: database.pack, snapshots: snapshots,
                                         message: error.message ?? "\(error.resultCode)"))
        }
    }
}

/// What `coffer verify --repo` found. Encoded as the `--json` document.
public struct RepositoryReport: Sendable, Codable {
    public struct Finding: Sendable, Codable, Equatable {
        /// `snapshot_damaged`, `pack_missing`, `pack_damaged`, `file_damaged`, `database_damaged`.
        public var kind: String
        public var path: String
        public var pack: String?
        /// Every snapshot that depends on the damaged part.
        public var snapshots: [String]
        public var message: String
    }

    public var command = "verify"
    public var repository: String
    public var readData: Bool
    public var snapshots: [String] = []
    public var packs = 0
    public var filesChecked = 0
    public var bytesRead: Int64 = 0
    public var findings: [Finding] = []
    public var seconds: Double = 0

    public var status: ExitStatus { findings.isEmpty ? .ok : .findings }

    enum CodingKeys: String, CodingKey {
        case command, repository, readData = "read_data", snapshots, packs, filesChecked = "files_checked"
        case bytesRead = "bytes_read", findings, seconds
    }

    public func text() -> String {
        var lines = ["verify repository \(PathText.display(repository)): \(snapshots.count) snapshot(s), \(packs) pack(s)"
                     + (readData ? ", \(filesChecked) entries re-hashed, \(Formatting.bytes(bytesRead)) read" : " (references only; --read-data reads every byte)")]
        if findings.isEmpty {
            lines.append("  no findings (\(Formatting.seconds(seconds)))")
        } else {
            lines.append("  \(findings.count) finding(s) (\(Formatting.seconds(seconds)))")
            for finding in findings {
                lines.append("  \(finding.kind): \(finding.path)" + (finding.pack.map { " in \($0)" } ?? "") + ": \(finding.message)")
                if !finding.snapshots.isEmpty { lines.append("    snapshots affected: " + finding.snapshots.joined(separator: " ")) }
            }
        }
        return lines.joined(separator: "\n")
    }
}
