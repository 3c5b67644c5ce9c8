import Foundation

/// A progress line on stderr (bytes, rate, ETA), redrawn at most four times a second. Made only
/// when stderr is a terminal and the run is not quiet, so cron mail stays clean.
public final class Progress {
    let label: String
    var total: Int64 = 0
    var done: Int64 = 0
    var started = Date()
    var lastDraw = Date.distantPast

    public init?(label: String, enabled: Bool) {
        guard enabled, isatty(2) == 1 else { return nil }
        self.label = label
    }

    public func start(total: Int64) {
        self.total = total
        started = Date()
    }

    public func advance(by bytes: Int64) {
        done += bytes
        let now = Date()
        guard now.timeIntervalSince(lastDraw) >= 0.25 else { return }
        lastDraw = now
        let elapsed = max(now.timeIntervalSince(started), 0.001)
        let rate = Double(done) / elapsed
        let eta = rate > 0 ? Double(max(total - done, 0)) / rate : 0
        let percent = total > 0 ? Int(Double(done) * 100 / Double(total)) : 100
        let line = "\r\(label) \(percent)% \(Formatting.bytes(done)) of \(Formatting.bytes(total)), \(Formatting.bytes(Int64(rate)))/s, ETA \(Formatting.age(seconds: eta))\u{1B}[K"
        FileHandle.standardError.write(Data(line.utf8))
    }

    public func finish() {
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
