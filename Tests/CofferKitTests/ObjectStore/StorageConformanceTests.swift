@testable import CofferKit
import Foundation
import Testing

/// The same promises, proven on both backends: a local directory and an S3 bucket (on the
/// loopback server `make test` starts; skipped with the reason printed when there is none).
@Suite struct StorageConformanceTests {
    /// A directory; a bucket; a bucket on a server that checks every request's signature.
    enum Backend: String, CaseIterable, CustomTestStringConvertible {
        case local, s3, s3Signed
        var testDescription: String { rawValue }
    }

    /// A fresh, empty storage of `backend` (and what keeps it alive), or `nil` when it cannot be had.
    static func storage(_ backend: Backend, _ test: String = #function) throws -> (RepositoryStorage, AnyObject)? {
        let scratch = try TemporaryDirectory()
        switch backend {
        case .local:
            for folder in ["packs", "snapshots", "tmp"] { try FileSystem.makeDirectory(scratch.path + "/" + folder, mode: 0o700) }
            return (LocalStorage(root: scratch.path), scratch)
        case .s3, .s3Signed:
            guard let client = try S3ClientTests.client(test, server: backend == .s3 ? .open : .signed) else { return nil }
            let storage = S3Storage(address: try S3Address("s3://\(client.bucket)/team/coffer"), client: client)
            storage.partSize = 5 << 20
            return (storage, scratch)
        }
    }

    static func put(_ storage: RepositoryStorage, _ name: String, _ data: Data) throws {
        let pending = try storage.create(name)
        try data.withUnsafeBytes { try pending.write($0) }
        try storage.commit(pending)
    }

    @Test(arguments: Backend.allCases)
    func objectsAppearWholeAndOnlyWhenCommitted(_ backend: Backend) throws {
        guard let (storage, keep) = try Self.storage(backend) else { return }
        defer { withExtendedLifetime(keep) {} }
        let big = S3ClientTests.bytes((5 << 20) + 4321, seed: 3) // more than one part on S3
        let pending = try storage.create("packs/one.tar")
        try big.withUnsafeBytes { try pending.write(UnsafeRawBufferPointer(rebasing: $0[..<(3 << 20)])) }
        #expect(try storage.list("packs").isEmpty, "not listed while being written")
        #expect(try storage.size("packs/one.tar") == nil)
        try big.withUnsafeBytes { try pending.write(UnsafeRawBufferPointer(rebasing: $0[(3 << 20)...])) }
        try storage.commit(pending)
        #expect(try storage.list("packs") == ["packs/one.tar"])
        #expect(try storage.size("packs/one.tar") == Int64(big.count))
        #expect(try storage.get("packs/one.tar") == big)

        let dropped = try storage.create("packs/dropped.tar")
        try big.withUnsafeBytes { try dropped.write($0) }
        storage.discard(dropped)
        #expect(try storage.list("packs") == ["packs/one.tar"])
        #expect(try storage.size("packs/dropped.tar") == nil)

        // Listing: only the folder's own objects, in byte order.
        try Self.put(storage, "snapshots/b.jsonl", Data("b".utf8))
        try Self.put(storage, "snapshots/a.jsonl", Data("a".utf8))
        try Self.put(storage, "config.json", Data("{}".utf8))
        #expect(try storage.list("snapshots") == ["snapshots/a.jsonl", "snapshots/b.jsonl"])
        #expect(try storage.list("nothing-here").isEmpty)
        try storage.delete("snapshots/a.jsonl")
        try storage.delete("snapshots/a.jsonl") // missing: not an error
        #expect(try storage.list("snapshots") == ["snapshots/b.jsonl"])
        #expect(throws: CofferError.self) { _ = try storage.get("snapshots/a.jsonl") }
    }

    @Test(arguments: Backend.allCases)
    func rangedReadsGiveExactlyTheBytesAsked(_ backend: Backend) throws {
        guard let (storage, keep) = try Self.storage(backend) else { return }
        defer { withExtendedLifetime(keep) {} }
        let data = S3ClientTests.bytes((9 << 20) + 17, seed: 5) // more than one S3 fetch window
        try Self.put(storage, "packs/r.tar", data)
        #expect(try storage.get("packs/r.tar", offset: 1000, length: 24) == data.subdata(in: 1000..<1024))
        var streamed = Data()
        try storage.read("packs/r.tar", offset: 12, length: Int64(data.count - 12)) { streamed.append(contentsOf: $0) }
        #expect(streamed == data.subdata(in: 12..<data.count))
        #expect(throws: CofferError.self) { try storage.read("packs/r.tar", offset: 5, length: Int64(data.count)) { _ in } }

        let reader = try storage.openReader("packs/r.tar")
        #expect(reader.size == Int64(data.count))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 3 << 20, alignment: 16)
        defer { buffer.deallocate() }
        for (offset, count) in [(0, 10), ((8 << 20) - 5, 10), (4096, 3 << 20), (data.count - 7, 7), (17, 1)] {
            try reader.read(into: buffer.baseAddress!, count: count, at: Int64(offset))
            #expect(Data(buffer[0..<count]) == data.subdata(in: offset..<offset + count), "\(offset)+\(count)")
        }
        #expect(throws: CofferError.self) { try reader.read(into: buffer.baseAddress!, count: 8, at: Int64(data.count - 4)) }
    }

    /// A pack written through the storage and read back by libarchive from it; entries nobody
    /// reads are passed over (on S3: not fetched).
    @Test(arguments: Backend.allCases)
    func packsRoundTripAndSkippedEntriesAreNotFetched(_ backend: Backend) throws {
        guard let (storage, keep) = try Self.storage(backend) else { return }
        defer { withExtendedLifetime(keep) {} }
        let big = S3ClientTests.bytes(24 << 20, seed: 7)
        let pending = try storage.create("packs/p.tar")
        let writer = try ArchiveWriter(output: pending)
        for (name, body) in [("media/library/big.mkv", big), ("media/library/small.txt", Data("small".utf8))] {
            _ = try writer.beginFile(path: PathBytes(name.utf8), size: Int64(body.count), mode: 0o644, modified: 1_700_000_000)
            try body.withUnsafeBytes { try writer.write($0.baseAddress!, count: $0.count) }
            try writer.endFile()
        }
        let result = try writer.finish()
        try storage.commit(pending)
        #expect(try storage.size("packs/p.tar") == result.size)

        let before = (storage as? S3Storage)?.client.bytesReceived ?? 0
        let reader = try ArchiveReader(object: storage.openReader("packs/p.tar"), kind: .tar)
        var text = ""
        while let entry = try reader.next() {
            guard entry.path == PathBytes("media/library/small.txt".utf8) else { continue }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
            defer { buffer.deallocate() }
            text = String(decoding: buffer[0..<(try reader.read(into: buffer))], as: UTF8.self)
        }
        #expect(text == "small")
        #expect(reader.bytesSkipped > Int64(20 << 20))
        if let s3 = storage as? S3Storage {
            #expect(s3.client.bytesReceived - before < Int64(12 << 20), "fetched \(s3.client.bytesReceived - before) bytes of a 24 MiB pack")
        }
    }
}
