@testable import CofferKit
import Foundation
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
}
