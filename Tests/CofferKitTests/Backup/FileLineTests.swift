@testable import CofferKit
import Foundation
import Testing

/// The fast codec of snapshot file lines against Foundation's JSON coders.
@Suite struct FileLineTests {
    static let hostilePaths: [PathBytes] = [
        PathBytes("library/plain/video.mkv".utf8),
        PathBytes("library/a \"quoted\" \\ back\\slash/x.mkv".utf8),
        PathBytes("library/new\nline/tab\there\rcr.mkv".utf8),
        PathBytes("library/ctl\u{1}\u{1f}\u{7f}/x".utf8),
        PathBytes("library/Café 🎬 e\u{301}/ünïcödé.mkv".utf8),
        PathBytes("library/slash/in/</script>/x".utf8),
        PathBytes("library/raw-".utf8) + [0xE9, 0x80, 0xFF, 0x0A] + PathBytes("-x.mkv".utf8),
        PathBytes(String(repeating: "n", count: 255).utf8),
    ]

    static func file(_ path: PathBytes, mtime: Double = 1_795_630_812.4396389) -> Snapshot.File {
        Snapshot.File(path: path, size: 4_294_967_297, mode: 0o644, mtime: mtime, inode: UInt64.max - 1,
                      sha256: String(repeating: "ab", count: 32), pack: "packs/20261125T182029Z-1558b50e.tar", offset: 1536)
    }

    /// Keys are told apart by one word each: every key reads as itself, and nothing else reads
    /// as a key (its prefixes, its extensions, one byte changed anywhere, other names).
    @Test func keyWordsMatchTheirNames() {
        func key(_ bytes: [UInt8]) -> FileLine.Key { bytes.withUnsafeBytes { FileLine.Key($0) } }
        #expect(FileLine.Key.names.count == 10)
        for (name, expected) in FileLine.Key.names {
            let bytes = Array(name.utf8)
            #expect(key(bytes) == expected, "\(name)")
            for cut in 0..<bytes.count {
                let shorter = String(decoding: bytes[..<cut], as: UTF8.self) // "path_b64" holds "path"
                #expect(key(Array(bytes[..<cut])) == FileLine.Key.names.first { $0.0 == shorter }?.1 ?? .other, "\(name) cut at \(cut)")
            }
            #expect(key(bytes + [UInt8(ascii: "s")]) == .other)
            #expect(key(bytes + [0]) == .other, "a NUL after \(name)")
            for position in bytes.indices {
                for delta: UInt8 in [1, 0x20, 0x80] {
                    var changed = bytes
                    changed[position] ^= delta
                    #expect(key(changed) == .other, "\(name) with byte \(position) changed")
                }
            }
        }
        for other in ["", "p", "id", "name", "xattrs", "paths", "Path", "PATH", "sha512", "path_b65", "path_b64x", "mtime_ns"] {
            #expect(key(Array(other.utf8)) == .other, "\(other)")
        }
    }

    /// A string is read in place only when it holds no escape and no control character; its
    /// range ends before its closing quote and the parser stands after it.
    @Test func plainStringsStopAtTheirQuote() {
        func plain(_ text: [UInt8]) -> (String?, Int) {
            text.withUnsafeBytes { raw in
                var parser = FileLine.Parser(bytes: raw)
                let range = parser.plainString()
                return (range.map { String(decoding: parser.slice($0), as: UTF8.self) }, parser.index)
            }
        }
        #expect(plain(Array(#"  "abc", "d""#.utf8)) == ("abc", 7))
        #expect(plain(Array(#""""#.utf8)) == ("", 2))
        #expect(plain(Array(#""0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}"#.utf8)).0?.count == 64)
        for refused in [#""a\"b""#, #""a\\""#, "\"tab\there\"", "\"nul\u{0}\"", #""no end"#, #"""#, "x\"a\""] {
            let (value, index) = plain(Array(refused.utf8))
            #expect(value == nil, "\(refused)")
            #expect(index <= 1, "\(refused): the parser moved to \(index)")
        }
        // Every length up to 40, with a byte to refuse at every place before the quote.
        for length in 0...40 {
            let body = Array(repeating: UInt8(ascii: "a"), count: length)
            #expect(plain([0x22] + body + [0x22, 0x2C]).0?.count == length)
            for position in 0..<length {
                for bad: UInt8 in [0x5C, 0x01, 0x1F] {
                    var text = body
                    text[position] = bad
                    #expect(plain([0x22] + text + [0x22]).0 == nil)
                }
            }
        }
    }

