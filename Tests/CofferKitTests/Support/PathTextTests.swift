import CofferKit
import Testing

@Suite struct PathTextTests {
    @Test func validUTF8IsKept() {
        #expect(PathText.display("/media/library/Café 🎬/x.mkv") == "/media/library/Café 🎬/x.mkv")
        #expect(PathText.display("Cafe\u{0301}") == "Cafe\u{0301}")
    }

    @Test func controlCharactersAndBackslashesAreEscaped() {
        #expect(PathText.display("a\nb\tc\rd\u{1}e\\f") == "a\\nb\\tc\\rd\\x01e\\\\f")
    }

    @Test func bytesThatAreNotUTF8BecomeHexEscapes() {
        let bytes: [UInt8] = Array("raw-".utf8) + [0xE9, 0x80, 0xFF] + Array("-é".utf8)
        #expect(PathText.display(bytes) == "raw-\\xE9\\x80\\xFF-é")
        #expect(!PathText.isUTF8(bytes))
        // A literal backslash-x in a valid name cannot be confused with an escape.
        #expect(PathText.display("raw-\\xE9") != PathText.display([0x72, 0x61, 0x77, 0x2D, 0xE9]))
    }

    @Test func truncatedSequenceAtTheEnd() {
        #expect(PathText.display([0x61, 0xE2, 0x82]) == "a\\xE2\\x82")
    }
}

@Suite struct PathParentTests {
    @Test func parentsOfEveryShape() {
        let cases: [(String, String)] = [
            ("/a/b", "/a"), ("/a", "/"), ("/", "/"), ("a", "."), ("o", "."), ("a/b", "a"), ("a/b/", "a"),
            ("/a//b", "/a"), ("//a", "/"), ("./x", "."), ("../y", ".."), ("/media/library/Café 🎬/x.mkv", "/media/library/Café 🎬"),
        ]
        for (path, parent) in cases { #expect(PathText.parent(path) == parent, "\(path)") }
    }
}
