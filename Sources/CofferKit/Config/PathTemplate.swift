/// A path template such as `{MEDIA_ROOT}/library/{uploader}/{title}.{ext}`.
///
/// Parsing checks every placeholder against the ones the variable allows, so a typo
/// (`{uploder}`) is a usage error naming the variable instead of a silent wrong path.
public struct PathTemplate: Sendable, Equatable {
    public enum Part: Sendable, Equatable {
        case literal(String)
        case placeholder(String)
    }

    public let text: String
    public let parts: [Part]

    /// Placeholders `LIBRARY_PATH_TEMPLATE` may use.
    public static let libraryPlaceholders: Set<String> = [
        "MEDIA_ROOT", "uploader", "title", "ext", "upload_date", "category", "id", "source_id", "jobId",
    ]
    /// Placeholders `TEMP_DIR_TEMPLATE` may use.
    public static let tempPlaceholders: Set<String> = ["MEDIA_ROOT", "jobId"]

    /// Parses `text`; `variable` names the setting in errors (exit 64).
    public init(_ text: String, variable: String, allowed: Set<String>) throws {
        self.text = text
        var parts: [Part] = []
        var literal = ""
        var iterator = text.makeIterator()
        while let character = iterator.next() {
            switch character {
            case "{":
                var name = ""
                var closed = false
                while let next = iterator.next() {
                    if next == "}" { closed = true; break }
                    if next == "{" { break }
                    name.append(next)
                }
                guard closed else {
                    throw CofferError.badSetting(variable, text, "a '{' is not closed by '}'")
                }
                guard allowed.contains(name) else {
                    throw CofferError.badSetting(
                        variable, text, "unknown placeholder {\(name)}",
                        hint: "placeholders allowed here: " + allowed.sorted().map { "{\($0)}" }.joined(separator: " "))
                }
                if !literal.isEmpty { parts.append(.literal(literal)); literal = "" }
                parts.append(.placeholder(name))
            case "}":
                throw CofferError.badSetting(variable, text, "a '}' has no opening '{'")
            default:
                literal.append(character)
            }
        }
        if !literal.isEmpty { parts.append(.literal(literal)) }
        self.parts = parts
    }

    public func contains(_ placeholder: String) -> Bool { parts.contains(.placeholder(placeholder)) }

    /// The template with the given placeholders substituted; others are kept as `{name}`.
    public func substituting(_ values: [String: String]) -> String {
        parts.map { part in
            switch part {
            case .literal(let text): text
            case .placeholder(let name): values[name] ?? "{\(name)}"
            }
        }.joined()
    }

    /// The fixed directory every expansion lies under: the text before the first placeholder
    /// other than those in `values`, cut back to its last `/`. For the default library template
    /// and MEDIA_ROOT=/media this is `/media/library`.
    public func fixedDirectory(_ values: [String: String]) -> String {
        var prefix = ""
        for part in parts {
            switch part {
            case .literal(let text): prefix += text
            case .placeholder(let name):
                guard let value = values[name] else { return Self.directoryPart(of: prefix) }
                prefix += value
            }
        }
        return Self.directoryPart(of: prefix)
    }

    static func directoryPart(of prefix: String) -> String {
        guard let slash = prefix.lastIndex(of: "/") else { return "" }
        let directory = String(prefix[..<slash])
        return directory.isEmpty ? "/" : directory
    }
}
