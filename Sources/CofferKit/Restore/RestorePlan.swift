/// Checks that a snapshot's file records can only write inside the target.
///
/// A record or pack entry is refused when its path is empty, absolute, has an empty, `.` or
/// `..` component, a component over 255 bytes, a NUL byte, or is longer than 4095 bytes, or
/// when two records name the same path. Only regular files are ever created; modes are masked
/// to 0777 (no setuid, setgid or sticky bits).
enum RestorePlan {
    static let maxComponent = 255
    static let maxPath = 4095

    /// Why `path` (relative to the target) is unsafe, or `nil` when it is fine.
    static func problem(with path: PathBytes) -> String? {
        if path.isEmpty { return "empty path" }
        if path.count > maxPath { return "path longer than \(maxPath) bytes" }
        if path.contains(0) { return "NUL byte in path" }
        if path.first == UInt8(ascii: "/") { return "absolute path" }
        // One pass over the bytes, component by component (a restore checks every path twice).
        return path.withUnsafeBufferPointer { bytes in
            var start = 0
            while start <= bytes.count {
                var end = start
                while end < bytes.count, bytes[end] != UInt8(ascii: "/") { end += 1 }
                let length = end - start
                if length == 0 { return "empty path component" }
                if length <= 2, bytes[start] == 0x2E, length == 1 || bytes[start + 1] == 0x2E { return "'.' or '..' component" }
                if length > maxComponent { return "component longer than \(maxComponent) bytes" }
                start = end + 1
            }
            return nil
        }
    }

    static func refuse(_ path: PathBytes, _ reason: String, in place: String) -> CofferError {
        CofferError(.failed, operation: "restore", subject: place,
                    cause: "refused \(PathText.display(path)): \(reason); nothing was written to the targets",
                    hint: "the repository may have been tampered with: run `coffer verify --repo --read-data`")
    }
}
