import Foundation

/// A snapshot repository: `config.json`, `packs/`, `snapshots/`, `tmp/` and `lock`.
///
/// Objects are only ever added whole (see ``RepositoryStorage``); a snapshot record is written
/// after the pack it needs, so a run killed at any moment leaves no listed snapshot that
/// points at missing bytes. What a killed run left in `tmp/` is swept by the next backup.
public final class Repository {
    public struct Config: Codable, Sendable {
        public var format = "coffer-repository"
        public var version = 1
        public var id: String
        public var created: String

        /// A repository's identity, made now: a new id, or `(new)` for one not created yet.
        static func made(id: String = UUID().uuidString.lowercased()) -> Config {
            Config(id: id, created: UTCTime.iso8601(Date(), fractions: false))
        }
    }

    public let storage: RepositoryStorage
    public let config: Config
    public var location: String { storage.location }

    init(storage: RepositoryStorage, config: Config) {
        self.storage = storage
        self.config = config
    }

    /// The usage error of a command run without a repository.
    static let noRepository = CofferError(.usage, operation: "open repository", cause: "no repository given",
                                          hint: "set COFFER_REPO or pass --repo DIR (or s3://BUCKET/PREFIX)")

    /// Opens the repository at `location`; with `create`, makes it when the directory is
    /// missing or empty. A directory that holds something else is refused (exit 2).
    /// With `allowMissing` (a dry run), a repository that does not exist yet is returned empty,
    /// without creating anything.
    public static func open(_ location: String?, create: Bool = false, allowMissing: Bool = false) throws -> Repository {
        guard let location else { throw noRepository }
        if location.hasPrefix("s3://") { return try openInBucket(location, create: create, allowMissing: allowMissing) }
        guard !location.contains("://") else {
            throw CofferError(.usage, operation: "open repository", subject: location,
                              cause: "only local directories and s3:// addresses are supported",
                              hint: "give a directory path or s3://BUCKET/PREFIX")
        }
        let storage = LocalStorage(root: location)
        if let config = try readConfig(location) { return Repository(storage: storage, config: config) }
        switch FileSystem.status(location) {
        case .success(let info) where info.kind != .directory:
            throw CofferError(.failed, operation: "open repository", subject: location, cause: "not a directory")
        case .success:
            break
        case .failure:
            if allowMissing {
                return Repository(storage: storage, config: .made(id: "(new)"))
            }
            guard create else {
                throw noRepository(location)
            }
            try FileSystem.makeDirectories(location, mode: 0o700)
        }
        // Creation happens under the exclusive lock, so two first runs cannot both create it.
        let lock = try RepositoryLock.acquire(location + "/lock", exclusive: true, command: "init")
        defer { withExtendedLifetime(lock) {} }
        if let config = try readConfig(location) { return Repository(storage: storage, config: config) }
        let entries = ((try? FileManager.default.contentsOfDirectory(atPath: location)) ?? []).filter { $0 != "lock" }
        guard entries.isEmpty else {
            throw CofferError(.failed, operation: "open repository", subject: location,
                              cause: "not a coffer repository (no config.json) and not empty", hint: "choose an empty or new directory")
        }
        guard create else {
            throw noRepository(location)
        }
        for folder in ["packs", "snapshots", "tmp"] { try FileSystem.makeDirectory(location + "/" + folder, mode: 0o700) }
        let config = Config.made()
        let pending = try storage.create("config.json")
        let data = try JSONEncoder().encode(config)
        try data.withUnsafeBytes { try pending.write($0) }
        try storage.commit(pending)
        return Repository(storage: storage, config: config)
    }

    /// A repository in an S3-compatible bucket: endpoint, region and credentials from the AWS
    /// environment variables. Made like a local one: config.json written last, under a lock.
    static func openInBucket(_ location: String, create: Bool, allowMissing: Bool) throws -> Repository {
        let address = try S3Address(location)
        guard let credentials = ObjectStoreCredentials.fromEnvironment() else {
            throw CofferError(.usage, operation: "open repository", subject: location, cause: "no credentials for the object store",
                              hint: "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones)")
        }
        let client = S3Client(bucket: address.bucket, endpoint: try S3Endpoint.fromEnvironment(), credentials: credentials)
        let storage = S3Storage(address: address, client: client)
        if let data = try client.getObject(address.key("config.json")) {
            return Repository(storage: storage, config: try decodeConfig(data, location))
        }
        if allowMissing {
            return Repository(storage: storage, config: .made(id: "(new)"))
        }
        guard create else { throw noRepository(location) }
        let lock = try ObjectLock.acquire(storage, exclusive: true, command: "init")
        defer { withExtendedLifetime(lock) {} }
        if let data = try client.getObject(address.key("config.json")) {
            return Repository(storage: storage, config: try decodeConfig(data, location))
        }
        let others = try client.listObjects(prefix: address.prefix.isEmpty ? "" : address.prefix + "/", pageSize: 10)
            .filter { !$0.key.hasPrefix(address.key("locks/")) }
        guard others.isEmpty else {
            throw CofferError(.failed, operation: "open repository", subject: location,
                              cause: "not a coffer repository (no config.json) and not empty (\(others[0].key))",
                              hint: "choose an empty bucket or a new prefix")
        }
        let config = Config.made()
        let pending = try storage.create("config.json")
        try JSONEncoder().encode(config).withUnsafeBytes { try pending.write($0) }
        try storage.commit(pending)
        return Repository(storage: storage, config: config)
    }

