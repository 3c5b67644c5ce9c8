/// Lexical path clean-up on bytes, for comparing paths from the database with paths on disk.
enum PathNormalizer {
    /// `path` made absolute (a relative one is taken under `base`), with `.` and empty
    /// components removed. `..` is kept as is: the database's paths are taken literally.
    static func absolute(_ path: PathBytes, under base: PathBytes) -> PathBytes {
        let slash = UInt8(ascii: "/")
        // Most stored paths are already clean and absolute: returned as they are, not rebuilt.
        if path.first == slash && isClean(path) { return path }
        let full = path.first == slash ? path : base + [slash] + path
        var result: PathBytes = []
        result.reserveCapacity(full.count)
        for component in full.split(separator: slash, omittingEmptySubsequences: true) {
            if component.count == 1, component.first == UInt8(ascii: ".") { continue }
            result.append(slash)
            result.append(contentsOf: component)
        }
        return result.isEmpty ? [slash] : result
    }

    /// Whether every `/` of `path` is followed by a component that is neither empty nor `.`
    /// (no `//`, no `/./`, no trailing `/` or `/.`): what ``absolute(_:under:)`` would return
    /// unchanged for an absolute path.
    static func isClean(_ path: PathBytes) -> Bool {
        let slash = UInt8(ascii: "/"), dot = UInt8(ascii: ".")
        return path.withUnsafeBufferPointer { bytes in
            let count = bytes.count
            for index in 0..<count where bytes[index] == slash {
                guard index + 1 < count else { return false }
                let next = bytes[index + 1]
                if next == slash { return false }
                if next == dot && (index + 2 == count || bytes[index + 2] == slash) { return false }
            }
            return true
        }
    }
}
