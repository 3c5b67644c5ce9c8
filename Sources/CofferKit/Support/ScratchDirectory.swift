import Foundation

/// A private (0700) folder for intermediate files, removed by ``remove()``.
struct ScratchDirectory {
    let path: String

    init(prefix: String, in parent: String = NSTemporaryDirectory()) throws {
        var template = Array(((parent as NSString).appendingPathComponent("\(prefix).XXXXXX")).utf8CString)
        guard let made = mkdtemp(&template) else { throw CofferError.system("create directory in", parent, errno: errno) }
        path = String(cString: made)
    }

    func remove() { FileSystem.removeTree(path) }

    /// Removes the folders in `directory` made with a prefix `prefix` + pid (``init(prefix:in:)``)
    /// by processes that are gone (killed before they removed them).
    static func sweep(in directory: String, prefix: String) {
        try? DirectoryWalker(root: directory).list { entry in
            guard entry.kind == .directory, let name = String(validating: entry.relativePath, as: UTF8.self),
                  name.hasPrefix(prefix), let pid = Int32(name.dropFirst(prefix.count).prefix { $0 != "." }),
                  kill(pid, 0) != 0, errno == ESRCH else { return }
            FileSystem.removeTree(PathBytes(directory.utf8).appendingComponent(entry.relativePath))
        }
    }
}
