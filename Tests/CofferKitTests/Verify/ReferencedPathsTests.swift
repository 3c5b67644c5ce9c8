@testable import CofferKit
import Testing

/// The set of referenced paths behaves as a set: duplicates count once, a removal hides one
/// path and only that one, and each path is found after thousands of others.
@Suite struct ReferencedPathsTests {
    @Test func behavesAsASetOfPaths() {
        var paths = ReferencedPaths()
        let all = (0..<5000).map { PathBytes("/media/library/uploader \($0 % 97)/title \($0).mkv".utf8) }
        for path in all.reversed() { paths.insert(path) }
        paths.insert(all[7]) // a second media row with the same file
        paths.insert(PathBytes([0x2F, 0xE9, 0x80, 0xFF])) // not UTF-8
        paths.seal()
        #expect(paths.count == 5001)
        #expect(all.allSatisfy(paths.contains))
        #expect(paths.contains(PathBytes([0x2F, 0xE9, 0x80, 0xFF])))
        #expect(!paths.contains(PathBytes("/media/library/uploader 0/title 5000.mkv".utf8)))
        #expect(!paths.contains(PathBytes()))

        paths.remove(all[7])
        paths.remove(all[7])
        paths.remove(PathBytes("/not/there".utf8))
        #expect(paths.count == 5000)
        #expect(!paths.contains(all[7]))
        #expect(paths.contains(all[6]) && paths.contains(all[8]))
    }

    @Test func anEmptySetHoldsNothing() {
        var paths = ReferencedPaths()
        #expect(paths.count == 0)
        #expect(!paths.contains(PathBytes("/a".utf8)))
        paths.seal()
        paths.remove(PathBytes("/a".utf8))
        #expect(paths.count == 0)
    }
}
