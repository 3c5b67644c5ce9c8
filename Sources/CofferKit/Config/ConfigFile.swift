import Foundation

/// A config file given with `--config`: the same `KEY=VALUE` lines as the pipeline's `.env`.
///
/// Blank lines and `#` comments are skipped, an `export ` prefix is allowed, and a value may be
/// wrapped in single or double quotes. Keys Coffer does not know are ignored (the file may be
/// the pipeline's own), except unknown `COFFER_*` keys, which are almost certainly typos.
public struct ConfigFile: Sendable {
    public struct Entry: Sendable { public var value: String; public var line: Int }

    public let path: String
    public let entries: [String: Entry]

    public init(path: String) throws {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            let exists = FileManager.default.fileExists(atPath: path)
            throw CofferError(
                .usage, operation: "read config file", subject: path,
                cause: exists ? "cannot be read" : "no such file",
                hint: "check the path given with --config")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw CofferError(.usage, operation: "read config file", subject: path, cause: "not UTF-8 text")
        }
        try self.init(path: path, text: text)
    }

    public init(path: String, text: String) throws {
        self.path = path
        var entries: [String: Entry] = [:]
        for (offset, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNumber = offset + 1
            var line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.hasSuffix("\r") { line.removeLast() }
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = String(line.dropFirst(7)).trimmingCharacters(in: .whitespaces) }
            guard let equals = line.firstIndex(of: "=") else {
                throw CofferError(
                    .usage, operation: "read config file", subject: "\(path):\(lineNumber)",
                    cause: "expected KEY=VALUE, got \(CofferError.quoted(line))")
            }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces)
            var value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = String(value.dropFirst().dropLast())
            }
            if SettingKey(rawValue: key) == nil, key.hasPrefix("COFFER_") {
                throw CofferError(
                    .usage, operation: "read config file", subject: "\(path):\(lineNumber)",
                    cause: "unknown setting \(key)",
                    hint: "settings: " + SettingKey.allCases.map(\.rawValue).joined(separator: ", "))
            }
            entries[key] = Entry(value: value, line: lineNumber)
        }
        self.entries = entries
    }
}
