/// Checks of the tar headers of a pack, for naming the entry whose header a damaged byte is in
/// (the pack digest covers them; see FORMAT.md). Coffer's packs are restricted pax: a ustar
/// header before every entry's data, and before that a pax extended header (typeflag `x`) when
/// the name is not plain ASCII or too long for ustar, or the size too large.
enum TarHeader {
    static let blockSize: Int64 = 512

    /// `size` rounded up to whole 512-byte blocks, as an entry's data takes them.
    static func padded(_ size: Int64) -> Int64 { (size + blockSize - 1) / blockSize * blockSize }

    /// A ustar numeric field: octal digits, led by spaces and ended by NUL or space; or, first
    /// bit set, a big-endian binary number (GNU's base-256, which libarchive writes for sizes
    /// past 8 GiB where the format allows it).
    static func octal(_ field: ArraySlice<UInt8>) -> Int64? {
        if let first = field.first, first & 0x80 != 0 {
            let rest = field.dropFirst()
            guard first == 0x80, rest.prefix(max(0, rest.count - 8)).allSatisfy({ $0 == 0 }),
                  let top = rest.suffix(8).first, top & 0x80 == 0 else { return nil }
            return rest.suffix(8).reduce(Int64(0)) { $0 << 8 | Int64($1) }
        }
        let digits = field.drop { $0 == 0x20 }.prefix { $0 != 0 && $0 != 0x20 }
        guard !digits.isEmpty, digits.count <= 21, digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x37 }) else { return nil }
        return digits.reduce(Int64(0)) { $0 * 8 + Int64($1 - 0x30) }
    }

    /// Whether the header's checksum field holds the sum of its bytes (the field counted as
    /// spaces).
    static func checksumAddsUp(_ header: [UInt8]) -> Bool {
        let sum = header.enumerated().reduce(Int64(0)) { $0 + Int64((148..<156).contains($1.offset) ? 0x20 : $1.element) }
        return octal(header[148..<156]) == sum
    }

    /// What is wrong with a ustar header for an entry of `size` bytes, if anything.
    static func problem(_ header: [UInt8], size: Int64) -> String? {
        guard header.count == 512, checksumAddsUp(header) else { return "its tar header is damaged (its checksum does not add up)" }
        if size < 0o77777777777, let stated = octal(header[124..<136]), stated != size {
            return "its tar header gives \(stated) bytes, the record \(size)"
        }
        return nil
    }

    /// What is wrong with the bytes from `start` to `end` of a pack, the end of the previous
    /// entry's data and the ustar header of the entry named `name` (`size` bytes), if anything.
    /// They hold whole tar entries (of no record's, after a prune) and, last, at most one pax
    /// extended header: this entry's, whose records must parse and whose path and size must be
    /// the entry's. `read(offset, length)` reads the pack.
    static func extendedHeaderProblem(from start: Int64, to end: Int64, name: PathBytes, size: Int64,
                                      read: (Int64, Int) throws -> [UInt8]) throws -> String? {
        var position = start
        while position < end {
            guard end - position >= blockSize else { return "the bytes before its tar header are damaged (not whole blocks)" }
            let header = try read(position, Int(blockSize))
            guard header.count == Int(blockSize), checksumAddsUp(header) else {
                return "the header before its tar header is damaged (its checksum does not add up)"
            }
            guard let length = octal(header[124..<136]) else { return "the header before its tar header is damaged (its size does not read)" }
            guard length <= end - position - blockSize else { return "the header before its tar header is damaged (its size runs past it)" }
            let next = position + blockSize + padded(length)
            guard next <= end else { return "the header before its tar header is damaged (its size runs past it)" }
            if header[156] == UInt8(ascii: "x"), next == end {
                guard length <= 1 << 20 else { return "its pax header is damaged (\(length) bytes)" }
                let data = try read(position + blockSize, Int(padded(length)))
                guard data.count == Int(padded(length)) else { return "its pax header is cut short" }
                return paxProblem(data, length: Int(length), name: name, size: size)
            }
            position = next
        }
        return nil
    }

    /// What is wrong with a pax extended header's data (`length` bytes of records, then zeros
    /// to the block's end) for the entry named `name`, of `size` bytes, if anything. Each
    /// record is `LENGTH key=value\n`; the keys libarchive writes for a regular file are known.
    static func paxProblem(_ data: [UInt8], length: Int, name: PathBytes, size: Int64) -> String? {
        guard length <= data.count, data[length...].allSatisfy({ $0 == 0 }) else { return "its pax header is damaged (bytes after its records)" }
        var path: ArraySlice<UInt8>?
        var stated: Int64?
        var index = 0
        while index < length {
            guard let space = data[index..<length].firstIndex(of: 0x20), space > index, space - index <= 7,
                  data[index..<space].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  let recordLength = Int(String(decoding: data[index..<space], as: UTF8.self)),
                  recordLength > space - index + 2, index + recordLength <= length, data[index + recordLength - 1] == 0x0A,
                  let equals = data[(space + 1)..<(index + recordLength - 1)].firstIndex(of: UInt8(ascii: "="))
            else { return "its pax header is damaged (a record does not parse)" }
            let key = String(decoding: data[(space + 1)..<equals], as: UTF8.self)
            let value = data[(equals + 1)..<(index + recordLength - 1)]
            func decimal(fraction: Bool) -> Bool {
                !value.isEmpty && value.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || (fraction && ($0 == 0x2E || $0 == 0x2D)) }
            }
            switch key {
            case "path":
                path = value
            case "size":
                guard decimal(fraction: false), let number = Int64(String(decoding: value, as: UTF8.self)) else {
                    return "its pax header is damaged (its size does not read)"
                }
                stated = number
            case "hdrcharset":
                guard value.elementsEqual("BINARY".utf8) || value.elementsEqual("ISO-IR 10646 2000 UTF-8".utf8) else {
                    return "its pax header is damaged (hdrcharset \(String(decoding: value, as: UTF8.self)))"
                }
            case "mtime", "atime", "ctime", "uid", "gid":
                guard decimal(fraction: true) else { return "its pax header is damaged (its \(key) does not read)" }
            case "uname", "gname", "linkpath":
                break
            case _ where key.hasPrefix("LIBARCHIVE.") || key.hasPrefix("SCHILY.") || key.hasPrefix("GNU."):
                break // what other libarchive versions may add: not Coffer's to judge
            default:
                return "its pax header is damaged (an unknown key, \(String(reflecting: key)))"
            }
            index += recordLength
        }
        if let path, !path.elementsEqual(name) {
            return "its pax header gives another path, \(PathText.display(PathBytes(path)))"
        }
        if let stated, stated != size { return "its pax header gives \(stated) bytes, the record \(size)" }
        return nil
    }
}