    static func noRepository(_ location: String) -> CofferError {
        CofferError(.failed, operation: "open repository", subject: location, cause: "no repository there",
                    hint: "`coffer backup --repo \(location)` creates one")
    }

    /// The repository's config.json, or `nil` when there is none.
    static func readConfig(_ location: String) throws -> Config? {
        guard let data = try? Data(contentsOf: URL(fileURLWithPath: location + "/config.json")) else { return nil }
        return try decodeConfig(data, location)
    }

    static func decodeConfig(_ data: Data, _ location: String) throws -> Config {
        guard let config = try? JSONDecoder().decode(Config.self, from: data), config.format == "coffer-repository" else {
            throw CofferError(.failed, operation: "open repository", subject: location, cause: "config.json is not a coffer repository's")
        }
        guard config.version <= 1 else {
            throw CofferError(.failed, operation: "open repository", subject: location,
                              cause: "repository version \(config.version) is newer than this coffer knows", hint: "use a newer coffer")
        }
        return config
    }

    /// One run at a time: an flock on `lock` in a directory (it dies with its process), a lock
    /// object with an expiry in a bucket (for runs on other hosts). Held while referenced.
    public func lock(exclusive: Bool, command: String) throws -> AnyObject {
        try storage.lock(exclusive: exclusive, command: command)
    }

    /// Every complete snapshot, oldest first. Damaged records are returned in `damaged`.
    public func snapshots() throws -> (snapshots: [Snapshot], damaged: [(name: String, error: CofferError)]) {
        let (snapshots, damaged) = try read(records: recordNames())
        return (snapshots.sorted { Self.isOlder($0.header, than: $1.header) }, damaged)
    }

    /// The header and summary of each named record; a damaged one is set aside with its error.
    func read(records names: [String]) throws -> (snapshots: [Snapshot], damaged: [(name: String, error: CofferError)]) {
        var snapshots: [Snapshot] = []
        var damaged: [(String, CofferError)] = []
        for name in names {
            do {
                snapshots.append(try reader(name).snapshot())
            } catch let error as CofferError {
                damaged.append((name, error))
            }
        }
        return (snapshots, damaged)
    }

    /// The names of the snapshot records (`snapshots/ID.jsonl`).
    func recordNames() throws -> [String] { try storage.list("snapshots").filter { $0.hasSuffix(".jsonl") } }

    /// The order of snapshots: by time, then by id.
    static func isOlder(_ a: Snapshot.Header, than b: Snapshot.Header) -> Bool {
        a.time == b.time ? a.id < b.id : a.time < b.time
    }

    func reader(_ name: String) throws -> SnapshotReader {
        SnapshotReader(name: name, storage: storage)
    }

    public func reader(for snapshot: Snapshot) throws -> SnapshotReader { try reader("snapshots/\(snapshot.id).jsonl") }

    /// A volume, as a snapshot's header names it: the host that took it, its DB_PATH and its
    /// MEDIA_ROOT. Prune's keep rules and `latest` go by it.
    public struct Volume: Hashable, Sendable {
        public var host: String
        public var dbPath: String
        public var mediaRoot: String

        public init(host: String = ProcessInfo.processInfo.hostName, dbPath: String, mediaRoot: String) {
            self.host = host
            self.dbPath = dbPath
            self.mediaRoot = mediaRoot
        }

        init(_ header: Snapshot.Header) { self.init(host: header.host, dbPath: header.dbPath, mediaRoot: header.mediaRoot) }

        var description: String { "host \(host), \(PathText.display(dbPath)), \(PathText.display(mediaRoot))" }
    }

