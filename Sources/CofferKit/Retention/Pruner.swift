import Crypto
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// `coffer prune`: forgets the snapshots the keep rules do not keep, and frees their bytes.
///
/// Rules (``KeepPolicy``) apply per volume: snapshots of the same host, DB_PATH and MEDIA_ROOT.
/// A pack nothing kept refers to is deleted; a pack only partly referred to is repacked: the
/// entries kept snapshots need are copied (and re-hashed against their records) into a new
/// pack, and the records pointing into the old one are rewritten to point into the new one.
///
/// Order, so that a kill at any moment leaves a sound repository: new packs first; then the
/// rewritten records, each replaced atomically; then the forgotten records; and only last the
/// packs no remaining record refers to (found from the records on disk, so a run that was
/// killed earlier is finished by the next one). Under the repository's exclusive lock; the
/// repository is verified (references) afterwards.
public struct Pruner {
    public var repositoryLocation: String?
    public var policy: KeepPolicy
    public var dryRun = false
    public var logger = Logger(label: "coffer.prune")

    public init(repository: String?, policy: KeepPolicy) {
        repositoryLocation = repository
        self.policy = policy
    }

    struct EntryKey: Hashable {
        var pack: String
        var offset: Int64
    }

    public func run() throws -> PruneReport {
        let started = Date()
        guard !policy.isEmpty else {
            throw CofferError(.usage, operation: "prune", cause: "no --keep-* rule given: every snapshot would be forgotten",
                              hint: "e.g. --keep-last 7 --keep-daily 14 --keep-weekly 8 --keep-monthly 12")
        }
        let repository = try Repository.open(repositoryLocation)
        var report = try prune(repository, started: started)
        guard !dryRun else { return report }
        // 7. The result, checked (after the exclusive lock is released; verify takes a shared
        // one): every reference of every snapshot resolves.
        var verifier = RepositoryVerifier(repository: repository.location)
        verifier.logger = logger
        report.verify = try verifier.run()
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    func prune(_ repository: Repository, started: Date) throws -> PruneReport {
        let lock = try repository.lock(exclusive: true, command: "prune")
        defer { withExtendedLifetime(lock) {} }
        if !dryRun { repository.storage.sweepTemporaryFiles() }
        var (all, damaged) = try repository.snapshots()
        // A record changed since it was written would be rewritten below with a new digest
        // that vouches for the change: none is touched while one is damaged.
        for snap in all {
            let reader = try repository.reader(for: snap)
            if let problem = try reader.digestProblem() { damaged.append((reader.name, reader.damaged(problem))) }
        }
        guard damaged.isEmpty else {
            throw CofferError(.failed, operation: "prune", subject: repository.location,
                              cause: "\(damaged.count) snapshot record(s) are damaged (first: \(damaged[0].name)); nothing was changed",
                              hint: "`coffer verify --repo` names them; move them aside, then prune")
        }
        var report = PruneReport(repository: repository.location, dryRun: dryRun)

        // 1. What stays, per volume.
        var groups: [Repository.Volume: [Int]] = [:]
        for (index, snap) in all.enumerated() {
            groups[Repository.Volume(snap.header), default: []].append(index)
        }
        var keep: [Int: [String]] = [:]
        for members in groups.values {
            let times = members.map { UTCTime.parse(all[$0].header.time) ?? .distantPast }
            for (local, reasons) in policy.apply(times) { keep[members[local]] = reasons }
        }
        let kept = all.indices.filter { keep[$0] != nil }.map { all[$0] }
        let forgotten = all.indices.filter { keep[$0] == nil }.map { all[$0] }
        report.kept = all.indices.filter { keep[$0] != nil }.map { .init(id: all[$0].id, time: all[$0].header.time, reasons: keep[$0]!) }
        report.forgotten = forgotten.map(\.id)

        // 2. Which entries any snapshot refers to, and which the kept ones need, per pack.
        var referenced: [String: [Int64: Int64]] = [:] // pack -> offset -> size
        var needed: [String: [Int64: Int64]] = [:]
        for (index, snap) in all.enumerated() {
            let isKept = keep[index] != nil
            let db = snap.summary.database
            referenced[db.pack, default: [:]][db.offset] = db.storedSize
            if isKept { needed[db.pack, default: [:]][db.offset] = db.storedSize }
            try repository.reader(for: snap).files { file in
                referenced[file.pack, default: [:]][file.offset] = file.size
                if isKept { needed[file.pack, default: [:]][file.offset] = file.size }
            }
        }
        let packs = try repository.storage.list("packs").filter { $0.hasSuffix(".tar") }
        var toRepack: [String] = []
        for pack in packs {
            guard let entries = needed[pack] else {
                report.packsDeleted.append(pack)
                report.bytesFreed += try repository.storage.size(pack) ?? 0
                continue
            }
            // Some of its entries only forgotten snapshots refer to: rewrite it without them.
            let unused = (referenced[pack] ?? [:]).filter { entries[$0.key] == nil }
            if !unused.isEmpty {
                toRepack.append(pack)
                report.bytesFreed += unused.values.reduce(Int64(0)) { $0 + Self.paddedSize($1) + 512 }
            }
        }
        report.packsRepacked = toRepack
        if dryRun {
            report.seconds = Date().timeIntervalSince(started)
            return report
        }

        // 3. New packs for the partly used ones. One more pass over the kept records says what
        // each needed entry is (name, mode, mtime, digest) and which records point into them.
        var described: [String: [Int64: RepackEntry]] = [:]
        var pointing: [Snapshot] = []
        let repacked = Set(toRepack)
        for snap in kept where !repacked.isEmpty {
            var refers = false
            func describe(_ pack: String, _ offset: Int64, _ entry: @autoclosure () -> RepackEntry) {
                guard repacked.contains(pack) else { return }
                refers = true
                if described[pack]?[offset] == nil { described[pack, default: [:]][offset] = entry() }
            }
            let db = snap.summary.database
            describe(db.pack, db.offset, RepackEntry(name: PathBytes(db.entry.utf8), mode: 0o644, mtime: Date().timeIntervalSince1970,
                                                      size: db.storedSize, sha256: db.storedSha256))
            try repository.reader(for: snap).files { file in
                describe(file.pack, file.offset, RepackEntry(name: file.entryName, mode: file.mode, mtime: file.mtime, size: file.size, sha256: file.sha256))
            }
            if refers { pointing.append(snap) }
        }
        var moved: [EntryKey: EntryKey] = [:]
        var newPacks: [String: Snapshot.Pack] = [:] // old pack -> new
        for pack in toRepack {
            let (newPack, offsets) = try repack(pack, entries: described[pack] ?? [:], repository: repository)
            newPacks[pack] = newPack
            for (old, new) in offsets { moved[EntryKey(pack: pack, offset: old)] = EntryKey(pack: newPack.name, offset: new) }
        }

        // 4. Records that point into repacked packs, rewritten and replaced one at a time.
        for snap in pointing {
            try rewrite(snap, moved: moved, newPacks: newPacks, repository: repository)
            report.recordsRewritten += 1
        }

        // 5. The forgotten snapshots' records.
        for snap in forgotten { try repository.storage.delete("snapshots/\(snap.id).jsonl") }

        // 6. Packs no remaining record refers to (read from disk: finishes a killed run too).
        let (remaining, _) = try repository.snapshots()
        var stillReferenced = Set<String>()
        for snap in remaining {
            stillReferenced.insert(snap.summary.database.pack)
            try repository.reader(for: snap).files { stillReferenced.insert($0.pack) }
        }
        report.packsDeleted = []
        report.bytesFreed = -newPacks.values.reduce(Int64(0)) { $0 + $1.size }
        for pack in try repository.storage.list("packs").filter({ $0.hasSuffix(".tar") }) where !stillReferenced.contains(pack) {
            report.bytesFreed += try repository.storage.size(pack) ?? 0
            try repository.storage.delete(pack)
            report.packsDeleted.append(pack)
        }
        report.seconds = Date().timeIntervalSince(started)
        return report
    }

    static func paddedSize(_ size: Int64) -> Int64 { (size + 511) / 512 * 512 }

    /// The name of the pack that replaces `pack`: its time, a new random part. Packs sort by
    /// name in the order their content was written, rewritten ones included, so that
    /// extracting a snapshot's packs in name order (FORMAT.md, restoring by hand) lays each
    /// file's newer version over an older one. (Named by the prune's time, a rewritten pack
    /// holding an older version sorted after the pack with the newer one.)
    static func repackedName(of pack: String) -> String {
        let id = pack.dropFirst("packs/".count).dropLast(".tar".count)
        guard pack.hasPrefix("packs/"), pack.hasSuffix(".tar"), let dash = id.lastIndex(of: "-") else {
            return "packs/\(Snapshot.makeID(Date())).tar"
        }
        return "packs/\(id[..<dash])-\(Snapshot.randomPart()).tar"
    }

    /// What a needed entry of a repacked pack is, from a record that refers to it.
    struct RepackEntry {
        var name: PathBytes
        var mode: UInt32
        var mtime: Double
        var size: Int64
        var sha256: String
    }

    /// Copies the needed entries of `pack` into a new pack, re-hashing each against the record
    /// that refers to it. Returns the new pack and old offset -> new offset.
    func repack(_ pack: String, entries described: [Int64: RepackEntry], repository: Repository) throws
        -> (Snapshot.Pack, [Int64: Int64]) {
        var name = Self.repackedName(of: pack)
        while try repository.storage.size(name) != nil { name = Self.repackedName(of: pack) }
        let pending = try repository.storage.create(name)
        var committed = false
        defer { if !committed { repository.storage.discard(pending) } }
        let writer = try ArchiveWriter(output: pending)
        let source = try repository.storage.openReader(pack)
        let sourcePath = source.display
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var offsets: [Int64: Int64] = [:]
        for (offset, entry) in described.sorted(by: { $0.key < $1.key }) {
            let newOffset = try writer.beginFile(path: entry.name, size: entry.size, mode: entry.mode, modified: entry.mtime)
            var hasher = SHA256()
            var done: Int64 = 0
            while done < entry.size {
                let n = Int(min(Int64(buffer.count), entry.size - done))
                try source.read(into: buffer.baseAddress!, count: n, at: offset + done)
                let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
                hasher.update(bufferPointer: chunk)
                try writer.write(chunk.baseAddress!, count: n)
                done += Int64(n)
            }
            let digest = Array(hasher.finalize())
            guard Digest.hex(digest) == entry.sha256 else {
                throw CofferError(.failed, operation: "repack", subject: sourcePath,
                                  cause: "\(PathText.display(entry.name)) does not match its record; nothing was deleted",
                                  hint: "`coffer verify --repo --read-data` names the damage")
            }
            try writer.endFile(digest: digest)
            offsets[offset] = newOffset
        }
        let result = try writer.finish()
        try repository.storage.commit(pending)
        committed = true
        return (Snapshot.Pack(name: name, size: result.size, sha256: result.sha256), offsets)
    }

    /// Writes a snapshot's record again with its references moved, and replaces it atomically.
    func rewrite(_ snap: Snapshot, moved: [EntryKey: EntryKey], newPacks: [String: Snapshot.Pack], repository: Repository) throws {
        var header = snap.header
        header.format = Snapshot.formatVersion
        var summary = snap.summary
        var usedNew = Set<String>()
        func move(_ pack: String, _ offset: Int64) throws -> (String, Int64) {
            guard newPacks[pack] != nil else { return (pack, offset) }
            guard let target = moved[EntryKey(pack: pack, offset: offset)] else {
                throw CofferError(.failed, operation: "prune", subject: snap.id, cause: "an entry it needs was not repacked (pack \(pack), offset \(offset))")
            }
            usedNew.insert(target.pack)
            return (target.pack, target.offset)
        }
        let record = try repository.storage.create("snapshots/\(snap.id).jsonl")
        var committed = false
        defer { if !committed { repository.storage.discard(record) } }
        let writer = try SnapshotWriter(pending: record, header: header)
        try repository.reader(for: snap).files { file in
            var file = file
            (file.pack, file.offset) = try move(file.pack, file.offset)
            try writer.line(file)
        }
        (summary.database.pack, summary.database.offset) = try move(summary.database.pack, summary.database.offset)
        var repacked = (summary.repacked ?? []).filter { !newPacks.keys.contains($0.name) }
        repacked += newPacks.values.filter { usedNew.contains($0.name) }.sorted { $0.name < $1.name }
        summary.repacked = repacked.isEmpty ? nil : repacked
        // The lists are copied as they are, once checked: a damaged one stops the prune
        // instead of being carried into the new record.
        try writer.summary(summary, rawLists: try repository.reader(for: snap).checkedRawLists())
        try writer.flush()
        try repository.storage.commit(record)
        committed = true
    }
}

/// What `coffer prune` did (or would do). Encoded as the `--json` document.
public struct PruneReport: Sendable, Codable {
    public struct Kept: Sendable, Codable, Equatable {
        public var id: String
        public var time: String
        public var reasons: [String]
    }

