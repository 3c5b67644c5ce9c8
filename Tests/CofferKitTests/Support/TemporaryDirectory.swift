import Foundation

/// A fresh directory for one test, removed afterwards unless COFFER_KEEP_TEMP is set (then its
/// path is printed, for debugging).
final class TemporaryDirectory {
    let path: String

    init(_ name: String = "coffer-test", base: String? = nil) throws {
        let root = base ?? ProcessInfo.processInfo.environment["TMPDIR"] ?? NSTemporaryDirectory()
        var template = Array((root as NSString).appendingPathComponent("\(name).XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw CocoaError(.fileWriteUnknown) }
        path = String(cString: made)
    }

    deinit {
        if ProcessInfo.processInfo.environment["COFFER_KEEP_TEMP"] != nil {
            print("kept \(path)")
            return
        }
        // Tests may leave read-only directories behind; make them removable first.
        _ = try? Process.run(URL(fileURLWithPath: "/bin/chmod"), arguments: ["-R", "u+rwx", path]).waitUntilExit()
        try? FileManager.default.removeItem(atPath: path)
    }

    func child(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
}