    /// `latest`, a full id or a unique prefix of one. Only the records it names are read whole:
    /// ids are the records' file names, and `latest` needs every header but one summary.
    ///
    /// `latest` is the newest snapshot of `volume` (the one the command was configured for):
    /// this host's with its DB_PATH and MEDIA_ROOT, else those paths' when a single host took
    /// them (this host renamed, a container made anew). Without one, it is the newest of the
    /// only volume (host, DB_PATH, MEDIA_ROOT) the repository holds. Otherwise it is not
    /// guessed: restoring another machine's data, or rehearsing with it, would be the wrong
    /// thing done without a word.
    public func resolve(_ reference: String, volume: Volume? = nil) throws -> Snapshot {
        if reference == "latest" {
            let all = try headers()
            if let volume, let last = try newest(of: volume, among: all) { return last }
            var newestOf: [Volume: Snapshot.Header] = [:]
            for (_, header) in all {
                let key = Volume(header)
                if let known = newestOf[key], !Self.isOlder(known, than: header) { continue }
                newestOf[key] = header
            }
            if newestOf.count > 1 {
                let listed = newestOf.values.sorted { Self.isOlder($1, than: $0) }.map { "\($0.id) (\(Volume($0).description))" }
                throw CofferError(.usage, operation: "find snapshot", subject: "latest",
                                  cause: "the repository holds snapshots of \(newestOf.count) volumes"
                                      + (volume.map { ", none of them this one (\($0.description))" } ?? ""),
                                  hint: "name the snapshot with --snapshot ID; the newest of each volume: " + listed.joined(separator: "; "))
            }
            guard let last = try newest(among: all, where: { _ in true }) else {
                throw CofferError(.failed, operation: "find snapshot", subject: location, cause: "the repository has no snapshot",
                                  hint: "`coffer backup` takes one")
            }
            return last
        }
        // A damaged record is not listed, so not matched either.
        let matches = try read(records: recordNames().filter { Self.id(ofRecord: $0).hasPrefix(reference) }).snapshots
        guard matches.count == 1 else {
            throw CofferError(.usage, operation: "find snapshot", subject: reference,
                              cause: matches.isEmpty ? "no such snapshot" : "\(matches.count) snapshots start with it",
                              hint: "`coffer snapshots` lists them")
        }
        return matches[0]
    }

    /// The newest readable snapshot whose header passes `filter`, in the order of
    /// ``snapshots()``: the headers (first lines) of all records are read, the summary only of
    /// the records tried, newest first (a damaged one is passed over, as the listing leaves it out).
    public func newest(where filter: (Snapshot.Header) -> Bool) throws -> Snapshot? {
        try newest(among: headers(), where: filter)
    }

    /// The newest snapshot of `volume`: this host's with its paths, else those paths' when a
    /// single host took them (this host renamed); nil when there is none, or several hosts
    /// took them (whose is not guessed).
    public func newestOfVolume(_ volume: Volume) throws -> Snapshot? { try newest(of: volume, among: headers()) }

    func newest(of volume: Volume, among all: [(name: String, header: Snapshot.Header)]) throws -> Snapshot? {
        let exact = all.filter { Volume($0.header) == volume }
        if !exact.isEmpty { return try newest(among: exact, where: { _ in true }) }
        let paths = all.filter { $0.header.dbPath == volume.dbPath && $0.header.mediaRoot == volume.mediaRoot }
        guard Set(paths.map(\.header.host)).count == 1 else { return nil }
        return try newest(among: paths, where: { _ in true })
    }

    /// Every record's header (its first line), by record name; damaged ones left out, as by
    /// the listing.
    func headers() throws -> [(name: String, header: Snapshot.Header)] {
        var headers: [(name: String, header: Snapshot.Header)] = []
        for name in try recordNames() {
            do {
                headers.append((name, try reader(name).header()))
            } catch is CofferError {
                continue // damaged: left out, as by the listing
            }
        }
        return headers
    }

    func newest(among all: [(name: String, header: Snapshot.Header)], where filter: (Snapshot.Header) -> Bool) throws -> Snapshot? {
        let headers = all.filter { filter($0.header) }.sorted { Self.isOlder($0.header, than: $1.header) }
        for (name, _) in headers.reversed() {
            do {
                return try reader(name).snapshot()
            } catch is CofferError {
                continue
            }
        }
        return nil
    }

    /// A record's snapshot id: its file name without folder and `.jsonl`.
    static func id(ofRecord name: String) -> String {
        String((name.split(separator: "/").last ?? Substring(name)).dropLast(".jsonl".count))
    }
}