    public var command = "prune"
    public var repository: String
    public var dryRun: Bool
    public var kept: [Kept] = []
    public var forgotten: [String] = []
    public var packsDeleted: [String] = []
    public var packsRepacked: [String] = []
    public var recordsRewritten = 0
    /// Estimated in a dry run.
    public var bytesFreed: Int64 = 0
    public var verify: RepositoryReport?
    public var seconds: Double = 0

    public var status: ExitStatus { verify?.status ?? .ok }

    enum CodingKeys: String, CodingKey {
        case command, repository, dryRun = "dry_run", kept, forgotten, packsDeleted = "packs_deleted", packsRepacked = "packs_repacked"
        case recordsRewritten = "records_rewritten", bytesFreed = "bytes_freed", verify, seconds
    }

    public func text() -> String {
        var lines = [(dryRun ? "dry run: would keep " : "kept ") + "\(kept.count) snapshot(s), " + (dryRun ? "forget " : "forgot ")
                     + "\(forgotten.count); packs: \(packsDeleted.count) " + (dryRun ? "to delete" : "deleted")
                     + ", \(packsRepacked.count) " + (dryRun ? "to repack" : "repacked") + " (\(Formatting.bytes(bytesFreed))" + (dryRun ? " to free)" : " freed)")]
        for item in kept { lines.append("  keep \(item.id)  \(item.reasons.joined(separator: ", "))") }
        for id in forgotten { lines.append("  forget \(id)") }
        if let verify { lines.append(verify.text()) }
        return lines.joined(separator: "\n")
    }
}
