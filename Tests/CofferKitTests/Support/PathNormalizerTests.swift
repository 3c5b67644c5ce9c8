@testable import CofferKit
import Testing

@Suite struct PathNormalizerTests {
    /// The rule, written the plain way: split on `/`, drop empty and `.` components.
    static func reference(_ path: PathBytes, under base: PathBytes) -> PathBytes {
        let slash = UInt8(ascii: "/")
        let full = path.first == slash ? path : base + [slash] + path
        let kept = full.split(separator: slash).filter { $0.count != 1 || $0.first != UInt8(ascii: ".") }
        return kept.isEmpty ? [slash] : kept.flatMap { [slash] + $0 }
    }

    @Test func examples() {
        let base = PathBytes("/media".utf8)
        func normalized(_ text: String) -> String { String(decoding: PathNormalizer.absolute(PathBytes(text.utf8), under: base), as: UTF8.self) }
        #expect(normalized("/media/library/a.mkv") == "/media/library/a.mkv")
        #expect(normalized("/media//library/./a.mkv") == "/media/library/a.mkv")
        #expect(normalized("/media/library/") == "/media/library")
        #expect(normalized("/media/library/.") == "/media/library")
        #expect(normalized("/media/../etc/.hidden") == "/media/../etc/.hidden") // `..` taken literally
        #expect(normalized("library/a.mkv") == "/media/library/a.mkv")
        #expect(normalized("./library/a.mkv") == "/media/library/a.mkv")
        #expect(normalized("/") == "/")
        #expect(normalized("//") == "/")
    }

    /// Every path of up to seven bytes over `/`, `.`, `a` and a byte that is not UTF-8, absolute
    /// and relative: the fast path for clean paths gives what the plain rule gives.
    @Test func everyShortPathAgreesWithThePlainRule() {
        let alphabet: [UInt8] = [UInt8(ascii: "/"), UInt8(ascii: "."), UInt8(ascii: "a"), 0xFF]
        let base = PathBytes("/m/./x".utf8)
        var paths: [PathBytes] = [[]]
        var checked = 0
        for _ in 0..<7 {
            paths = paths.flatMap { path in alphabet.map { path + [$0] } }
            for path in paths {
                #expect(PathNormalizer.absolute(path, under: base) == Self.reference(path, under: base), "\(path)")
                checked += 1
            }
        }
        #expect(checked > 20_000)
    }
}
