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
        for component in path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false) {
            if component.isEmpty { return "empty path component" }
            if component.elementsEqual([0x2E]) || component.elementsEqual([0x2E, 0x2E]) { return "'.' or '..' component" }
            if component.count > maxComponent { return "component longer than \(maxComponent) bytes" }
        }
        return nil
    }

    static func refuse(_ path: PathBytes, _ reason: String, in place: String) -> CofferError {
        CofferError(.failed, operation: "restore", subject: place,
                    cause: "refused \(PathText.display(path)): \(reason); nothing was written to the targets",
                    hint: "the repository may have been tampered with: run `coffer verify --repo --read-data`")
    }
}
