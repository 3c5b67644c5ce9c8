/// Hex digests.
public enum Digest {
    /// The bytes of a hex digest (invalid digits count as 0: a wrong digest then mismatches).
    public static func bytes(hex: String) -> [UInt8] {
        func value(_ c: UInt8) -> UInt8 {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: 0
            }
        }
        let digits = Array(hex.utf8)
        return stride(from: 0, to: digits.count - 1, by: 2).map { value(digits[$0]) << 4 | value(digits[$0 + 1]) }
    }

    public static func hex(_ digest: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for byte in digest { out.append(digits[Int(byte >> 4)]); out.append(digits[Int(byte & 0xF)]) }
        return String(decoding: out, as: UTF8.self)
    }
}

/// A SHA-256 digest held in 32 inline bytes (a hex String costs three times that, on the heap).
struct SHA256Value: Hashable {
    var a: UInt64 = 0, b: UInt64 = 0, c: UInt64 = 0, d: UInt64 = 0

    init(_ bytes: some Sequence<UInt8>) {
        var words: [UInt64] = [0, 0, 0, 0]
        var count = 0
        for byte in bytes where count < 32 {
            words[count / 8] = words[count / 8] << 8 | UInt64(byte)
            count += 1
        }
        (a, b, c, d) = (words[0], words[1], words[2], words[3])
        // Anything but 32 bytes matches no real digest.
        if count != 32 { d ^= 0xFFFF_FFFF_FFFF_FFFF; c ^= UInt64(count) }
    }

    /// From a hex digest; a malformed one matches no real digest.
    init(hex: String) {
        self = SHA256Value(validHex: hex) ?? SHA256Value([UInt8]())
    }

    /// From exactly 64 hex digits (either case); `nil` for anything else. Read from the
    /// string's bytes in place: it runs once per file of every record a backup merges.
    init?(validHex hex: String) {
        var hex = hex
        guard let words = hex.withUTF8({ Self.words(hex: UnsafeRawBufferPointer($0)) }) else { return nil }
        self.init(words)
    }

    private static func words(hex: UnsafeRawBufferPointer) -> (UInt64, UInt64, UInt64, UInt64)? {
        guard hex.count == 64 else { return nil }
        func word(_ start: Int) -> UInt64? {
            var value: UInt64 = 0
            for index in start..<(start + 16) {
                let c = hex[index]
                let digit: UInt8
                switch c {
                case 48...57: digit = c &- 48
                case 97...102: digit = c &- 87
                case 65...70: digit = c &- 55
                default: return nil
                }
                value = value << 4 | UInt64(digit)
            }
            return value
        }
        guard let a = word(0), let b = word(16), let c = word(32), let d = word(48) else { return nil }
        return (a, b, c, d)
    }

    /// The digest in lowercase hex (what `Digest.hex` writes for the same bytes).
    var hex: String {
        String(unsafeUninitializedCapacity: 64) { out in
            let digits: StaticString = "0123456789abcdef"
            func put(_ word: UInt64, at start: Int) {
                for n in 0..<16 { out[start + n] = digits.utf8Start[Int((word >> UInt64(60 - 4 * n)) & 0xF)] }
            }
            put(a, at: 0)
            put(b, at: 16)
            put(c, at: 32)
            put(d, at: 48)
            return 64
        }
    }

    private init(_ words: (UInt64, UInt64, UInt64, UInt64)) {
        (a, b, c, d) = words
    }
}
