import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One value of a database cell, as exported.
public enum CSVCell: Equatable, Sendable {
    case null
    /// Text exactly as written (numbers included, in their exact decimal form).
    case text([UInt8])
}

/// CSV as RFC 4180 writes it, with PostgreSQL's convention for NULL: a NULL is an empty
/// unquoted field, an empty string is `""`. Lines end with CRLF. A field is quoted when it is
/// empty or holds a comma, a quote, CR or LF (quotes doubled inside). Bytes are written as
/// they are: no trimming, no escaping that changes data.
///
/// With `spreadsheetSafe`, a text field that starts with `=`, `+`, `-`, `@`, TAB or CR gets a
/// leading `'`, so a spreadsheet does not run it as a formula. That changes the data (lossy) and
/// is off by default.
struct CSVWriter {
    let fd: Int32
    let path: String
    let spreadsheetSafe: Bool
    private var buffer: [UInt8] = []
    private(set) var bytes: Int64 = 0
    private(set) var rows = 0
    private(set) var hasher = SHA256()
    private var writeback = EarlyWriteback()

    init(fd: Int32, path: String, spreadsheetSafe: Bool = false) {
        self.fd = fd
        self.path = path
        self.spreadsheetSafe = spreadsheetSafe
        buffer.reserveCapacity(1 << 20 + 4096)
    }

    // Field by field, without building cells: `text`/`raw`/`null` for each, then `endRow`.
    private var fieldsInRow = 0

    private mutating func separate() {
        if fieldsInRow > 0 { buffer.append(UInt8(ascii: ",")) }
        fieldsInRow += 1
    }

    /// A NULL: nothing between the separators.
    mutating func null() { separate() }

    /// Bytes that never need quotes (a number).
    mutating func raw(_ bytes: some Sequence<UInt8>) {
        separate()
        buffer.append(contentsOf: bytes)
    }

    /// A text field, quoted when needed.
    mutating func text(_ bytes: UnsafeRawBufferPointer) {
        separate()
        guard !spreadsheetSafe else { return field(Array(bytes)) }
        // Quoted when empty (unlike NULL) or holding a comma, quote or line break; copied in
        // runs straight from SQLite's buffer, each quote doubled.
        let quote = UInt8(ascii: "\"")
        var quotes = 0, special = bytes.isEmpty
        for byte in bytes {
            if byte == quote { quotes += 1; special = true } else if byte == UInt8(ascii: ",") || byte == 0x0D || byte == 0x0A { special = true }
        }
        guard special else { return buffer.appendBytes(bytes) }
        buffer.append(quote)
        var start = 0
        if quotes > 0 {
            for index in bytes.indices where bytes[index] == quote {
                buffer.appendBytes(UnsafeRawBufferPointer(rebasing: bytes[start...index]))
                buffer.append(quote)
                start = index + 1
            }
        }
        buffer.appendBytes(UnsafeRawBufferPointer(rebasing: bytes[start...]))
        buffer.append(quote)
    }

    /// An INTEGER cell, its decimal digits written in place (no String per cell).
    mutating func integer(_ value: Int64) {
        separate()
        buffer.appendDecimal(value)
    }

    mutating func endRow() throws {
        buffer.append(0x0D)
        buffer.append(0x0A)
        rows += 1
        fieldsInRow = 0
        if buffer.count >= 1 << 20 { try flush() }
    }

    /// Writes a row (the header row too: call it first with the column names).
    mutating func row(_ cells: [CSVCell]) throws {
        for (index, cell) in cells.enumerated() {
            if index > 0 { buffer.append(UInt8(ascii: ",")) }
            switch cell {
            case .null: break
            case .text(let value): field(value)
            }
        }
        buffer.append(0x0D)
        buffer.append(0x0A)
        rows += 1
        if buffer.count >= 1 << 20 { try flush() }
    }

