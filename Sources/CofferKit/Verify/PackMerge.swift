import Crypto
#if canImport(Glibc)
import Glibc
#endif

/// `verify --repo --read-data` in memory that does not grow with the repository.
///
/// Every snapshot record lists its files in path byte order, and every pack holds its entries
/// in that same order (a backup writes them as it walks; prune's repacking keeps the order).
/// So the records of all snapshots, merged by path, name each pack's entries in increasing
/// offset order: each pack is read once, front to back, beside the merge, its bytes hashed as
/// the pack digest was made (FORMAT.md: entry bytes into the entry's digest, everything else
/// and each entry's digest into the pack digest). What is held: one cursor per record, one small
/// read window per pack, the database copies' entries.
///
/// When the order does not hold (a record or pack from another writer), `run()` throws
/// ``OutOfOrder`` and the caller falls back to gathering each pack's entries in memory.
final class PackMerge {
    struct OutOfOrder: Error {}

    /// The most records and packs read at once (each holds a descriptor); beyond it, the
    /// fallback.
    static let mostOpen = 400

    let repository: Repository
    let snapshots: [Snapshot]
    /// The packs to read (needed and present), with their sizes.
    let packs: [String: Int64]
    let digests: [String: (size: Int64, sha256: String)]
    let progress: Progress?

    private(set) var bytesRead: Int64 = 0
    private(set) var entriesChecked = 0
    private(set) var damaged: [(key: RepositoryVerifier.EntryKey, message: String)] = []
    private(set) var damagedPacks: [(name: String, message: String)] = []

    private var states: [String: PackState] = [:]
    private let large: UnsafeMutableRawBufferPointer
    private let windowSize: Int

    init(repository: Repository, snapshots: [Snapshot], packs: [String: Int64],
         digests: [String: (size: Int64, sha256: String)], progress: Progress?) {
        self.repository = repository; self.snapshots = snapshots; self.packs = packs
        self.digests = digests; self.progress = progress
        large = .allocate(byteCount: 1 << 20, alignment: 64)
        // Headers and small files are read through a window per pack; 16 MiB in all at most.
        windowSize = max(32 << 10, min(256 << 10, (16 << 20) / max(packs.count, 1)))
    }

    deinit { large.deallocate() }

    typealias Stored = RepositoryVerifier.Entry

    final class PackState {
        let name: String
        let path: String
        let object: ObjectReader
        let size: Int64
        /// Bytes before `position` are hashed.
        var position: Int64 = 0
        var lastOffset: Int64 = -1
        var hasher = SHA256()
        /// An entry past the end was skipped: the pack digest cannot be compared.
        var skipped = false
        /// Entries no file line lists in this pack (database copies, dropped entries), largest
        /// offset first.
        var databases: [Stored] = []
        let window: UnsafeMutableRawBufferPointer
        var windowStart: Int64 = 0
        var windowCount = 0

        init(name: String, object: ObjectReader, size: Int64, windowSize: Int) {
            self.name = name; self.path = object.display; self.object = object; self.size = size
            window = .allocate(byteCount: windowSize, alignment: 64)
        }

        deinit { window.deallocate() }
    }

    func run() throws {
        guard snapshots.count <= Self.mostOpen, packs.count <= Self.mostOpen else { throw OutOfOrder() }
        defer { states = [:] }
        // Entries no file line lists, known by their offset: the database copies, and the
        // entries of files whose reading failed (``Snapshot/Summary/dropped``).
        var databases: [String: [Stored]] = [:]
        for snap in snapshots {
            let db = snap.summary.database
            if packs[db.pack] != nil {
                databases[db.pack, default: []].append(Stored(offset: db.offset, size: db.storedSize, sha256: SHA256Value(hex: db.storedSha256)))
            }
            for entry in snap.summary.dropped ?? [] where packs[entry.pack] != nil {
                databases[entry.pack, default: []].append(Stored(offset: entry.offset, size: entry.size, sha256: SHA256Value(hex: entry.sha256)))
            }
        }
        for name in packs.keys.sorted() {
            let state = try open(name)
            var seen = Set<Int64>()
            state.databases = (databases[name] ?? []).filter { seen.insert($0.offset).inserted }.sorted { $0.offset > $1.offset }
            states[name] = state
        }

        let cursors = try snapshots.map { try repository.reader(for: $0).makeCursor(bufferSize: 64 << 10) }
        var heads = try cursors.map { try $0.next() }
        var group: [(state: PackState, entry: Stored)] = []
        while true {
            var smallest: Int?
            for index in heads.indices {
                guard let head = heads[index] else { continue }
                if let current = smallest, !head.path.lexicographicallyPrecedes(heads[current]!.path) { continue }
                smallest = index
            }
            guard let smallest else { break }
            let path = heads[smallest]!.path
            group.removeAll(keepingCapacity: true)
            for index in heads.indices {
                guard let head = heads[index], head.path == path else { continue }
                if let state = states[head.pack] {
                    group.append((state, Stored(offset: head.offset, size: head.size, sha256: SHA256Value(hex: head.sha256))))
                }
                let next = try cursors[index].next()
                if let next, !path.lexicographicallyPrecedes(next.path) { throw OutOfOrder() }
                heads[index] = next
            }
            if group.count > 1 { group.sort { $0.entry.offset < $1.entry.offset } }
            for (state, entry) in group {
                if entry.offset == state.lastOffset { continue } // the same entry, from another snapshot
                while let db = state.databases.last, db.offset < entry.offset {
                    state.databases.removeLast()
                    try check(state, db)
                }
                try check(state, entry)
            }
        }

        for name in packs.keys.sorted() {
            let state = states[name]!
            while let db = state.databases.popLast() { try check(state, db) }
            try finish(state)
        }
    }

