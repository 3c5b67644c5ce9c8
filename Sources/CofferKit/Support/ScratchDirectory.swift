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
}