    private mutating func field(_ value: [UInt8]) {
        var value = value
        if spreadsheetSafe, let first = value.first, [UInt8(ascii: "="), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "@"), 0x09, 0x0D].contains(first) {
            value.insert(UInt8(ascii: "'"), at: 0)
        }
        let needsQuotes = value.isEmpty || value.contains { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 0x0D || $0 == 0x0A }
        guard needsQuotes else {
            buffer.append(contentsOf: value)
            return
        }
        buffer.append(UInt8(ascii: "\""))
        for byte in value {
            if byte == UInt8(ascii: "\"") { buffer.append(byte) }
            buffer.append(byte)
        }
        buffer.append(UInt8(ascii: "\""))
    }

    mutating func flush() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try RawIO.writeAll(fd, $0.baseAddress!, $0.count, path: path) }
        writeback.wrote(buffer.count, fd: fd)
        hasher.update(data: buffer)
        bytes += Int64(buffer.count)
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Reads what ``CSVWriter`` writes (and any RFC 4180 CSV, LF or CRLF), one record at a time
/// through a fixed buffer: an unquoted empty field is NULL, a quoted one the empty string.
final class CSVReader {
    let fd: Int32
    let path: String
    private var buffer: UnsafeMutableRawBufferPointer
    private var start = 0, filled = 0, atEOF = false
    private(set) var line = 0
    /// Every byte read so far, hashed as it is read (after the last record: the whole file's).
    private(set) var hasher = SHA256()

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
        buffer = .allocate(byteCount: 1 << 20, alignment: 16)
    }

    deinit { buffer.deallocate() }

    func failure(_ cause: String) -> CofferError {
        CofferError(.failed, operation: "read", subject: path, cause: "line \(line): \(cause)",
                    hint: "the export is damaged: restore it from a copy")
    }

    /// The next byte, reading more when needed; nil at the end of the file.
    private func nextByte() throws -> UInt8? {
        if start == filled {
            if atEOF { return nil }
            let n = try RawIO.read(fd, buffer.baseAddress!, buffer.count, path: path)
            if n == 0 { atEOF = true; return nil }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            start = 0
            filled = n
        }
        let byte = buffer[start]
        start += 1
        return byte
    }

    private func peekByte() throws -> UInt8? {
        guard let byte = try nextByte() else { return nil }
        start -= 1
        return byte
    }

    /// Appends the bytes already in the buffer that `ordinary` accepts, in one copy (the
    /// byte-at-a-time path handles what is left: quotes, separators, refills).
    private func appendRun(to value: inout [UInt8], while ordinary: (UInt8) -> Bool) {
        var end = start
        while end < filled, ordinary(buffer[end]) { end += 1 }
        if end > start {
            value.appendBytes(UnsafeRawBufferPointer(rebasing: buffer[start..<end]))
            start = end
        }
    }

    /// The next record, or nil at the end.
    func next() throws -> [CSVCell]? {
        guard try peekByte() != nil else { return nil }
        line += 1
        var cells: [CSVCell] = []
        while true {
            var value: [UInt8] = []
            var quoted = false
            if try peekByte() == UInt8(ascii: "\"") {
                quoted = true
                _ = try nextByte()
                while true {
                    appendRun(to: &value) { $0 != UInt8(ascii: "\"") && $0 != 0x0A }
                    guard let byte = try nextByte() else { throw failure("a quoted field does not end") }
                    if byte == UInt8(ascii: "\"") {
                        if try peekByte() == UInt8(ascii: "\"") {
                            _ = try nextByte()
                            value.append(byte)
                        } else {
                            break
                        }
                    } else {
                        if byte == 0x0A { line += 1 }
                        value.append(byte)
                    }
                }
            } else {
                appendRun(to: &value) { $0 != UInt8(ascii: ",") && $0 != 0x0D && $0 != 0x0A && $0 != UInt8(ascii: "\"") }
                while let byte = try peekByte(), byte != UInt8(ascii: ","), byte != 0x0D, byte != 0x0A {
                    if byte == UInt8(ascii: "\"") { throw failure("a quote inside an unquoted field") }
                    value.append(byte)
                    _ = try nextByte()
                }
            }
            cells.append(quoted || !value.isEmpty ? .text(value) : .null)
            switch try nextByte() {
            case UInt8(ascii: ","): continue
            case 0x0D:
                guard try nextByte() == 0x0A else { throw failure("CR without LF") }
                return cells
            case 0x0A, nil:
                return cells
            default:
                throw failure("text after a closing quote")
            }
        }
    }
}
