/// Names that break naive tools: CSV writers, shells, terminals, spreadsheets, UTF-8 decoders.
public enum HostileNames {
    /// Text names (valid UTF-8), each a legal single path component (no "/", no NUL).
    public static let text: [String] = [
        "Quote \"double\" and 'single'",
        "comma, separated, values",
        "line\nbreak",
        "tab\tseparated",
        "carriage\rreturn",
        "=HYPERLINK(\"x\";\"y\")",
        "+plus -minus @at",
        "-rf leading dash",
        "🎬 Film 🍿",
        "Cafe\u{0301} cre\u{0300}me (NFD)",
        "Café crème (NFC)",
        "семья и дети",
        "日本語のタイトル",
        "back\\slash",
        "  spaces  around  ",
        ".hidden leading dot",
        "$(echo not executed) `nor this`",
        "percent %s %n and {braces}",
    ]

    /// A name of exactly 255 bytes (the Linux limit for one component), ending in `.mkv`,
    /// made of multi-byte characters so byte and character counts differ.
    public static var longName: [UInt8] {
        var bytes = Array("long-".utf8)
        let filler = Array("é".utf8) // 2 bytes
        while bytes.count + filler.count <= 255 - 4 { bytes += filler }
        while bytes.count < 255 - 4 { bytes.append(UInt8(ascii: "x")) }
        return bytes + Array(".mkv".utf8)
    }

    /// Bytes that are not valid UTF-8 (Latin-1 'é', a lone continuation byte, 0xFF).
    public static let notUTF8: [UInt8] = Array("raw-".utf8) + [0xE9, 0x80, 0xFF] + Array("-name".utf8)
}
