import Crypto
import Dispatch

/// Hashing is the main CPU cost of backup and restore (SHA-256 runs at a few hundred MB/s on
/// CPUs without SHA extensions). For large chunks it runs on a second core while the same,
/// unchanging bytes are written; small chunks are not worth the hand-off.
enum Overlap {
    static let threshold = 256 * 1024

    static func hash(_ chunk: UnsafeRawBufferPointer, into hasher: inout SHA256, while work: () throws -> Void) throws {
        guard chunk.count >= threshold else {
            hasher.update(bufferPointer: chunk)
            try work()
            return
        }
        var failure: Error?
        withUnsafeMutablePointer(to: &hasher) { hasherPointer in
            withUnsafeMutablePointer(to: &failure) { failurePointer in
                DispatchQueue.concurrentPerform(iterations: 2) { index in
                    if index == 0 {
                        hasherPointer.pointee.update(bufferPointer: chunk)
                    } else {
                        do { try work() } catch { failurePointer.pointee = error }
                    }
                }
            }
        }
        if let failure { throw failure }
    }
}
