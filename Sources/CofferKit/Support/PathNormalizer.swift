/// Lexical path clean-up on bytes, for comparing paths from the database with paths on disk.
enum PathNormalizer {
    /// `path` made absolute (a relative one is taken under `base`), with `.` and empty
    /// components removed. `..` is kept as is: the database's paths are taken literally.
    static func absolute(_ path: PathBytes, under base: PathBytes) -> PathBytes {
        let slash = UInt8(ascii: "/")
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
}
