/// The two lists of a snapshot's summary line that grow with the volume — `problems` and
/// `findings` (a MEDIA_ROOT pointed at the wrong place gives one of each per file) — handled
/// apart from the rest of the line, so that neither writing nor listing records holds them as
/// one JSON tree:
/// - written element by element into the record (``SnapshotWriter/summary(_:rawLists:)``), the
///   bytes JSONEncoder would give for the whole line;
/// - counted, not decoded, when a record is read for its header and totals
///   (``SnapshotReader/snapshot()``); ``SnapshotReader/details()`` decodes them.
enum SummaryLine {
    /// The lists' keys, in the order they appear in a line written with sorted keys.
    static let listKeys = ["findings", "problems"]

    /// Where one list's elements are in a line (between its brackets), and how many there are.
    struct List: Equatable {
        var contents: Range<Int>
        var count: Int
    }

    /// The top-level `findings` and `problems` lists of a JSON object, found by one scan that
    /// follows strings (and their escapes) and nesting. `nil` when the line is not a JSON object
    /// the scan can follow to its end, or lacks either list (the caller then decodes it whole,
    /// and JSONDecoder names what is wrong).
    static func lists(in line: UnsafeRawBufferPointer, keys: [String] = listKeys) -> [String: List]? {
        let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")
        var depth = 0
        var index = 0
        var stringStart = 0
        var lastString: Range<Int>?
        var key: Range<Int>?
        var open: (key: String, start: Int, commas: Int, empty: Bool)?
        var found: [String: List] = [:]
        var seen = Set<String>()
        func isListKey(_ range: Range<Int>) -> String? {
            for name in keys where name.utf8.count == range.count
                && name.utf8.elementsEqual(UnsafeRawBufferPointer(rebasing: line[range])) { return name }
            return nil
        }
        while index < line.count {
            let byte = line[index]
            if byte == quote {
                // A string: skip to its closing quote.
                stringStart = index + 1
                index += 1
                while index < line.count, line[index] != quote {
                    index += line[index] == backslash ? 2 : 1
                }
                guard index < line.count else { return nil }
                lastString = stringStart..<index
                if depth == 2, open != nil { open!.empty = false }
                index += 1
                continue
            }
            switch byte {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                if depth == 1, byte == UInt8(ascii: "["), let key, let name = isListKey(key) {
                    open = (name, index + 1, 0, true)
                } else if depth == 2, open != nil {
                    open!.empty = false
                }
                depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                guard depth >= 0 else { return nil }
                if depth == 1, let list = open {
                    guard byte == UInt8(ascii: "]") else { return nil }
                    found[list.key] = List(contents: list.start..<index, count: list.empty ? 0 : list.commas + 1)
                    open = nil
                }
                if depth == 0 {
                    // The object's end: only white space may follow.
                    guard line[(index + 1)...].allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D || $0 == 0x0A }) else { return nil }
                    return keys.allSatisfy { found[$0] != nil } ? found : nil
                }
            case UInt8(ascii: ":"):
                if depth == 1 {
                    key = lastString
                    // A list's key given twice: which one counts is JSONDecoder's to say.
                    if let key, let name = isListKey(key), !seen.insert(name).inserted { return nil }
                }
            case UInt8(ascii: ","):
                if depth == 1 { key = nil }
                if depth == 2, open != nil { open!.commas += 1 }
            case 0x20, 0x09, 0x0D, 0x0A:
                break
            default:
                if depth == 0 { return nil }
                if depth == 2, open != nil { open!.empty = false }
            }
            index += 1
        }
        return nil
    }

    static func lists(in line: [UInt8], keys: [String] = listKeys) -> [String: List]? {
        line.withUnsafeBytes { lists(in: $0, keys: keys) }
    }

    /// Calls `body` with each element of `list` (found by ``lists(in:)`` in `line`), one at a
    /// time, so that a long list is decoded without holding it whole.
    static func forEachElement(of list: List, in line: UnsafeRawBufferPointer,
                               _ body: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")
        var depth = 0
        var start = list.contents.lowerBound
        var index = start
        let end = list.contents.upperBound
        while index < end {
            switch line[index] {
            case quote:
                index += 1
                while index < end, line[index] != quote { index += line[index] == backslash ? 2 : 1 }
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            case UInt8(ascii: ",") where depth == 0:
                try body(UnsafeRawBufferPointer(rebasing: line[start..<index]))
                start = index + 1
            default: break
            }
            index += 1
        }
        if list.count > 0 { try body(UnsafeRawBufferPointer(rebasing: line[start..<end])) }
    }

    /// The line with both lists emptied (`[]`), for decoding the rest.
    static func stripped(_ line: UnsafeRawBufferPointer, _ lists: [String: List]) -> [UInt8] {
        var out: [UInt8] = []
        var from = 0
        for list in lists.values.sorted(by: { $0.contents.lowerBound < $1.contents.lowerBound }) {
            out.append(contentsOf: line[from..<list.contents.lowerBound])
            from = list.contents.upperBound
        }
        out.append(contentsOf: line[from...])
        return out
    }
}
