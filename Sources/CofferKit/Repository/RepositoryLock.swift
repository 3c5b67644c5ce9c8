import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One run at a time per repository: an `flock` on `REPO/lock`.
///
/// Writers (backup) take it exclusively, readers (snapshots, verify, restore) shared. The lock
/// belongs to the open file description, so it dies with its process: a `kill -9` leaves no
/// stale lock to remove by hand. The exclusive holder writes its pid, host and start time into
/// the file, so a run that finds it taken can say who holds it.
public final class RepositoryLock {
    public struct Holder: Codable, Sendable {
        public var pid: Int32
        public var host: String
        public var command: String
        public var started: String
    }

    let fd: Int32
    let exclusive: Bool

    private init(fd: Int32, exclusive: Bool) {
        self.fd = fd
        self.exclusive = exclusive
    }

    deinit {
        if exclusive { ftruncate(fd, 0) }
        flock(fd, LOCK_UN)
        close(fd)
    }

    /// `what`: what the lock guards, for the message ("repository", "export folder").
    public static func acquire(_ path: String, exclusive: Bool, command: String, what: String = "repository") throws -> RepositoryLock {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CofferError.system("open lock", path, errno: errno) }
        let code = FileSystem.tryLock(fd, exclusive: exclusive)
        if code != 0 {
            let holder = (try? Data(contentsOf: URL(fileURLWithPath: path))).flatMap { try? JSONDecoder().decode(Holder.self, from: $0) }
            close(fd)
            guard code == EWOULDBLOCK else { throw CofferError.system("lock", path, errno: code) }
            let who = holder.map { "coffer \($0.command), pid \($0.pid) on \($0.host), started \($0.started)" } ?? "another coffer run"
            throw CofferError(.locked, operation: "lock \(what)", subject: PathText.parent(path),
                              cause: "held by \(who)", hint: "wait for it to finish; the lock goes away with its process")
        }
        let lock = RepositoryLock(fd: fd, exclusive: exclusive)
        if exclusive {
            let holder = Holder(pid: getpid(), host: ProcessInfo.processInfo.hostName, command: command,
                                started: UTCTime.iso8601(Date(), fractions: false))
            if let data = try? JSONEncoder().encode(holder) {
                ftruncate(fd, 0)
                _ = data.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
            }
        }
        return lock
    }
}
