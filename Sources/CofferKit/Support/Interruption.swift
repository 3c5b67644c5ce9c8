import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// SIGINT and SIGTERM stop a command cleanly. The signal only sets a flag; the work checks it
/// at safe points (between files, rows, buffers, migrations) and throws an `.interrupted`
/// error there, so the same paths that undo a failure undo an interruption: pending objects
/// discarded, staging and temporary folders removed, transactions rolled back, locks released
/// (the process exits 130). A second signal exits at once, as `kill -9` would: what it leaves
/// is swept by the next run. Commands that do not check (read-only ones, prune whose every
/// step is safe to kill) have not called ``cooperate()``: a signal ends them at once, exit 130.
public enum Interruption {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var received: Int32 = 0
    nonisolated(unsafe) private static var cooperating = false
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []

    /// Installs the handlers (once, at start; the CLI does).
    public static func install() {
        lock.lock()
        defer { lock.unlock() }
        guard sources.isEmpty else { return }
        // Past a file size limit (`ulimit -f`) a write then fails with EFBIG, reported and
        // undone like a full disk, instead of SIGXFSZ killing the process mid-write.
        _ = Glibc.signal(SIGXFSZ, SIG_IGN)
        // A queue of their own: on the global queue the handler would wait for a free worker,
        // and the work's lanes (integrity_check, compression, reconciliation) can hold them all
        // for as long as they run.
        let queue = DispatchQueue(label: "coffer.signals")
        for number in [SIGINT, SIGTERM] {
            _ = Glibc.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler {
                lock.lock()
                let first = received == 0
                if first { received = number }
                let stopsCleanly = cooperating
                lock.unlock()
                if first, stopsCleanly {
                    let text = "coffer: \(number == SIGINT ? "SIGINT" : "SIGTERM") received, stopping cleanly (again to stop at once)\n"
                    FileHandle.standardError.write(Data(text.utf8))
                } else {
                    _exit(ExitStatus.interrupted.rawValue)
                }
            }
            source.resume()
            sources.append(source)
        }
    }

    /// Says this command checks for a stop at its safe points (backup, restore, drill,
    /// export-jobs, migrate up): a signal then sets the flag instead of ending the process.
    public static func cooperate() {
        lock.lock()
        cooperating = true
        lock.unlock()
    }

    /// The signal received, if any.
    public static var signal: Int32? {
        lock.lock()
        defer { lock.unlock() }
        return received == 0 ? nil : received
    }

    /// Throws when a stop was asked for. Call at points where stopping leaves nothing half-done
    /// once the error has unwound.
    public static func check(_ operation: @autoclosure () -> String) throws {
        if let delay = testDelay { Thread.sleep(forTimeInterval: delay) }
        guard let number = signal else { return }
        throw CofferError(.interrupted, operation: operation(), cause: "interrupted by \(number == SIGINT ? "SIGINT" : "SIGTERM")",
                          hint: "nothing was left half-done; run the command again to do the work")
    }

    /// Test-only: every check waits this long, so a signal test can land inside the work.
    static let testDelay = ProcessInfo.processInfo.environment["COFFER_TEST_CHECK_DELAY"].flatMap(Double.init)
}
