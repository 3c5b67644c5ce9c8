@testable import CofferKit
import Crypto
import Foundation
import Testing

@Suite struct HashPipelineTests {
    /// The pipeline's digests are SHA-256 of the entries, and its pack digest the FORMAT.md one:
    /// other bytes and each entry's digest, in order.
    @Test func digestsMatchHashingInOrder() {
        let pipeline = HashPipeline(buffers: 2, size: 1000)
        var expectedPack = SHA256()
        var expected: [SHA256Value] = []
        for entry in 0..<50 {
            let header = [UInt8](repeating: UInt8(entry), count: 7 + entry)
            header.withUnsafeBytes { pipeline.packBytes($0) }
            expectedPack.update(data: header)
            var entryHasher = SHA256()
            for chunk in 0..<(entry % 4) {
                let slot = pipeline.acquire()
                let count = 1 + (entry * 37 + chunk * 101) % slot.count
                for i in 0..<count { slot[i] = UInt8(truncatingIfNeeded: i &* 31 &+ entry) }
                entryHasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: slot[0..<count]))
                pipeline.entryData(slot, count: count)
            }
            pipeline.endEntry(entry)
            let digest = entryHasher.finalize()
            digest.withUnsafeBytes { expectedPack.update(bufferPointer: $0) }
            expected.append(SHA256Value(digest))
        }
        pipeline.drain()
        for entry in 0..<50 { #expect(pipeline.takeDigest(entry) == expected[entry]) }
        #expect(pipeline.takeDigest(0) == nil)
        #expect(pipeline.finish() == Digest.hex(expectedPack.finalize()))
    }

    /// A run that fails between taking a buffer and handing it over must not trap when the
    /// pipeline goes away (libdispatch traps on a semaphore released below its start).
    @Test func aBufferNeverHandedBackIsNotATrap() {
        var pipeline: HashPipeline? = HashPipeline(buffers: 3, size: 64)
        _ = pipeline?.acquire()
        _ = pipeline?.acquire()
        pipeline = nil
        #expect(pipeline == nil)
    }
}