    /// One pack on its own, given every entry it holds (the fallback for records or packs in
    /// another order gathers them in memory): read once, hashed the same way.
    func readPack(_ name: String, entries: [Stored]) throws {
        let state = try open(name)
        for entry in entries.sorted(by: { $0.offset < $1.offset }) {
            guard entry.offset >= state.position else {
                // Two records claim overlapping bytes: the later one cannot be what was stored.
                state.skipped = true
                damaged.append((RepositoryVerifier.EntryKey(pack: name, offset: entry.offset), "its bytes overlap another entry's"))
                continue
            }
            try check(state, entry)
        }
        try finish(state)
    }

    private func open(_ name: String) throws -> PackState {
        PackState(name: name, object: try repository.storage.openReader(name), size: packs[name]!, windowSize: windowSize)
    }

    /// Hashes the rest of the pack and compares its digest with the recorded one.
    private func finish(_ state: PackState) throws {
        var tail = state.hasher
        try feed(state, upTo: state.size) { tail.update(bufferPointer: $0) }
        if let expected = digests[state.name], !state.skipped, expected.size == state.size {
            let digest = Digest.hex(tail.finalize())
            if digest != expected.sha256 {
                damagedPacks.append((state.name, "pack digest \(digest.prefix(16))..., recorded \(expected.sha256.prefix(16))..."))
            }
        }
    }

    /// Hashes the bytes up to the entry into the pack digest, the entry's bytes into its own.
    private func check(_ state: PackState, _ entry: Stored) throws {
        guard entry.offset >= state.position else { throw OutOfOrder() }
        guard entry.offset + entry.size <= state.size else {
            state.skipped = true // reported with the references
            return
        }
        try feed(state, upTo: entry.offset) { state.hasher.update(bufferPointer: $0) }
        var hasher = SHA256()
        try feed(state, upTo: entry.offset + entry.size) { hasher.update(bufferPointer: $0) }
        let digest = hasher.finalize()
        digest.withUnsafeBytes { state.hasher.update(bufferPointer: $0) }
        if SHA256Value(digest) != entry.sha256 {
            damaged.append((RepositoryVerifier.EntryKey(pack: state.name, offset: entry.offset),
                            "its bytes changed (SHA-256 differs from the one recorded)"))
        }
        state.lastOffset = entry.offset
        entriesChecked += 1
    }

    /// Hands the pack's bytes from its position up to `end` to `body`: small ranges through
    /// the pack's window, large ones straight from the file.
    private func feed(_ state: PackState, upTo end: Int64, _ body: (UnsafeRawBufferPointer) -> Void) throws {
        while state.position < end {
            let windowEnd = state.windowStart + Int64(state.windowCount)
            if state.position >= state.windowStart, state.position < windowEnd {
                let from = Int(state.position - state.windowStart)
                let to = Int(min(end, windowEnd) - state.windowStart)
                body(UnsafeRawBufferPointer(rebasing: state.window[from..<to]))
                advance(state, by: to - from)
            } else if end - state.position >= Int64(state.window.count) {
                let n = Int(min(Int64(large.count), end - state.position))
                try state.object.read(into: large.baseAddress!, count: n, at: state.position)
                body(UnsafeRawBufferPointer(rebasing: large[0..<n]))
                advance(state, by: n)
            } else {
                let n = Int(min(Int64(state.window.count), state.size - state.position))
                try state.object.read(into: state.window.baseAddress!, count: n, at: state.position)
                state.windowStart = state.position
                state.windowCount = n
            }
        }
    }

    private func advance(_ state: PackState, by count: Int) {
        state.position += Int64(count)
        bytesRead += Int64(count)
        progress?.advance(by: Int64(count))
    }
}
