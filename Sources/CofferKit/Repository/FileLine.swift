import Foundation

/// The file lines of a snapshot record, written and read without Foundation's JSON coders.
///
/// A record holds one line per file, so a library of a million files means a million lines
/// every backup, verify and restore reads: Foundation's coders spent more time on them than
/// the rest of an unchanged backup. The line is a flat JSON object (FORMAT.md); this codec
/// writes it with sorted keys, as `JSONEncoder` did before it, and reads any flat object of
/// strings and numbers in any key order and spacing. A line it does not understand (a nested
/// value a later format might add) goes to `JSONDecoder`, so nothing valid is refused here.
enum FileLine {
    // MARK: writing

    /// Writes the line's bytes straight into `out`: no String per number, a clean string
    /// copied whole (for 100,000 files the line was 6% of a full backup's instructions).
    static func append(_ file: Snapshot.File, to out: inout [UInt8]) {
        appendLiteral(#"{"inode":"#, to: &out)
        out.appendDecimal(file.inode)
        appendLiteral(#","mode":"#, to: &out)
        out.appendDecimal(UInt64(file.mode))
        appendLiteral(#","mtime":"#, to: &out)
        appendMtime(file.mtime, to: &out)
        appendLiteral(#","offset":"#, to: &out)
        out.appendDecimal(file.offset)
        appendLiteral(#","pack":"#, to: &out)
        appendString(file.pack, to: &out)
        // A path that is UTF-8 is stored as text; any other as base64 of its bytes.
        if PathText.isUTF8(file.path) {
            appendLiteral(#","path":"#, to: &out)
            file.path.withUnsafeBytes { appendString($0, to: &out) }
        } else {
            appendLiteral(#","path_b64":"#, to: &out)
            appendString(Data(file.path).base64EncodedString(), to: &out)
        }
        appendLiteral(#","sha256":"#, to: &out)
        appendString(file.sha256, to: &out)
        appendLiteral(#","size":"#, to: &out)
        out.appendDecimal(file.size)
        appendLiteral(#","type":"file"}"#, to: &out)
    }

    /// A key or other fixed text, copied whole (appending a String's UTF-8 view went a byte
    /// at a time through the generic path: 170 instructions each, nine times a line).
    static func appendLiteral(_ text: StaticString, to out: inout [UInt8]) {
        out.appendBytes(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// Whole seconds without a fraction are written as integers, as JSONEncoder does; anything
    /// else in Swift's shortest form that reads back to the same Double.
    static func appendMtime(_ value: Double, to out: inout [UInt8]) {
        if value == value.rounded(), abs(value) < 1e15 { return out.appendDecimal(Int64(value)) }
        out.append(contentsOf: value.description.utf8)
    }

    static func appendString(_ text: String, to out: inout [UInt8]) {
        var text = text
        text.withUTF8 { appendString(UnsafeRawBufferPointer($0), to: &out) }
    }

    /// A JSON string of `bytes`: copied whole when nothing needs escaping (nearly always).
    static func appendString(_ bytes: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        if !needsEscaping(bytes) {
            out.appendBytes(bytes)
            out.append(UInt8(ascii: "\""))
            return
        }
        let hex = Array("0123456789abcdef".utf8)
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [92, 34])
            case UInt8(ascii: "\\"): out.append(contentsOf: [92, 92])
            case 0x0A: out.append(contentsOf: [92, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [92, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [92, UInt8(ascii: "t")])
            case 0x08: out.append(contentsOf: [92, UInt8(ascii: "b")])
            case 0x0C: out.append(contentsOf: [92, UInt8(ascii: "f")])
            case 0..<0x20: out.append(contentsOf: [92, UInt8(ascii: "u"), 48, 48, hex[Int(byte >> 4)], hex[Int(byte & 0xF)]])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Whether any byte is a control character, `"` or `\\` (a byte at a time it was a tenth
    /// of a backup's record writing).
    static func needsEscaping(_ bytes: UnsafeRawBufferPointer) -> Bool {
        firstSpecial(bytes, from: 0) < bytes.count
    }

    /// Where the first control character, `"` or `\\` at or after `start` is (`bytes.count`
    /// when there is none), looked for eight bytes at a time.
    static func firstSpecial(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int {
        guard let base = bytes.baseAddress else { return bytes.count }
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        // The high bit of each byte of `word` below `limit` (at most 0x80) is set; a borrow can
        // also set it in a byte above one that is, so the lowest set bit is exact.
        func below(_ limit: UInt64, _ word: UInt64) -> UInt64 { (word &- ones &* limit) & ~word & highs }
        var index = start
        while index + 8 <= bytes.count {
            let word = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: index, as: UInt64.self))
            let found = below(0x20, word) | below(1, word ^ (ones &* 0x22)) | below(1, word ^ (ones &* 0x5C))
            if found != 0 { return index + found.trailingZeroBitCount / 8 }
            index += 8
        }
        while index < bytes.count {
            let byte = bytes[index]
            if byte < 0x20 || byte == 0x22 || byte == 0x5C { return index }
            index += 1
        }
        return bytes.count
    }

    // MARK: reading

    /// Decodes one line; `nil` when it is not a flat object of strings and numbers with the
    /// fields of a file (the caller then asks JSONDecoder, which names the problem).
    ///
    /// Keys, numbers and the pack name are read in place, not copied: a restore of 100,000
    /// files spent 21,000 instructions a line here when each made Strings and arrays.
    static func decode(_ line: UnsafeRawBufferPointer, packs: inout [String]) -> Snapshot.File? {
        var parser = Parser(bytes: line)
        var path: PathBytes?, pathBase64: PathBytes?, sha256: String?, pack: String?, isFile = true
        var size: Int64?, mode: UInt32?, mtime: Double?, inode: UInt64?, offset: Int64?
        guard parser.consume(UInt8(ascii: "{")) else { return nil }
        if !parser.consume(UInt8(ascii: "}")) {
            repeat {
                guard let key = parser.plainString().map({ Key(parser.slice($0)) }), parser.consume(UInt8(ascii: ":")) else { return nil }
                if parser.peek == UInt8(ascii: "\"") {
                    switch key {
                    case .path, .pathBase64:
                        guard let value = parser.string() else { return nil }
                        if key == .path { path = value } else { pathBase64 = value }
                    case .sha256:
                        guard let value = parser.plainString() else { return nil }
                        sha256 = String(decoding: parser.slice(value), as: UTF8.self)
                    case .pack:
                        guard let value = parser.plainString() else { return nil }
                        pack = known(parser.slice(value), in: &packs)
                    case .type:
                        guard let value = parser.plainString() else { return nil }
                        isFile = parser.slice(value).elementsEqual("file".utf8)
                    default:
                        guard parser.string() != nil else { return nil }
                    }
                } else {
                    guard let range = parser.number() else { return nil }
                    let number = parser.slice(range)
                    switch key {
                    case .size: guard let v = Int64(decimal: number) else { return nil }; size = v
                    case .mode: guard let v = Int64(decimal: number), let m = UInt32(exactly: v) else { return nil }; mode = m
                    case .inode: guard let v = UInt64(decimal: number) else { return nil }; inode = v
                    case .offset: guard let v = Int64(decimal: number) else { return nil }; offset = v
                    case .mtime:
                        // Whole seconds as an integer (exact up to 2^53); any other text as Swift reads it.
                        if let whole = Int64(decimal: number), whole.magnitude < 1 << 53 {
                            mtime = Double(whole)
                        } else {
                            guard let v = Self.double(number) else { return nil }
                            mtime = v
                        }
                    default: break
                    }
                }
            } while parser.consume(UInt8(ascii: ","))
            guard parser.consume(UInt8(ascii: "}")) else { return nil }
        }
        guard parser.atEnd, isFile, let size, let mode, let mtime, let inode, let offset, let sha256, let pack else { return nil }
        let filePath: PathBytes
        if let path {
            filePath = path
        } else if let pathBase64, let data = Data(base64Encoded: Data(pathBase64)) {
            filePath = PathBytes(data)
        } else {
            return nil
        }
        return Snapshot.File(path: filePath, size: size, mode: mode, mtime: mtime, inode: inode,
                             sha256: sha256, pack: pack, offset: offset)
    }

    /// A JSON number's text as a Double, read by the C library in the C locale straight from
    /// the bytes (through a String it was 1,500 instructions a line); nil unless all of it is
    /// one number. glibc's `strtod` rounds correctly, as Swift's own parsing does.
    static func double(_ text: UnsafeRawBufferPointer) -> Double? {
        guard text.count > 0, text.count < 64, let locale = cNumericLocale else {
            return Double(String(decoding: text, as: UTF8.self))
        }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: text.count + 1) { buffer in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: text)
            buffer[text.count] = 0
            var end: UnsafeMutablePointer<CChar>?
            let previous = uselocale(locale) // this thread only
            let value = strtod(buffer.baseAddress!, &end)
            uselocale(previous)
            return end == buffer.baseAddress! + text.count ? value : nil
        }
    }

    private static let cNumericLocale = newlocale(LC_NUMERIC_MASK, "C", nil)

    /// The keys of a file line; any other is read and passed over.
    enum Key {
        case path, pathBase64, sha256, pack, type, size, mode, inode, offset, mtime, other

        /// Compared by length and one word each (through `memcmp` and a chain of names it was
        /// 1,400 instructions a line): the key's bytes as a little-endian word, zero-padded.
        /// `keyWordsMatchTheirNames` checks the constants.
        init(_ bytes: UnsafeRawBufferPointer) {
            guard (4...8).contains(bytes.count), let base = bytes.baseAddress else { self = .other; return }
            var word: UInt64 = 0
            withUnsafeMutableBytes(of: &word) { $0.copyMemory(from: UnsafeRawBufferPointer(start: base, count: bytes.count)) }
            switch (bytes.count, UInt64(littleEndian: word)) {
            case (4, 0x6874_6170): self = .path
            case (4, 0x6b63_6170): self = .pack
            case (4, 0x6570_7974): self = .type
            case (4, 0x657a_6973): self = .size
            case (4, 0x6564_6f6d): self = .mode
            case (5, 0x65_646f_6e69): self = .inode
            case (5, 0x65_6d69_746d): self = .mtime
            case (6, 0x3635_3261_6873): self = .sha256
            case (6, 0x7465_7366_666f): self = .offset
            case (8, 0x3436_625f_6874_6170): self = .pathBase64
            default: self = .other
            }
        }

        static let names: [(String, Key)] = [("path", .path), ("pack", .pack), ("type", .type), ("size", .size), ("mode", .mode),
                                             ("inode", .inode), ("mtime", .mtime), ("sha256", .sha256), ("offset", .offset),
                                             ("path_b64", .pathBase64)]
    }

    static func sameBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        a.count == b.count && (a.isEmpty || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0)
    }

    /// Consecutive lines share a few packs: one String each, not one per line.
    static func known(_ name: UnsafeRawBufferPointer, in packs: inout [String]) -> String {
        for index in packs.indices.reversed() {
            let same = packs[index].utf8.withContiguousStorageIfAvailable { sameBytes(UnsafeRawBufferPointer($0), name) }
                ?? packs[index].utf8.elementsEqual(name)
            if same { return packs[index] }
        }
        let made = String(decoding: name, as: UTF8.self)
        packs.append(made)
        if packs.count > 8 { packs.removeFirst() }
        return made
    }

    struct Parser {
        let bytes: UnsafeRawBufferPointer
        var index = 0

        init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

        mutating func skipSpace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        var peek: UInt8? { mutating get { skipSpace(); return index < bytes.count ? bytes[index] : nil } }

        var atEnd: Bool { mutating get { skipSpace(); return index == bytes.count } }

        mutating func consume(_ byte: UInt8) -> Bool {
            guard peek == byte else { return false }
            index += 1
            return true
        }

        /// The bytes of a range ``number()`` or ``plainString()`` gave.
        func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[range]) }

        /// Where a JSON number's text is (validated by the caller's conversion).
        mutating func number() -> Range<Int>? {
            skipSpace()
            let start = index
            scan: while index < bytes.count {
                switch bytes[index] {
                case 48...57, UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"): index += 1
                default: break scan
                }
            }
            return index > start ? start..<index : nil
        }

        /// Where a JSON string's value is, when it holds no escape and no control character
        /// (its bytes are then the value); `nil`, reading nothing, otherwise.
        mutating func plainString() -> Range<Int>? {
            guard peek == UInt8(ascii: "\"") else { return nil }
            // Eight bytes at a time (a byte at a time, a digest's 64 took 700 instructions).
            let first = index + 1
            let end = FileLine.firstSpecial(bytes, from: first)
            guard end < bytes.count, bytes[end] == 0x22 else { return nil }
            index = end + 1
            return first..<end
        }

        /// A JSON string's value as UTF-8 bytes.
        mutating func string() -> PathBytes? {
            guard consume(UInt8(ascii: "\"")) else { return nil }
            // The common case: no escape before the closing quote, one copy.
            let run = FileLine.firstSpecial(bytes, from: index)
            var out = PathBytes(bytes[index..<run])
            index = run
            while index < bytes.count {
                let byte = bytes[index]
                index += 1
                switch byte {
                case UInt8(ascii: "\""):
                    return out
                case UInt8(ascii: "\\"):
                    guard index < bytes.count else { return nil }
                    let escape = bytes[index]
                    index += 1
                    switch escape {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "u"):
                        guard var scalar = hex4() else { return nil }
                        if (0xD800..<0xDC00).contains(scalar) {
                            guard index + 1 < bytes.count, bytes[index] == 92, bytes[index + 1] == UInt8(ascii: "u") else { return nil }
                            index += 2
                            guard let low = hex4(), (0xDC00..<0xE000).contains(low) else { return nil }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let unicode = Unicode.Scalar(scalar) else { return nil }
                        out.append(contentsOf: Array(String(Character(unicode)).utf8))
                    default:
                        return nil
                    }
                case 0..<0x20:
                    return nil
                default:
                    out.append(byte)
                }
            }
            return nil
        }

        mutating func hex4() -> UInt32? {
            guard index + 4 <= bytes.count else { return nil }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[index]
                index += 1
                let digit: UInt32
                switch c {
                case 48...57: digit = UInt32(c - 48)
                case 97...102: digit = UInt32(c - 87)
                case 65...70: digit = UInt32(c - 55)
                default: return nil
                }
                value = value << 4 | digit
            }
            return value
        }
    }
}
