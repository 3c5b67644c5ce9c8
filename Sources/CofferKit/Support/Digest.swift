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
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        var count = 0
        var valid = true
        for c in hex.utf8 {
            let digit: UInt64
            switch c {
            case 48...57: digit = UInt64(c - 48)
            case 97...102: digit = UInt64(c - 87)
            case 65...70: digit = UInt64(c - 55)
            default: valid = false; digit = 0
            }
            switch count / 16 {
            case 0: words.0 = words.0 << 4 | digit
            case 1: words.1 = words.1 << 4 | digit
            case 2: words.2 = words.2 << 4 | digit
            case 3: words.3 = words.3 << 4 | digit
            default: valid = false
            }
            count += 1
        }
        if valid, count == 64 {
            self = SHA256Value(words)
        } else {
            self.init([UInt8]())
        }
    }

    /// The digest in lowercase hex (what `Digest.hex` writes for the same bytes).
    var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for word in [a, b, c, d] {
            for shift in stride(from: 60, through: 0, by: -4) { out.append(digits[Int((word >> UInt64(shift)) & 0xF)]) }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private init(_ words: (UInt64, UInt64, UInt64, UInt64)) {
        (a, b, c, d) = words
    }
}
