import Foundation

/// File names on Linux are bytes, not text. Coffer keeps them as bytes from `readdir` and the
/// database all the way to the system call, and turns them into text only to show them.
public typealias PathBytes = [UInt8]

public enum PathText {
    /// The folder that holds `path`: "/a/b" -> "/a", "/a" -> "/", "a" -> ".", "a/b/" -> "a".
    /// (Foundation's `deletingLastPathComponent` traps on some one-character relative paths.)
    public static func parent(_ path: String) -> String {
        var bytes = Array(path.utf8)
        while bytes.count > 1, bytes.last == UInt8(ascii: "/") { bytes.removeLast() }
        guard let slash = bytes.lastIndex(of: UInt8(ascii: "/")) else { return "." }
        var end = slash
        while end > 0, bytes[end - 1] == UInt8(ascii: "/") { end -= 1 }
        return end == 0 ? "/" : String(decoding: bytes[..<end], as: UTF8.self)
    }

    /// The last component: "/a/b" -> "b", "a/b/" -> "b", "a" -> "a".
    public static func lastComponent(_ path: String) -> String {
        let trimmed = path.utf8.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
        guard let slash = trimmed.lastIndex(of: "/") else { return trimmed }
        return String(trimmed[trimmed.index(after: slash)...])
    }

    /// A printable, single-line rendering of a path: valid UTF-8 is kept, control characters are
    /// escaped (`\n`, `\t`, `\r`, `\xNN`), a backslash is doubled, and every byte that is not
    /// valid UTF-8 becomes `\xNN`. Two different paths never render the same.
    public static func display(_ bytes: some Collection<UInt8>) -> String {
        var out = ""
        out.reserveCapacity(bytes.count)
        var index = bytes.startIndex
        while index != bytes.endIndex {
            let byte = bytes[index]
            if byte < 0x80 {
                switch byte {
                case 0x5C: out += "\\\\"
                case 0x0A: out += "\\n"
                case 0x09: out += "\\t"
                case 0x0D: out += "\\r"
                case 0..<0x20, 0x7F: out += hex(byte)
                default: out.unicodeScalars.append(Unicode.Scalar(byte))
                }
                index = bytes.index(after: index)
                continue
            }
            let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : byte >= 0xC0 ? 2 : 1
            let end = bytes.index(index, offsetBy: length, limitedBy: bytes.endIndex) ?? bytes.endIndex
            let candidate = Array(bytes[index..<end])
            if length > 1, candidate.count == length,
               let decoded = String(validating: candidate, as: UTF8.self), decoded.unicodeScalars.count == 1 {
                out += decoded
                index = end
            } else {
                out += hex(byte)
                index = bytes.index(after: index)
            }
        }
        return out
    }

    public static func display(_ string: String) -> String { display(Array(string.utf8)) }

    /// The bytes are valid UTF-8.
    public static func isUTF8(_ bytes: some Collection<UInt8>) -> Bool {
        bytes.withContiguousStorageIfAvailable { isUTF8(UnsafeRawBufferPointer($0)) }
            ?? Array(bytes).withUnsafeBytes { isUTF8($0) }
    }

    /// The bytes are valid UTF-8. ASCII, nearly every name and cell, is checked a word at a
    /// time without making a String.
    public static func isUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        while index + 8 <= bytes.count {
            if bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 {
                return String(validating: bytes, as: UTF8.self) != nil
            }
            index += 8
        }
        while index < bytes.count {
            if bytes[index] >= 0x80 { return String(validating: bytes, as: UTF8.self) != nil }
            index += 1
        }
        return true
    }

    private static func hex(_ byte: UInt8) -> String {
        "\\x" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
    }
}

extension String {
    func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}

extension Array where Element == UInt8 {
    /// Joins two path pieces with one `/`.
    public func appendingComponent(_ name: some Collection<UInt8>) -> PathBytes {
        // One allocation of the right size (appending to a copy grows it, copying twice).
        var result = PathBytes()
        result.reserveCapacity(count + 1 + name.count)
        result.append(contentsOf: self)
        if result.last != UInt8(ascii: "/") { result.append(UInt8(ascii: "/")) }
        result.append(contentsOf: name)
        return result
    }

    /// Calls `body` with a NUL-terminated copy, for system calls. A copy of ordinary length is
    /// on the stack: no allocation per system call.
    public func withCPath<T>(_ body: (UnsafePointer<CChar>) throws -> T) rethrows -> T {
        try withUnsafeTemporaryAllocation(of: CChar.self, capacity: count + 1) { buffer in
            withUnsafeBytes { bytes in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: bytes)
            }
            buffer[count] = 0
            return try body(buffer.baseAddress!)
        }
    }
}
