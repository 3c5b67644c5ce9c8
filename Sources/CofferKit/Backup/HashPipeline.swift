import Crypto
import Dispatch
import Foundation

/// All the hashing of a pack, on its own thread, in the order the bytes go into the pack: each
/// entry's data into that entry's SHA-256, everything else (headers, padding) and each entry's
/// digest into the pack digest (FORMAT.md). The writing thread only reads and writes.
///
/// Data travels in a ring of buffers: the writer fills one (small files share one, each taking
/// the part after the previous), hands it here and writes the same bytes to the pack; the
/// buffer comes back once hashed. The writer's steps are queued and handed to the hashing
/// thread in batches (when a buffer is full, or after a few hundred steps), not one by one:
/// waking a thread per small file cost more than hashing it. Digests come back by entry number.
final class HashPipeline: @unchecked Sendable {
    private enum Step {
        case entryData(UnsafeRawBufferPointer)
        case packBytes(Range<Int>) // in the batch's copied bytes
        case endEntry(Int)
        case endKnown([UInt8])
        case release
    }

    private let queue = DispatchQueue(label: "coffer.hash")
    private let slots: [UnsafeMutableRawBufferPointer]
    private let free: DispatchSemaphore
    private var next = 0
    /// A part of a buffer smaller than this is not handed out: the buffer goes to be hashed.
    private let smallest: Int
    /// Buffers taken (writing thread) and given back (hashing thread): a run that fails
    /// between the two must not leave the semaphore below its start (libdispatch traps).
    private var acquired = 0
    private var released = 0

    // Touched only by the writing thread.
    private var current: Int?
    private var used = 0
    private var steps: [Step] = []
    private var copied: [UInt8] = []

    // Touched only on `queue`.
    private var packHasher = SHA256()
    private var entryHasher = SHA256()

    private let lock = NSLock()
    private var digests: [Int: SHA256Value] = [:]

    init(buffers: Int = 4, size: Int = 1 << 20) {
        slots = (0..<buffers).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64) }
        free = DispatchSemaphore(value: buffers)
        smallest = max(1, size / 16)
    }

    deinit {
        // Every batch handed to the queue holds the pipeline, so none is pending here (and this
        // may run on the queue itself, after the last one: no `sync` on it).
        for _ in 0..<max(0, acquired - released) { free.signal() }
        for slot in slots { slot.deallocate() }
    }

    /// Space to fill next: the rest of the current buffer, or a fresh one (waits while all are
    /// being hashed).
    func acquire() -> UnsafeMutableRawBufferPointer {
        if let current, slots[current].count - used >= smallest {
            return UnsafeMutableRawBufferPointer(rebasing: slots[current][used...])
        }
        if current != nil { steps.append(.release) }
        current = nil
        handOver()
        free.wait()
        acquired += 1
        current = next
        used = 0
        next = (next + 1) % slots.count
        return slots[current!]
    }

    /// Hashes the first `count` bytes of the space from ``acquire()`` into the current entry.
    func entryData(_ space: UnsafeMutableRawBufferPointer, count: Int) {
        guard count > 0 else { return }
        steps.append(.entryData(UnsafeRawBufferPointer(rebasing: space[0..<count])))
        used += count
        if steps.count >= 512 { handOver() }
    }

    /// Pack bytes outside entry data (copied: the caller's buffer is libarchive's).
    func packBytes(_ bytes: UnsafeRawBufferPointer) {
        let start = copied.count
        copied.appendBytes(bytes)
        steps.append(.packBytes(start..<copied.count))
        if copied.count >= 1 << 20 { handOver() }
    }

    /// Ends the current entry: its digest goes into the pack digest and is kept for `number`.
    func endEntry(_ number: Int) {
        steps.append(.endEntry(number))
        if steps.count >= 512 { handOver() }
    }

    /// Ends an entry whose digest the caller knows (its data was not handed over).
    func endEntry(knownDigest digest: [UInt8]) {
        steps.append(.endKnown(digest))
    }

    /// Gives the queued steps to the hashing thread, in one block.
    private func handOver() {
        guard !steps.isEmpty else { return }
        let batch = steps, bytes = copied
        // The next batch starts with room for one like this one: grown from nothing, the copy
        // of pack bytes was reallocated a dozen times a batch.
        steps = []
        steps.reserveCapacity(batch.count)
        copied = []
        copied.reserveCapacity(bytes.count)
        queue.async { [self] in
            for step in batch {
                switch step {
                case .entryData(let data):
                    entryHasher.update(bufferPointer: data)
                case .packBytes(let range):
                    bytes.withUnsafeBytes { packHasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[range])) }
                case .endEntry(let number):
                    let digest = entryHasher.finalize()
                    entryHasher = SHA256()
                    digest.withUnsafeBytes { packHasher.update(bufferPointer: $0) }
                    lock.lock()
                    digests[number] = SHA256Value(digest)
                    lock.unlock()
                case .endKnown(let digest):
                    entryHasher = SHA256()
                    packHasher.update(data: digest)
                case .release:
                    released += 1
                    free.signal()
                }
            }
        }
    }

    /// The digest of entry `number` if it is done, removed from the pipeline.
    func takeDigest(_ number: Int) -> SHA256Value? {
        lock.lock()
        defer { lock.unlock() }
        return digests.removeValue(forKey: number)
    }

    /// Waits for everything handed over so far (and hands over what is queued).
    func drain() {
        handOver()
        queue.sync {}
    }

    /// The pack digest, once every byte was handed over.
    func finish() -> String {
        if current != nil { steps.append(.release) }
        current = nil
        handOver()
        return queue.sync { Digest.hex(packHasher.finalize()) }
    }
}
