import Foundation

/// Numbers as an operator reads them.
public enum Formatting {
    /// `1.5 GiB`, `12.0 MiB`, `512 B`.
    public static func bytes(_ count: some BinaryInteger) -> String {
        let value = Double(count)
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var scaled = value
        var unit = 0
        while scaled >= 1024, unit < units.count - 1 { scaled /= 1024; unit += 1 }
        return unit == 0 ? "\(count) B" : String(format: "%.1f %@", scaled, units[unit])
    }

    /// `45 s`, `12 min`, `3 h 5 min`, `4 d 2 h`.
    public static func age(seconds: Double) -> String {
        let s = Int(max(0, seconds.rounded()))
        switch s {
        case ..<60: return "\(s) s"
        case ..<3600: return "\(s / 60) min"
        case ..<86400: return "\(s / 3600) h \(s % 3600 / 60) min"
        default: return "\(s / 86400) d \(s % 86400 / 3600) h"
        }
    }

    /// A gigabyte threshold as given: `10`, `2.5`.
    public static func gigabytes(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }

    /// Seconds with millisecond precision, for timings.
    public static func seconds(_ value: Double) -> String { String(format: "%.2f s", value) }

    /// A JSON document, keys sorted, for `--json`.
    public static func json(_ value: some Encodable) throws -> String {
        String(decoding: try jsonEncoder().encode(value), as: UTF8.self)
    }

    static func jsonEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// The document ``json(_:)`` gives for `shell` with its top-level list `key` holding
    /// `elements`, passed to `write` in pieces: the list is encoded one element at a time, so a
    /// report with a million problems is never one JSON tree. `shell`'s own list is empty.
    public static func writeJSON(_ shell: some Encodable, list key: String, elements: [some Encodable],
                                 to write: ([UInt8]) throws -> Void) throws {
        let encoder = jsonEncoder()
        let bytes = [UInt8](try encoder.encode(shell))
        guard !elements.isEmpty else { return try write(bytes) }
        guard let list = SummaryLine.lists(in: bytes, keys: [key])?[key] else {
            throw CofferError(.failed, operation: "write JSON", subject: key, cause: "the document has no top-level list of that name")
        }
        // The pretty printer puts each element on its own lines, indented two levels.
        try write(Array(bytes[..<list.contents.lowerBound]))
        var piece: [UInt8] = []
        for (index, element) in elements.enumerated() {
            piece.append(contentsOf: index == 0 ? Array("\n    ".utf8) : Array(",\n    ".utf8))
            for byte in try encoder.encode(element) {
                piece.append(byte)
                if byte == 0x0A { piece.append(contentsOf: [0x20, 0x20, 0x20, 0x20]) }
            }
            if piece.count >= 1 << 16 { try write(piece); piece.removeAll(keepingCapacity: true) }
        }
        piece.append(contentsOf: Array("\n  ".utf8))
        try write(piece)
        try write(Array(bytes[list.contents.upperBound...]))
    }
}
