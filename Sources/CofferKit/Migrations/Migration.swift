import Crypto
import Foundation

/// One schema migration: Coffer's own, or a `NNNN_name.sql` file of a pipeline release.
public struct Migration: Sendable, Equatable {
    public enum Source: String, Sendable, Codable { case builtIn = "built-in", release }

    /// The number it is ordered by (`3` for `0003_jobs_paused.sql`).
    public var id: Int
    public var name: String
    public var sql: String
    public var source: Source
    /// The release file it came from.
    public var file: String?

    public init(id: Int, name: String, sql: String, source: Source, file: String? = nil) {
        self.id = id
        self.name = name
        self.sql = sql
        self.source = source
        self.file = file
    }

    /// `0003_jobs_paused`: the identifier recorded in the history.
    public var identifier: String { Migration.identifier(id: id, name: name) }

    /// SHA-256 of the text, as recorded when it is applied.
    public var sha256: String { Digest.hex(SHA256.hash(data: Data(sql.utf8))) }

    static func identifier(id: Int, name: String) -> String {
        let number = String(id)
        return String(repeating: "0", count: max(0, 4 - number.count)) + number + "_" + name
    }

    /// `0003_jobs_paused` → (3, "jobs_paused"); nil for anything else.
    static func parse(identifier: String) -> (id: Int, name: String)? {
        let parts = identifier.split(separator: "_", maxSplits: 1)
        guard parts.count == 2, parts[0].count >= 4, parts[0].allSatisfy(\.isASCII), parts[0].allSatisfy(\.isNumber),
              let id = Int(parts[0]), id > 0,
              parts[1].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") })
        else { return nil }
        return (id, String(parts[1]))
    }
}

/// The migrations Coffer knows for one run: its built-in ones, then a release's folder.
public struct MigrationSet: Sendable {
    public private(set) var migrations: [Migration]
    /// The release folder, when one was given.
    public var directory: String?

    public static let builtIn: [Migration] = [
        Migration(id: 1, name: "seed", sql: SeedSchema.sql, source: .builtIn),
        Migration(id: 2, name: "media_fts", sql: MediaSearch.sql, source: .builtIn),
    ]

    public init(directory: String? = nil) throws {
        migrations = MigrationSet.builtIn
        self.directory = directory
        if let directory { migrations += try MigrationSet.load(directory, after: MigrationSet.builtIn.last!.id) }
    }

    public func migration(identifier: String) -> Migration? { migrations.first { $0.identifier == identifier } }

    /// `3`, `0003` or `0003_jobs_paused` → that migration.
    public func resolve(_ target: String) throws -> Migration {
        if let found = migrations.first(where: { $0.identifier == target }) { return found }
        if let number = Int(target), let found = migrations.first(where: { $0.id == number }) { return found }
        throw CofferError(.usage, operation: "find migration", subject: target,
                          cause: "no such migration (known: \(migrations.map(\.identifier).joined(separator: ", ")))",
                          hint: "pass its number or identifier, e.g. --to \(migrations.last!.id)")
    }

    /// Reads a release's `NNNN_name.sql` files. Other files are ignored; a `.sql` file with
    /// another name, a duplicate or a number taken by Coffer's own migrations is refused.
    static func load(_ directory: String, after lastBuiltIn: Int) throws -> [Migration] {
        guard case .success(let info) = FileSystem.status(PathBytes(directory.utf8), followLinks: true), info.kind == .directory else {
            throw CofferError(.usage, operation: "read migrations folder", subject: directory, cause: "not a directory",
                              hint: "pass the release's folder of NNNN_name.sql files with --migrations")
        }
        var names: [PathBytes] = []
        try DirectoryWalker(root: directory).list { entry in
            if entry.kind != .directory { names.append(entry.relativePath) }
        }
        var found: [Migration] = []
        for name in names {
            let text = String(decoding: name, as: UTF8.self)
            guard text.hasSuffix(".sql") else { continue }
            let path = directory + "/" + text
            guard Array(text.utf8) == name, let parsed = Migration.parse(identifier: String(text.dropLast(4))) else {
                throw CofferError(.usage, operation: "read migration", subject: PathText.display(Array(directory.utf8) + [0x2F] + name),
                                  cause: "the name is not NNNN_name.sql (four or more digits, then letters, digits, _ or -)",
                                  hint: "rename it, e.g. 0003_jobs_paused.sql, or move it out of the folder")
            }
            guard parsed.id > lastBuiltIn else {
                throw CofferError(.usage, operation: "read migration", subject: path,
                                  cause: "numbers up to \(lastBuiltIn) are Coffer's own migrations",
                                  hint: "number the release's migrations from \(String(format: "%04d", lastBuiltIn + 1))")
            }
            if let twin = found.first(where: { $0.id == parsed.id }) {
                throw CofferError(.usage, operation: "read migration", subject: path,
                                  cause: "number \(parsed.id) is also \(twin.file ?? twin.identifier)",
                                  hint: "each migration needs its own number")
            }
            let bytes: Data
            do { bytes = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
                throw CofferError(.usage, operation: "read migration", subject: path, cause: "\(error.localizedDescription)")
            }
            guard let sql = String(data: bytes, encoding: .utf8) else {
                throw CofferError(.usage, operation: "read migration", subject: path, cause: "not UTF-8 text")
            }
            found.append(Migration(id: parsed.id, name: parsed.name, sql: sql, source: .release, file: path))
        }
        return found.sorted { $0.id < $1.id }
    }
}

/// Migration 2: the seed's planned full-text search over media titles and uploaders.
///
/// An external-content FTS5 table over `media` (no second copy of the text), kept in sync by
/// triggers, filled from the existing rows. The tokenizer folds case and diacritics (`cafe`
/// finds `Café`, decomposed or not) and keeps emoji as tokens (`So`/`Sk` and combining marks are
/// token characters), so a search for 🎉 finds a title with 🎉. The update trigger fires only
/// when a searched column changes, so rewriting media paths (restore) does not touch it.
public enum MediaSearch {
    public static let sql = """
        -- Full-text search over media titles and uploaders (the seed's planned FTS5 index)
        CREATE VIRTUAL TABLE media_fts USING fts5(
          source_title, source_uploader,
          content = 'media', content_rowid = 'id',
          tokenize = "unicode61 remove_diacritics 2 categories 'L* N* Co So Sk Mn Mc Me'"
        );

        CREATE TRIGGER media_fts_insert AFTER INSERT ON media BEGIN
          INSERT INTO media_fts (rowid, source_title, source_uploader)
          VALUES (new.id, new.source_title, new.source_uploader);
        END;

        CREATE TRIGGER media_fts_delete AFTER DELETE ON media BEGIN
          INSERT INTO media_fts (media_fts, rowid, source_title, source_uploader)
          VALUES ('delete', old.id, old.source_title, old.source_uploader);
        END;

        CREATE TRIGGER media_fts_update AFTER UPDATE OF id, source_title, source_uploader ON media BEGIN
          INSERT INTO media_fts (media_fts, rowid, source_title, source_uploader)
          VALUES ('delete', old.id, old.source_title, old.source_uploader);
          INSERT INTO media_fts (rowid, source_title, source_uploader)
          VALUES (new.id, new.source_title, new.source_uploader);
        END;

        INSERT INTO media_fts (media_fts) VALUES ('rebuild');
        """
}
