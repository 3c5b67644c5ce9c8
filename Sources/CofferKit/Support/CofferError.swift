import Foundation

/// An error Coffer reports to the operator.
///
/// It names the operation, the thing it was done to and the cause, and, when there is a next
/// step, a hint naming it. Its ``status`` is the exit code the process ends with.
/// Rendered as `error: operation path: cause` followed by `hint: ...`.
public struct CofferError: Error, LocalizedError, Equatable, Sendable {
    public var status: ExitStatus
    /// What Coffer was doing, lowercase: "open database", "read config file".
    public var operation: String
    /// The file, directory or setting concerned, when there is one.
    public var subject: String?
    /// Why it failed.
    public var cause: String
    /// What the operator can do next.
    public var hint: String?
    /// The POSIX error behind it, when a system call failed (``system(_:_:errno:hint:)``).
    public var errno: Int32?
    /// The stored bytes themselves are missing or changed (a digest, a decoding, a read past
    /// the end), as opposed to the place the work was done in, the network or a stop.
    public var storedBytesDamaged = false

    public init(_ status: ExitStatus, operation: String, subject: String? = nil, cause: String, hint: String? = nil) {
        self.status = status
        self.operation = operation
        self.subject = subject
        self.cause = cause
        self.hint = hint
    }

    public var errorDescription: String? { message }

    /// `operation subject: cause`.
    public var message: String {
        if let subject { return "\(operation) \(subject): \(cause)" }
        return "\(operation): \(cause)"
    }

    /// A usage error (exit 64) about one configuration variable.
    public static func badSetting(_ name: String, _ value: String, _ cause: String, hint: String? = nil) -> CofferError {
        CofferError(.usage, operation: "read setting", subject: name, cause: "\(cause) (got \(quoted(value)))", hint: hint)
    }

    /// A failure (exit 2) because bytes that should be there are not: an object missing, a
    /// file shorter than what is read of it, a range no object has. Marked
    /// ``storedBytesDamaged``: where the bytes are a backup's, that is damage to it.
    public static func missing(_ operation: String, _ subject: String, cause: String) -> CofferError {
        var error = CofferError(.failed, operation: operation, subject: subject, cause: cause)
        error.storedBytesDamaged = true
        return error
    }

    /// A failure (exit 2) from a POSIX call. A full disk and a file size limit get their hint
    /// unless the caller gives one; a full disk also says what is free there now (of what size).
    public static func system(_ operation: String, _ path: String, errno code: Int32, hint: String? = nil) -> CofferError {
        var cause = String(cString: strerror(code))
        if code == ENOSPC {
            if case .success(let space) = FileSystem.freeSpace(FileSystem.nearestExisting(path)) {
                cause += " (\(Formatting.bytes(Int64(clamping: space.available))) free of \(Formatting.bytes(Int64(clamping: space.total))) there)"
            }
        }
        var error = CofferError(.failed, operation: operation, subject: path, cause: cause, hint: hint ?? defaultHint(errno: code))
        error.errno = code
        return error
    }

    static func defaultHint(errno code: Int32) -> String? {
        switch code {
        case ENOSPC: return "free space on that filesystem, then run again"
        case EDQUOT: return "a disk quota of this user is full there: free space or raise the quota, then run again"
        case EFBIG: return "this process has a file size limit (`ulimit -f`): raise it, or run without it"
        case EIO: return "the disk or filesystem reported an error: check it (`dmesg`, its SMART data) before running again"
        case EROFS: return "that filesystem is read-only (a filesystem remounted read-only after errors? see `dmesg`): make it writable, or choose another path"
        case EACCES, EPERM: return "the user running coffer may not do this there: check the owner and mode of that path and of the folders above it"
        default: return nil
        }
    }

    static func quoted(_ value: String) -> String {
        "\"" + value.replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}
