import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One run at a time on a repository in a bucket, for runs on any host: a small lock object
/// `locks/ID.json` naming its holder and when it expires. The holder renews it while it runs
/// and deletes it at the end. A lock past its expiry is stale and removed by the next run; so
/// is one left on this host by a process that is gone (a `kill -9`), at once.
///
/// Taking a lock: drop stale locks, refuse when a live one conflicts (any lock for an exclusive
/// run, an exclusive one for a shared run), write ours, then look again: of two runs that
/// wrote at the same moment, the one whose lock sorts first keeps it, the other withdraws.
public final class ObjectLock: @unchecked Sendable {
    struct Record: Codable {
        var pid: Int32
        var host: String
        var command: String
        var started: String
        var exclusive: Bool
        /// Seconds since 1970.
        var expires: Double
    }

    /// How long a lock lives without being renewed; renewed every third of it.
    public static let lifetime: TimeInterval = 300

    let storage: RepositoryStorage
    let name: String
    private var record: Record
    private let renewal = DispatchSemaphore(value: 0)
    private var renewer: Thread?
    private let lifetime: TimeInterval

    private init(storage: RepositoryStorage, name: String, record: Record, lifetime: TimeInterval) {
        self.storage = storage
        self.name = name
        self.record = record
        self.lifetime = lifetime
    }

    deinit {
        renewal.signal()
        try? storage.delete(name)
    }

    public static func acquire(_ storage: RepositoryStorage, exclusive: Bool, command: String,
                               lifetime: TimeInterval = ObjectLock.lifetime, now: Date = Date()) throws -> ObjectLock {
        let host = ProcessInfo.processInfo.hostName
        try refuseIfHeld(storage, exclusive: exclusive, except: nil)
        let id = "\(Snapshot.makeID(now))-\(host.prefix(32))-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            .map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "_" }
        let name = "locks/" + String(id) + ".json"
        let record = Record(pid: getpid(), host: host, command: command, started: UTCTime.iso8601(now, fractions: false),
                            exclusive: exclusive, expires: now.timeIntervalSince1970 + lifetime)
        let lock = ObjectLock(storage: storage, name: name, record: record, lifetime: lifetime)
        try lock.write()
        // Two runs that wrote at the same moment: the later-sorting one withdraws.
        do {
            try refuseIfHeld(storage, exclusive: exclusive, except: name, onlyBefore: name)
        } catch {
            try? storage.delete(name)
            lock.renewal.signal()
            throw error
        }
        lock.startRenewing()
        return lock
    }

    private func write() throws {
        let pending = try storage.create(name)
        do {
            try JSONEncoder().encode(record).withUnsafeBytes { try pending.write($0) }
            try storage.commit(pending)
        } catch {
            storage.discard(pending)
            throw error
        }
    }

    private func startRenewing() {
        let thread = Thread { [weak self, renewal, lifetime] in
            while renewal.wait(timeout: .now() + lifetime / 3) == .timedOut {
                guard let self else { return }
                self.record.expires = Date().timeIntervalSince1970 + lifetime
                try? self.write()
            }
        }
        thread.start()
        renewer = thread
    }

    /// Throws `.locked` naming a live holder that conflicts; removes stale locks on the way.
    /// With `onlyBefore`, only locks sorting before that name count (the race check).
    static func refuseIfHeld(_ storage: RepositoryStorage, exclusive: Bool, except: String?, onlyBefore: String? = nil) throws {
        let now = Date().timeIntervalSince1970
        let host = ProcessInfo.processInfo.hostName
        for other in try storage.list("locks") where other != except && other.hasSuffix(".json") {
            guard let data = try? storage.get(other), let holder = try? JSONDecoder().decode(Record.self, from: data) else { continue }
            let gone = holder.host == host && kill(holder.pid, 0) != 0 && errno == ESRCH
            if holder.expires < now || gone {
                try? storage.delete(other)
                continue
            }
            if let onlyBefore, !(other < onlyBefore) { continue }
            guard exclusive || holder.exclusive else { continue }
            let until = Date(timeIntervalSince1970: holder.expires)
            throw CofferError(.locked, operation: "lock repository", subject: storage.location,
                              cause: "held by coffer \(holder.command), pid \(holder.pid) on \(holder.host), started \(holder.started) (lock \(other), renewed while it runs, stale after \(UTCTime.iso8601(until, fractions: false)))",
                              hint: "wait for it to finish; a lock left by a run that was killed is ignored once it expires")
        }
    }
}
