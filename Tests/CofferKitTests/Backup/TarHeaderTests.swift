@testable import CofferKit
import Testing

/// The tar header checks verify uses to name a damaged entry.
@Suite struct TarHeaderTests {
    @Test func readsOctalAndBase256Sizes() {
        #expect(TarHeader.octal(ArraySlice(Array("00000001750\u{0}".utf8))) == 1000)
        #expect(TarHeader.octal(ArraySlice(Array("  1750 ".utf8))) == 1000)
        // GNU base-256: the first bit set, then the number big-endian (here 8 GiB).
        #expect(TarHeader.octal(ArraySlice([0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0])) == 1 << 33)
        #expect(TarHeader.octal(ArraySlice([0xFF, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0])) == nil, "negative")
        #expect(TarHeader.octal(ArraySlice(Array("12x4".utf8))) == nil)
    }

    /// A header whose checksum adds up but whose base-256 size is near Int64.max (crafted, or
    /// damage that keeps the byte sum) is damage, not an overflow.
    @Test func aHugeSizeBeforeAnEntryIsDamageNotACrash() throws {
        var header = [UInt8](repeating: 0, count: 512)
        header[124] = 0x80
        for index in 128..<136 { header[index] = 0xFF }
        header[128] = 0x7F
        header[156] = UInt8(ascii: "0")
        let sum = header.enumerated().reduce(0) { $0 + ((148..<156).contains($1.offset) ? 0x20 : Int($1.element)) }
        let field = Array(String(sum, radix: 8).utf8)
        header.replaceSubrange(148..<(148 + field.count), with: field)
        header[148 + field.count] = 0
        #expect(TarHeader.checksumAddsUp(header))
        let bytes = header + [UInt8](repeating: 0, count: 512)
        let problem = try TarHeader.extendedHeaderProblem(from: 0, to: 1024, name: PathBytes("media/x".utf8), size: 1) { offset, length in
            Array(bytes[Int(offset)..<min(bytes.count, Int(offset) + length)])
        }
        #expect(problem?.contains("runs past it") == true, "\(String(describing: problem))")
    }

    @Test func judgesPaxRecords() {
        let name = PathBytes("media/library/é.mkv".utf8)
        func records(_ lines: [String]) -> (data: [UInt8], length: Int) {
            var bytes: [UInt8] = []
            for line in lines {
                // "LEN key=value\n", LEN counting itself.
                var length = line.utf8.count + 3
                if String(length).count + line.utf8.count + 2 != length { length += 1 }
                bytes += Array("\(length) \(line)\n".utf8)
            }
            let padded = (bytes.count + 511) / 512 * 512
            return (bytes + [UInt8](repeating: 0, count: padded - bytes.count), bytes.count)
        }
        func problem(_ lines: [String], size: Int64 = 5) -> String? {
            let (data, length) = records(lines)
            return TarHeader.paxProblem(data, length: length, name: name, size: size)
        }
        #expect(problem(["hdrcharset=BINARY", "path=media/library/é.mkv"]) == nil)
        #expect(problem(["path=media/library/é.mkv", "size=5", "LIBARCHIVE.creationtime=1700000000"]) == nil)
        #expect(problem(["path=media/library/e.mkv"])?.contains("another path") == true)
        #expect(problem(["path=media/library/é.mkv", "size=6"])?.contains("6 bytes") == true)
        #expect(problem(["pbth=media/library/é.mkv"])?.contains("unknown key") == true)
        #expect(problem(["hdrcharset=BINARZ", "path=media/library/é.mkv"])?.contains("hdrcharset") == true)
        var (data, length) = records(["path=media/library/é.mkv"])
        data[length] = 1
        #expect(TarHeader.paxProblem(data, length: length, name: name, size: 5)?.contains("after its records") == true)
        data[length] = 0
        data[0] = UInt8(ascii: "9")
        #expect(TarHeader.paxProblem(data, length: length, name: name, size: 5)?.contains("does not parse") == true)
    }
}
