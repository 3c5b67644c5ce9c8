import Crypto
import Dispatch
import Foundation

/// All the hashing of a pack, on its own thread, in the order the bytes go into the pack: each
/// entry's data into that entry's SHA-256, everything else (headers, padding) and each entry's
/// digest into the pack digest (FORMAT.md). The writing thread only reads and writes.
///
/// Data travels in a ring of buffers: the writer fills one, hands it here and writes the same
/// bytes to the pack; the buffer comes back once hashed. Digests come back by entry number.
final class HashPipeline: @unchecked Sendable {
    private let queue = DispatchQueue(label: "coffer.hash")
    private let slots: [UnsafeMutableRawBufferPointer]
    private let free: DispatchSemaphore
    private var next = 0
    /// Buffers taken (writing thread) and given back (hashing thread): a run that fails
    /// between the two must not leave the semaphore below its start (libdispatch traps).
    private var acquired = 0
    private var released = 0

    // Touched only on `queue`.
    private var packHasher = SHA256()
    private var entryHasher = SHA256()

    private let lock = NSLock()
    private var digests: [Int: SHA256Value] = [:]

    init(buffers: Int = 4, size: Int = 1 << 20) {
        slots = (0..<buffers).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64) }
        free = DispatchSemaphore(value: buffers)
    }

    deinit {
        // Every block handed to the queue holds the pipeline, so none is pending here (and this
        // may run on the queue itself, after the last one: no `sync` on it).
        for _ in 0..<max(0, acquired - released) { free.signal() }
        for slot in slots { slot.deallocate() }
    }

    /// The next buffer to fill (waits while all are being hashed).
    func acquire() -> UnsafeMutableRawBufferPointer {
        free.wait()
        acquired += 1
        defer { next = (next + 1) % slots.count }
        return slots[next]
    }

    /// Hashes `count` bytes of a buffer from ``acquire()`` into the current entry, then frees it.
    func entryData(_ slot: UnsafeMutableRawBufferPointer, count: Int) {
        queue.async { [self] in
            entryHasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: slot[0..<count]))
            released += 1
            free.signal()
        }
    }

    /// Pack bytes outside entry data (copied: the caller's buffer is libarchive's).
    func packBytes(_ bytes: UnsafeRawBufferPointer) {
        let copy = [UInt8](bytes)
        queue.async { [self] in packHasher.update(data: copy) }
    }

    /// Ends the current entry: its digest goes into the pack digest and is kept for `number`.
    func endEntry(_ number: Int) {
        queue.async { [self] in
            let digest = entryHasher.finalize()
            entryHasher = SHA256()
            digest.withUnsafeBytes { packHasher.update(bufferPointer: $0) }
            lock.lock()
            digests[number] = SHA256Value(digest)
            lock.unlock()
        }
    }

    /// Ends an entry whose digest the caller knows (its data was not handed over).
    func endEntry(knownDigest digest: [UInt8]) {
        queue.async { [self] in
            entryHasher = SHA256()
            packHasher.update(data: digest)
        }
    }

    /// The digest of entry `number` if it is done, removed from the pipeline.
    func takeDigest(_ number: Int) -> SHA256Value? {
        lock.lock()
        defer { lock.unlock() }
        return digests.removeValue(forKey: number)
    }

    /// Waits for everything handed over so far.
    func drain() { queue.sync {} }

    /// The pack digest, once every byte was handed over.
    func finish() -> String {
        queue.sync { Digest.hex(packHasher.finalize()) }
    }
}
