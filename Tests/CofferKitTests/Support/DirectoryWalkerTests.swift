@testable import CofferKit
import Foundation
import SystemPackage
import Testing

@Suite struct DirectoryWalkerTests {
    /// The sorted walk lists whole paths in byte order, the order of snapshot records, without
    /// holding the tree: names that are prefixes of each other, bytes below and above `/`,
    /// non-UTF-8 names.
    @Test func sortedWalkGivesWholePathsInByteOrder() throws {
        let directory = try TemporaryDirectory()
        let root = PathBytes(directory.child("root").utf8)
        let files: [PathBytes] = [
            "a", "a-b", "a0", "ab/x", "a.d/y", "b/c/d", "b/c-d", "b/c/d-e/f", "b-c", "z", "dir/sub/deep/file",
            "dir/sub-/x", "dir/sub!/x", "dir/sub0", " space", "~tilde",
        ].map { PathBytes($0.utf8) } + [[0x6E, 0xFF, 0x2F, 0x66], [0x6E, 0x2D, 0x66], [0xC3, 0xA9, 0x2F, 0x78]]
        for file in files {
            let full = root.appendingComponent(file)
            var prefix = root
            _ = prefix.withCPath { mkdir($0, 0o755) }
            for component in file.split(separator: 0x2F).dropLast() {
                prefix = prefix.appendingComponent(Array(component))
                _ = prefix.withCPath { mkdir($0, 0o755) }
            }
            let fd = full.withCPath { open($0, O_WRONLY | O_CREAT, 0o644) }
            #expect(fd >= 0)
            close(fd)
        }
        var sorted: [PathBytes] = []
        try DirectoryWalker(root: root).walkSorted { entry in
            if entry.kind != .directory { sorted.append(entry.relativePath) }
        }
        #expect(sorted == files.sorted { $0.lexicographicallyPrecedes($1) })
        #expect(sorted.count == files.count)
    }

    /// The cursor opens files below its root by relative path, across folders in any order, and
    /// never through a folder that is a link: the error is the folder's (ENOENT when missing).
    @Test func cursorOpensFilesByRelativePathWithoutFollowingFolderLinks() throws {
        let directory = try TemporaryDirectory()
        let root = directory.child("root")
        for folder in ["root", "root/a", "root/a/b", "root/c", "elsewhere"] { #expect(mkdir(directory.child(folder), 0o755) == 0) }
        let names = ["top", "a/one", "a/b/two", "a/three", "c/four", "a/b/five"]
        for name in names + ["../elsewhere/six"] {
            try Data(name.utf8).write(to: URL(fileURLWithPath: root + "/" + name))
        }
        #expect(symlink(directory.child("elsewhere"), root + "/linked") == 0)
        /// The file's text, or the errno of its opening.
        func contents(_ cursor: DirectoryCursor, _ relative: String) -> Result<String, Errno> {
            let fd = cursor.openFile(PathBytes(relative.utf8), flags: O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            guard fd >= 0 else { return .failure(Errno(rawValue: errno)) }
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 64)
            let n = read(fd, &buffer, buffer.count)
            return .success(String(decoding: buffer.prefix(max(n, 0)), as: UTF8.self))
        }
        let cursor = DirectoryCursor(root: PathBytes(root.utf8))
        for name in names { #expect(contents(cursor, name) == .success(name)) }
        let throughLink = contents(cursor, "linked/six")
        #expect(throughLink == .failure(.tooManySymbolicLinkLevels) || throughLink == .failure(.notDirectory))
        #expect(contents(cursor, "gone/file") == .failure(.noSuchFileOrDirectory))
        #expect(contents(cursor, "a/gone") == .failure(.noSuchFileOrDirectory))
        #expect(contents(cursor, "a/one") == .success("a/one"))
        // A root that cannot be opened: each file by its whole path (and its reason).
        let missing = DirectoryCursor(root: PathBytes(directory.child("no-root").utf8))
        #expect(contents(missing, "top") == .failure(.noSuchFileOrDirectory))
        let plain = DirectoryCursor(root: PathBytes((root + "/top").utf8))
        #expect(contents(plain, "x") == .failure(.notDirectory))
    }
}
