/// Help text in one shape for every command: paragraphs written hard-wrapped in the source are
/// joined (swift-argument-parser wraps them to the terminal), `Exit codes: 0 a, 1 b` becomes one
/// code per line, and `Example:`/`Examples:` one command per line, indented.
enum Help {
    static func text(_ source: String) -> String {
        let paragraphs = source.components(separatedBy: "\n\n")
        return paragraphs.map(render).joined(separator: "\n\n")
    }

    static func render(_ paragraph: String) -> String {
        let lines = paragraph.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        guard let first = lines.first else { return "" }
        if first.hasPrefix("Exit codes:") {
            let body = lines.joined(separator: " ").dropFirst("Exit codes:".count).trimmingCharacters(in: .whitespaces)
            var codes = splitCodes(body.hasSuffix(".") ? String(body.dropLast()) : body)
            // Every command can be refused for a bad flag or setting.
            if !codes.contains(where: { $0.hasPrefix("64 ") }) { codes.append(splitCodes("64 usage (a bad flag or setting)")[0]) }
            return "Exit codes:\n" + codes.map { "  " + $0 }.joined(separator: "\n")
        }
        if first.hasPrefix("Example:") || first.hasPrefix("Examples:") {
            var commands: [String] = []
            if let colon = first.firstIndex(of: ":") {
                let rest = first[first.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                if !rest.isEmpty { commands.append(rest) }
            }
            commands += lines.dropFirst().map { $0.trimmingCharacters(in: .whitespaces) }
            return "Examples:\n" + commands.map { "  " + $0 }.joined(separator: "\n")
        }
        return lines.map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
    }

    /// "0 done, 1 a, b (c, 2 d), 2 failed" -> ["0  done", "1  a, b (c, 2 d)", "2  failed"]: a new
    /// code starts after ", " outside parentheses, at a number followed by a space.
    static func splitCodes(_ text: String) -> [String] {
        var parts: [String] = []
        var current = ""
        var depth = 0
        let characters = Array(text)
        var i = 0
        while i < characters.count {
            let c = characters[i]
            if c == "(" { depth += 1 }
            if c == ")" { depth = max(0, depth - 1) }
            if c == ",", depth == 0, i + 2 < characters.count, characters[i + 1] == " " {
                var j = i + 2
                while j < characters.count, characters[j].isNumber { j += 1 }
                if j > i + 2, j < characters.count, characters[j] == " " {
                    parts.append(current)
                    current = ""
                    i += 2
                    continue
                }
            }
            current.append(c)
            i += 1
        }
        parts.append(current)
        return parts.map { part in
            let trimmed = part.trimmingCharacters(in: .whitespaces)
            guard let space = trimmed.firstIndex(of: " ") else { return trimmed }
            let code = trimmed[..<space]
            return code.padding(toLength: 4, withPad: " ", startingAt: 0) + trimmed[trimmed.index(after: space)...]
        }
    }
}