    /// The eight-bytes-at-a-time check agrees with a byte-by-byte one: every byte value at
    /// every position of strings of every length up to 20, and random strings.
    @Test func escapeCheckAgreesWithBytes() {
        func special(_ byte: UInt8) -> Bool { byte < 0x20 || byte == 0x22 || byte == 0x5C }
        func slow(_ bytes: [UInt8]) -> Bool { bytes.contains(where: special) }
        func slowFirst(_ bytes: [UInt8], from start: Int) -> Int { bytes[start...].firstIndex(where: special) ?? bytes.count }
        func first(_ bytes: [UInt8], from start: Int) -> Int { bytes.withUnsafeBytes { FileLine.firstSpecial($0, from: start) } }
        for length in 1...20 {
            for position in 0..<length {
                for value in 0...255 {
                    var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: length)
                    bytes[position] = UInt8(value)
                    let fast = bytes.withUnsafeBytes { FileLine.needsEscaping($0) }
                    #expect(fast == slow(bytes), "\(bytes)")
                    for start in [0, position, min(position + 1, length)] {
                        #expect(first(bytes, from: start) == slowFirst(bytes, from: start), "\(bytes) from \(start)")
                    }
                    if fast != slow(bytes) { return }
                }
            }
        }
        // Two special or near-special bytes in the same words (a borrow from one can mark the
        // byte above it): the first is still found.
        let values: [UInt8] = [0x00, 0x01, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x5B, 0x5C, 0x5D, 0x7F, 0x80, 0xFF]
        for i in 0..<16 {
            for j in (i + 1)..<16 {
                for a in values {
                    for b in values {
                        var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: 16)
                        bytes[i] = a
                        bytes[j] = b
                        #expect(first(bytes, from: 0) == slowFirst(bytes, from: 0), "\(bytes)")
                    }
                }
            }
        }
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let bytes = (0..<Int.random(in: 0...80, using: &generator)).map { _ in
                // Mostly printable bytes (and UTF-8's high ones), a special one now and then.
                Int.random(in: 0..<40, using: &generator) == 0 ? UInt8.random(in: 0...0x5C, using: &generator)
                    : UInt8.random(in: 0x23...0xFF, using: &generator)
            }
            let fast = bytes.withUnsafeBytes { FileLine.needsEscaping($0) }
            #expect(fast == slow(bytes), "\(bytes)")
            // Where the first special byte is, from anywhere (several can share a word).
            let start = Int.random(in: 0...bytes.count, using: &generator)
            #expect(first(bytes, from: start) == slowFirst(bytes, from: start), "\(bytes) from \(start)")
            if fast != slow(bytes) { return }
        }
    }

    /// Numbers read straight from the bytes give the Double Swift's own parsing gives, or
    /// nothing when it gives nothing.
    @Test func numbersReadAsSwiftReadsThem() {
        var texts = ["0", "-0", "1", "1.5", "1795630812.4396389", "1795630812.43963885", "1e308", "1e400", "-1e400",
                     "4.9e-324", "1e-400", "2.2250738585072011e-308", "9007199254740993", "0.1", "123456789012345678901234567890",
                     "1.", ".5", "-", ".", "1e", "1e+", "1.2.3", "--1", "+1", "1e5", "1E-5", "00012", "-.5",
                     String(repeating: "9", count: 70)]
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let seconds = Double.random(in: 0...4_000_000_000, using: &generator)
            texts.append("\(seconds)")
            texts.append(String((0..<Int.random(in: 1...12, using: &generator)).map { _ in "0123456789.-+eE".randomElement(using: &generator)! }))
        }
        for text in texts {
            let fast = Array(text.utf8).withUnsafeBytes { FileLine.double($0) }
            let swift = Double(text)
            #expect(fast?.bitPattern == swift?.bitPattern, "\(text): \(String(describing: fast)) against \(String(describing: swift))")
            if fast?.bitPattern != swift?.bitPattern { return }
        }
    }

    func encodeFast(_ file: Snapshot.File) -> [UInt8] {
        var out: [UInt8] = []
        FileLine.append(file, to: &out)
        return out
    }

    func decodeFast(_ line: [UInt8]) -> Snapshot.File? {
        var packs: [String] = []
        return line.withUnsafeBytes { FileLine.decode($0, packs: &packs) }
    }

    @Test(arguments: hostilePaths)
    func aLineRoundTripsExactly(path: PathBytes) throws {
        for mtime in [1_795_630_812.4396389, 1_795_630_812, 0.1, -12.5, 1e-9, 123_456_789.000_000_1] {
            let file = Self.file(path, mtime: mtime)
            let line = encodeFast(file)
            #expect(decodeFast(line) == file)
            // Foundation reads what the codec writes, and the codec reads what Foundation writes.
            #expect(try JSONDecoder().decode(Snapshot.File.self, from: Data(line)) == file)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let foundation = try encoder.encode(file)
            #expect(decodeFast(Array(foundation)) == file)
            #expect(try JSONSerialization.jsonObject(with: Data(line)) is [String: Any])
        }
    }

    /// Numbers are written digit by digit: at their limits, the line is JSONEncoder's, byte for byte.
    @Test func numbersAtTheirLimitsAreWrittenAsJSONEncoderWritesThem() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        for (size, inode, mode, offset, mtime) in [
            (Int64(0), UInt64(0), UInt32(0), Int64(0), 0.0),
            (Int64.max, UInt64.max, UInt32.max, Int64.max, 1_795_630_812),
            (Int64(9), UInt64(10), UInt32(0o100644), Int64(-1), -1),
            (Int64(1_000_000_000), UInt64(99_999), UInt32(7), Int64.min, 999_999_999_999_999),
        ] {
            var file = Self.file(PathBytes("library/x.mkv".utf8), mtime: mtime)
            (file.size, file.inode, file.mode, file.offset) = (size, inode, mode, offset)
            #expect(encodeFast(file) == Array(try encoder.encode(file)), "\(size) \(inode) \(mode) \(offset) \(mtime)")
            #expect(decodeFast(encodeFast(file)) == file)
        }
    }

    @Test func escapesOfEveryKindAreRead() {
        let line = #"{ "type" : "file", "path":"a\u00e9\ud83c\udfac\/\"\\\n\u0001b", "size":1,"mode":420,"mtime":2.5e1,"inode":3,"#
            + #""offset":4,"sha256":"00","pack":"packs/p.tar","extra":"ignored","also":-1.5 }"#
        let file = decodeFast(Array(line.utf8))
        #expect(file?.path == PathBytes("aé🎬/\"\\\n\u{1}b".utf8))
        #expect(file?.mtime == 25)
        #expect(file?.offset == 4)
    }

    @Test func integersAreReadExactlyOrNotAtAll() {
        func int64(_ text: String) -> Int64? { Array(text.utf8).withUnsafeBytes { Int64(decimal: $0) } }
        func uint64(_ text: String) -> UInt64? { Array(text.utf8).withUnsafeBytes { UInt64(decimal: $0) } }
        #expect(int64("0") == 0)
        #expect(int64("-0") == 0)
        #expect(int64("42") == 42)
        #expect(int64("-9223372036854775808") == Int64.min)
        #expect(int64("9223372036854775807") == Int64.max)
        #expect(int64("9223372036854775808") == nil)
        #expect(int64("-9223372036854775809") == nil)
        #expect(uint64("18446744073709551615") == UInt64.max)
        #expect(uint64("18446744073709551616") == nil)
        #expect(uint64("-1") == nil)
        for bad in ["", "-", "1.5", "1e3", "+1", "12a", " 1", "--1"] {
            #expect(int64(bad) == nil, "\(bad)")
        }
    }

    @Test func packsTimesAndUnknownKeysAreReadInPlace() {
        var packs: [String] = []
        // More packs than the decoder keeps: each line still gets its own pack's name.
        for round in 0..<3 {
            for n in 0..<11 {
                let line = #"{"pack":"packs/\#(n).tar","path":"p","sha256":"s","size":1,"mode":420,"mtime":9007199254740994,"inode":1,"offset":\#(round),"note":"plain","more":"esc\"aped"}"#
                let file = Array(line.utf8).withUnsafeBytes { FileLine.decode($0, packs: &packs) }
                #expect(file?.pack == "packs/\(n).tar")
                #expect(file?.offset == Int64(round))
                #expect(file?.mtime == 9_007_199_254_740_994) // past 2^53: read as Swift reads a Double
            }
        }
        #expect(packs.count <= 8)
        // A key written with an escape is valid JSON the codec does not read in place: Foundation does.
        let escapedKey = #"{"p\u0061th":"x","inode":1,"mode":420,"mtime":-5,"offset":0,"pack":"p","sha256":"s","size":0}"#
        #expect(decodeFast(Array(escapedKey.utf8)) == nil)
        #expect((try? JSONDecoder().decode(Snapshot.File.self, from: Data(escapedKey.utf8)))?.path == PathBytes("x".utf8))
    }

    @Test func whatTheCodecCannotReadIsLeftToFoundation() throws {
        // A nested value (a later format could add one) is not the codec's: it says nil, and
        // the cursor asks JSONDecoder, which accepts the line.
        let nested = #"{"inode":1,"mode":420,"mtime":1,"offset":0,"pack":"p","path":"x","sha256":"s","size":0,"type":"file","xattrs":{"a":"b"}}"#
        #expect(decodeFast(Array(nested.utf8)) == nil)
        #expect(try JSONDecoder().decode(Snapshot.File.self, from: Data(nested.utf8)).path == PathBytes("x".utf8))
        // Damage: each of these is refused by the codec.
        for broken in [#"{"inode":1"#, #"{"inode":"1","mode":420}"#, #"{"path":"unterminated}"#, #"{"path":"bad \q escape"}"#,
                       #"{"path":"a","size":1,"mode":1,"mtime":1,"inode":1,"offset":1,"sha256":"s","pack":"p","type":"end"}"#,
                       #"{"path":"lone \ud83c","size":1,"mode":1,"mtime":1,"inode":1,"offset":1,"sha256":"s","pack":"p"} trailing"#] {
            #expect(decodeFast(Array(broken.utf8)) == nil, "\(broken)")
        }
    }
}

