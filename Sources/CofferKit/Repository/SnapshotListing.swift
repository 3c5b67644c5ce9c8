/// `coffer snapshots`: one line per snapshot. Encoded as the `--json` document.
public struct SnapshotListing: Sendable, Codable {
    public struct Item: Sendable, Codable {
        public var id: String
        public var time: String
        public var host: String
        public var tags: [String]
        public var parent: String?
        public var files: Int
        public var bytes: Int64
        public var bytesAdded: Int64
        public var rows: [String: Int]
        public var problems: Int
        enum CodingKeys: String, CodingKey {
            case id, time, host, tags, parent, files, bytes, bytesAdded = "bytes_added", rows, problems
        }
    }

    public var command = "snapshots"
    public var repository: String
    public var snapshots: [Item]
    /// Records that could not be read, with why.
    public var damaged: [String: String]

    public static func read(_ configuration: CofferConfiguration) throws -> SnapshotListing {
        let repository = try Repository.open(configuration.repo)
        let lock = try repository.lock(exclusive: false, command: "snapshots")
        defer { withExtendedLifetime(lock) {} }
        let (snapshots, damaged) = try repository.snapshots()
        return SnapshotListing(
            repository: repository.location,
            snapshots: snapshots.map { s in
                Item(id: s.id, time: s.header.time, host: s.header.host, tags: s.header.tags, parent: s.header.parent,
                     files: s.summary.files, bytes: s.summary.bytes, bytesAdded: s.summary.bytesAdded,
                     rows: s.summary.database.rowCounts, problems: s.summary.problemCount)
            },
            damaged: Dictionary(uniqueKeysWithValues: damaged.map { ($0.name, $0.error.message) }))
    }

    public func text() -> String {
        guard !snapshots.isEmpty || !damaged.isEmpty else { return "no snapshots in \(PathText.display(repository))" }
        var lines = ["ID                         TIME                      HOST          FILES      SIZE     ADDED    JOBS"]
        for s in snapshots {
            let jobs = s.rows["jobs"].map(String.init) ?? "-"
            lines.append([s.id.padding(toLength: 26, withPad: " ", startingAt: 0),
                          String(s.time.prefix(19)).replacingOccurrences(of: "T", with: " ").padding(toLength: 25, withPad: " ", startingAt: 0),
                          String(s.host.prefix(12)).padding(toLength: 13, withPad: " ", startingAt: 0),
                          String(s.files).leftPadded(to: 6, with: " "),
                          Formatting.bytes(s.bytes).leftPadded(to: 10, with: " "),
                          Formatting.bytes(s.bytesAdded).leftPadded(to: 10, with: " "),
                          jobs.leftPadded(to: 7, with: " ")].joined(separator: " ")
                         + (s.tags.isEmpty ? "" : "  [" + s.tags.joined(separator: ",") + "]")
                         + (s.problems > 0 ? "  \(s.problems) problem(s)" : ""))
        }
        for (name, error) in damaged.sorted(by: { $0.key < $1.key }) { lines.append("DAMAGED \(name): \(error)") }
        lines.append("\(snapshots.count) snapshot(s)")
        return lines.joined(separator: "\n")
    }
}
