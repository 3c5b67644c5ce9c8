import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One run at a time per repository: an `flock` on `REPO/lock`.
///
/// Writers (backup) take it exclusively, readers (snapshots, verify, restore) shared. The lock
/// belongs to the open file description, so it dies with its process: a `kill -9` leaves no
/// stale lock to remove by hand. A run that finds it taken names who holds it: the processes
/// that hold it, from the kernel's list of locks (`/proc/locks`: the readers too, and never a
/// process that is gone), with their start time; the exclusive holder also writes its pid,
/// host, command and start time into the file (for a system without `/proc`).
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
            let live = holders(of: fd)
            close(fd)
            guard code == EWOULDBLOCK else { throw CofferError.system("lock", path, errno: code) }
            // The written holder only while it holds the lock (a killed one leaves its line).
            func named(_ holder: Holder) -> String { "coffer \(holder.command), pid \(holder.pid) on \(holder.host), started \(holder.started)" }
            let described = live.map { pid in holder.flatMap { $0.pid == pid ? named($0) : nil } ?? describe(pid: pid) }
            // Without /proc/locks (or a filesystem whose device it names otherwise): the
            // written holder, if that process still lives.
            let written = holder.flatMap { kill($0.pid, 0) == 0 || errno == EPERM ? named($0) : nil }
            let who = described.isEmpty ? written ?? "another coffer run" : described.joined(separator: "; ")
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

    /// The pids of the processes holding an `flock` on the file open at `fd` (Linux's
    /// `/proc/locks`: `1: FLOCK  ADVISORY  READ 668 fe:00:16261746 0 EOF`, the device's major
    /// and minor in hex); empty where that list cannot be read.
    static func holders(of fd: Int32) -> [Int32] {
        var st = stat()
        guard fstat(fd, &st) == 0, let text = try? String(contentsOfFile: "/proc/locks", encoding: .utf8) else { return [] }
        let dev = UInt64(st.st_dev)
        let major = ((dev >> 8) & 0xFFF) | ((dev >> 32) & 0xFFFF_F000), minor = (dev & 0xFF) | ((dev >> 12) & 0xFFFF_FF00)
        let file = String(major, radix: 16).leftPadded(to: 2) + ":" + String(minor, radix: 16).leftPadded(to: 2) + ":\(st.st_ino)"
        var pids: [Int32] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6, fields[1] == "FLOCK", fields[5] == file, let pid = Int32(fields[4]), !pids.contains(pid) else { continue }
            pids.append(pid)
        }
        return pids
    }

    /// `coffer verify, pid 123 on HOST, started TIME` for a process on this machine (from /proc).
    static func describe(pid: Int32) -> String {
        let argv = ((try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()).split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        var name = argv.first.map { ($0 as NSString).lastPathComponent } ?? "process"
        if name == "coffer", argv.count > 1 { name += " " + argv[1] }
        var text = "\(name), pid \(pid) on \(ProcessInfo.processInfo.hostName)"
        if let started = startTime(pid: pid) { text += ", started \(UTCTime.iso8601(started, fractions: false))" }
        return text
    }

    /// When process `pid` started: its start in clock ticks after boot (field 22 of
    /// /proc/PID/stat, counted after the parenthesised name), plus the boot time (/proc/stat).
    static func startTime(pid: Int32) -> Date? {
        // Bytes: the name in parentheses is the process's, any bytes at all.
        guard let stat = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/stat")),
              let close = stat.lastIndex(of: UInt8(ascii: ")")),
              let boot = (try? String(contentsOfFile: "/proc/stat", encoding: .utf8))?.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }),
              let bootSeconds = Double(boot.dropFirst(6)) else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: UInt8(ascii: " "))
        guard fields.count > 19, let ticks = Double(String(decoding: fields[fields.startIndex + 19], as: UTF8.self)) else { return nil }
        return Date(timeIntervalSince1970: bootSeconds + ticks / Double(sysconf(Int32(_SC_CLK_TCK))))
    }
}
