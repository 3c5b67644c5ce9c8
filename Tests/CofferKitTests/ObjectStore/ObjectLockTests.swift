@testable import CofferKit
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Lock objects in a bucket: one writer at a time across hosts, stale locks ignored.
@Suite struct ObjectLockTests {
    static func storage(_ test: String = #function) throws -> S3Storage? {
        guard let client = try S3ClientTests.client(test) else { return nil }
        return S3Storage(address: try S3Address("s3://\(client.bucket)/repo"), client: client)
    }

    /// A lock record as another run would have written it.
    static func plant(_ storage: S3Storage, _ name: String, host: String, pid: Int32, exclusive: Bool, expires: Date) throws {
        let record = ObjectLock.Record(pid: pid, host: host, command: "backup", started: "2026-11-26T00:00:00Z",
                                       exclusive: exclusive, expires: expires.timeIntervalSince1970)
        let pending = try storage.create(name)
        try JSONEncoder().encode(record).withUnsafeBytes { try pending.write($0) }
        try storage.commit(pending)
    }

    @Test func oneWriterAtATimeAndSharedReaders() throws {
        guard let storage = try Self.storage() else { return }
        do {
            let held = try ObjectLock.acquire(storage, exclusive: true, command: "backup")
            #expect(try storage.list("locks").count == 1)
            let second = try #require(throws: CofferError.self) { _ = try ObjectLock.acquire(storage, exclusive: true, command: "backup") }
            #expect(second.status == .locked)
            #expect(second.cause.contains("coffer backup, pid \(getpid()) on \(ProcessInfo.processInfo.hostName)"), "\(second.cause)")
            #expect(throws: CofferError.self) { _ = try ObjectLock.acquire(storage, exclusive: false, command: "verify") }
            withExtendedLifetime(held) {}
        }
        #expect(try storage.list("locks").isEmpty, "released when the holder goes")
        let readerA = try ObjectLock.acquire(storage, exclusive: false, command: "verify")
        let readerB = try ObjectLock.acquire(storage, exclusive: false, command: "snapshots")
        #expect(throws: CofferError.self) { _ = try ObjectLock.acquire(storage, exclusive: true, command: "prune") }
        withExtendedLifetime((readerA, readerB)) {}
    }

    /// Another host's live lock holds until it expires; an expired one, or one of this host
    /// whose process is gone, is removed by the next run.
    @Test func staleLocksAreRemovedLiveOnesHold() throws {
        guard let storage = try Self.storage() else { return }
        try Self.plant(storage, "locks/20261126T000000Z-other-1.json", host: "other-host", pid: 1, exclusive: true,
                       expires: Date().addingTimeInterval(120))
        let blocked = try #require(throws: CofferError.self) { _ = try ObjectLock.acquire(storage, exclusive: true, command: "backup") }
        #expect(blocked.cause.contains("other-host") && blocked.cause.contains("stale after"), "\(blocked.cause)")
        try storage.delete("locks/20261126T000000Z-other-1.json")

        try Self.plant(storage, "locks/20261126T000000Z-other-2.json", host: "other-host", pid: 1, exclusive: true,
                       expires: Date().addingTimeInterval(-1))
        // A pid of this host that no process has (pid_max is far below it).
        try Self.plant(storage, "locks/20261126T000000Z-here-3.json", host: ProcessInfo.processInfo.hostName, pid: 2_000_000_000,
                       exclusive: true, expires: Date().addingTimeInterval(300))
        let lock = try ObjectLock.acquire(storage, exclusive: true, command: "backup")
        #expect(try storage.list("locks") == [lock.name])
    }

    /// The holder renews its lock while it runs, so a long run is not taken for a stale one.
    @Test func theHolderRenewsItsLock() throws {
        guard let storage = try Self.storage() else { return }
        let lock = try ObjectLock.acquire(storage, exclusive: true, command: "backup", lifetime: 1.5)
        let first = try JSONDecoder().decode(ObjectLock.Record.self, from: storage.get(lock.name)).expires
        Thread.sleep(forTimeInterval: 2.2)
        let later = try JSONDecoder().decode(ObjectLock.Record.self, from: storage.get(lock.name)).expires
        #expect(later > first)
        #expect(later > Date().timeIntervalSince1970)
        #expect(throws: CofferError.self) { _ = try ObjectLock.acquire(storage, exclusive: true, command: "backup") }
        withExtendedLifetime(lock) {}
    }
}