@Suite struct SHA256ValueTests {
    @Test func hexAndBytesAgreeAndMalformedDigestsMatchNothing() {
        let bytes = (0..<32).map { UInt8($0 * 7 + 3) }
        let hex = Digest.hex(bytes)
        #expect(SHA256Value(hex: hex) == SHA256Value(bytes))
        #expect(SHA256Value(bytes).hex == hex)
        #expect(SHA256Value(hex: hex.uppercased()).hex == hex)
        #expect(SHA256Value(hex: hex.uppercased()) == SHA256Value(bytes))
        #expect(SHA256Value(hex: String(hex.dropLast())) != SHA256Value(bytes))
        #expect(SHA256Value(hex: String(hex.dropLast()) + "g") != SHA256Value(bytes))
        #expect(SHA256Value(hex: hex + "00") != SHA256Value(bytes))
        #expect(SHA256Value(hex: "") != SHA256Value([UInt8](repeating: 0, count: 32)))
        // The strict form: 64 hex digits of either case, or nothing.
        #expect(SHA256Value(validHex: hex) == SHA256Value(bytes))
        #expect(SHA256Value(validHex: hex.uppercased()) == SHA256Value(bytes))
        for malformed in ["", String(hex.dropLast()), hex + "0", String(hex.dropLast()) + "g", " " + String(hex.dropFirst()),
                          String(hex.dropLast(2)) + "é"] {
            #expect(SHA256Value(validHex: malformed) == nil, "\(malformed)")
        }
    }
}
