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
    /// by processes that are gone (killed before they removed them). Only this user's: in a
    /// shared folder (`/tmp`) another user's folder of that name is not ours to remove, nor to
    /// walk (it could lead elsewhere by a link). `prefix` names this host where the folder is
    /// shared between hosts: a pid says nothing of another host's processes.
    static func sweep(in directory: String, prefix: String) {
        try? DirectoryWalker(root: directory).list { entry in
            guard entry.kind == .directory, let name = String(validating: entry.relativePath, as: UTF8.self),
                  name.hasPrefix(prefix), let pid = Int32(name.dropFirst(prefix.count).prefix { $0 != "." }),
                  kill(pid, 0) != 0, errno == ESRCH else { return }
            let path = PathBytes(directory.utf8).appendingComponent(entry.relativePath)
            guard case .success(let info) = FileSystem.status(path), info.kind == .directory, info.owner == geteuid() else { return }
            FileSystem.removeTree(path)
        }
    }
}
