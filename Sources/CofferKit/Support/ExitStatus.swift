/// The process exit codes Coffer documents (README, "Exit codes").
///
/// Every command ends with one of these; the executable maps them in one place.
public enum ExitStatus: Int32, Sendable, Codable {
    /// Done; for a check, nothing found.
    case ok = 0
    /// Done, with findings: a check found problems or a threshold was crossed.
    case findings = 1
    /// Failed: the operation did not complete, and nothing was left half-done.
    case failed = 2
    /// Another coffer run holds the lock on this repository or volume.
    case locked = 3
    /// Usage: bad flag, bad value, missing configuration.
    case usage = 64
    /// Interrupted, after cleaning up.
    case interrupted = 130
}
