import GRDB

/// The schema of a database as a migration report compares it: tables with their columns,
/// foreign keys and row counts, indexes, triggers and views.
///
/// FTS shadow tables, SQLite's own tables and the migration history are left out: they change
/// with the objects that own them.
struct SchemaShape {
    struct Column: Equatable {
        var name: String
        var type: String
        var notNull: Bool
        var defaultValue: String?
        var primaryKey: Int

        var definition: String {
            ([type.isEmpty ? "(no type)" : type] + (notNull ? ["NOT NULL"] : []) + (defaultValue.map { ["DEFAULT \($0)"] } ?? [])
                + (primaryKey > 0 ? ["PRIMARY KEY"] : [])).joined(separator: " ")
        }
    }

    struct Table {
        var name: String
        var virtual: Bool
        var sql: String
        var columns: [Column]
        var foreignKeys: Set<String>
        /// Rows, for ordinary tables when counted.
        var rows: Int?
        /// Non-NULL values per column (but the primary key), when counted.
        var values: [String: Int] = [:]

        func nulls(_ column: String) -> Int? { rows.flatMap { rows in values[column].map { rows - $0 } } }
    }

    var tables: [String: Table] = [:]
    var indexes: [String: String] = [:]
    var triggers: [String: String] = [:]
    var views: [String: String] = [:]

    static func isInternal(_ name: String) -> Bool {
        name.hasPrefix("sqlite_") || name == "grdb_migrations" || name == MigrationHistory.table
    }

    /// Reads the schema; with `counting`, also rows per table and NULLs per nullable column
    /// (one scan of each table).
    static func read(_ db: Database, counting: Bool) throws -> SchemaShape {
        var shape = SchemaShape()
        for row in try Row.fetchAll(db, sql: "SELECT name, type FROM pragma_table_list WHERE schema = 'main'") {
            guard let name: String = row["name"], let type: String = row["type"],
                  type == "table" || type == "virtual", !isInternal(name) else { continue }
            let sql = try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", arguments: [name]) ?? ""
            var table = Table(name: name, virtual: type == "virtual", sql: SQLText.normalized(sql), columns: [], foreignKeys: [])
            for column in try Row.fetchAll(db, sql: "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_xinfo(?) WHERE hidden <> 1", arguments: [name]) {
                table.columns.append(Column(name: column["name"] ?? "", type: (column["type"] as String? ?? "").uppercased(),
                                            notNull: column["notnull"] ?? false, defaultValue: column["dflt_value"],
                                            primaryKey: column["pk"] ?? 0))
            }
            for key in try Row.fetchAll(db, sql: "SELECT \"from\", \"table\", \"to\", on_delete, on_update FROM pragma_foreign_key_list(?)", arguments: [name]) {
                let from: String = key["from"] ?? "", parent: String = key["table"] ?? "", to: String? = key["to"]
                table.foreignKeys.insert("\(name).\(from) → \(parent)(\(to ?? "primary key")) on delete \(key["on_delete"] as String? ?? "")")
            }
            if counting && !table.virtual {
                let counted = table.columns.filter { $0.primaryKey == 0 }
                let selections = ["count(*)"] + counted.map { "count(\($0.name.quotedDatabaseIdentifier))" }
                if let counts = try Row.fetchOne(db, sql: "SELECT \(selections.joined(separator: ", ")) FROM \(name.quotedDatabaseIdentifier)") {
                    table.rows = counts[0]
                    for (index, column) in counted.enumerated() { table.values[column.name] = counts[index + 1] }
                }
            }
            shape.tables[name] = table
        }
        for row in try Row.fetchAll(db, sql: "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type IN ('index', 'trigger', 'view')") {
            guard let type: String = row["type"], let name: String = row["name"], let table: String = row["tbl_name"],
                  !isInternal(table), let sql: String = row["sql"] else { continue } // automatic indexes have no SQL
            if shape.tables[table] == nil && type != "view" { continue } // belongs to a shadow table
            switch type {
            case "index": shape.indexes[name] = SQLText.normalized(sql)
            case "trigger": shape.triggers[name] = SQLText.normalized(sql)
            default: shape.views[name] = SQLText.normalized(sql)
            }
        }
        return shape
    }

    var rowCounts: [String: Int] { tables.compactMapValues(\.rows) }
}

/// What a migration changed in the schema, and what of it loses data.
public struct SchemaChange: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable { case added, dropped, changed }
    /// `table`, `column`, `index`, `trigger`, `view`, `foreign key`.
    public var object: String
    public var name: String
    public var change: Kind
    public var detail: String?
}

public struct MigrationWarning: Sendable, Codable, Equatable {
    public enum Kind: String, Sendable, Codable {
        case tableDropped = "table_dropped", columnDropped = "column_dropped", rowsLost = "rows_lost"
        case notNullOverNulls = "not_null_over_nulls", foreignKeyDropped = "foreign_key_dropped"
        case indexDropped = "index_dropped", triggerDropped = "trigger_dropped", valuesLost = "values_lost"
        case builtInDropped = "built_in_dropped"
    }
    public var kind: Kind
    public var message: String
    /// Data is lost or changed: `migrate up` needs --allow-destructive.
    public var destructive: Bool
}

struct SchemaDiff {
    var changes: [SchemaChange] = []
    var warnings: [MigrationWarning] = []

    init(before: SchemaShape, after: SchemaShape) {
        for name in Set(before.tables.keys).union(after.tables.keys).sorted() {
            switch (before.tables[name], after.tables[name]) {
            case (nil, let added?):
                changes.append(SchemaChange(object: added.virtual ? "virtual table" : "table", name: name, change: .added,
                                            detail: added.columns.map(\.name).joined(separator: ", ")))
            case (let dropped?, nil):
                changes.append(SchemaChange(object: dropped.virtual ? "virtual table" : "table", name: name, change: .dropped))
                if !dropped.virtual {
                    warnings.append(MigrationWarning(kind: .tableDropped, message: "table \(name) dropped"
                        + (dropped.rows.map { " with its \($0) row(s)" } ?? ""), destructive: true))
                }
            case (let old?, let new?):
                compare(old, new)
            case (nil, nil):
                break
            }
        }
        compareObjects("index", before.indexes, after.indexes, warning: .indexDropped)
        compareObjects("trigger", before.triggers, after.triggers, warning: .triggerDropped)
        compareObjects("view", before.views, after.views, warning: nil)
    }

    var destructive: [MigrationWarning] { warnings.filter(\.destructive) }

    private mutating func compare(_ old: SchemaShape.Table, _ new: SchemaShape.Table) {
        let name = new.name
        let oldColumns = Dictionary(old.columns.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let newColumns = Dictionary(new.columns.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for column in new.columns where oldColumns[column.name] == nil {
            changes.append(SchemaChange(object: "column", name: "\(name).\(column.name)", change: .added, detail: column.definition))
        }
        for column in old.columns where newColumns[column.name] == nil {
            changes.append(SchemaChange(object: "column", name: "\(name).\(column.name)", change: .dropped))
            let references = old.foreignKeys.filter { $0.hasPrefix("\(name).\(column.name) → ") }
            warnings.append(MigrationWarning(kind: .columnDropped, message: "column \(name).\(column.name) dropped"
                + (references.isEmpty ? "" : " with its reference \(references.sorted().joined(separator: ", "))"), destructive: true))
        }
        for column in new.columns {
            guard let previous = oldColumns[column.name], previous != column else { continue }
            changes.append(SchemaChange(object: "column", name: "\(name).\(column.name)", change: .changed,
                                        detail: "\(previous.definition) → \(column.definition)"))
            if column.notNull && !previous.notNull, let nulls = old.nulls(column.name), nulls > 0 {
                warnings.append(MigrationWarning(kind: .notNullOverNulls,
                    message: "\(name).\(column.name) became NOT NULL over \(nulls) NULL value(s): they were changed or their rows dropped",
                    destructive: true))
            }
        }
        // Values that became NULL (a column dropped and added again, an UPDATE to NULL), beyond
        // what lost rows explain.
        let rowsLost = max(0, (old.rows ?? 0) - (new.rows ?? 0))
        for column in new.columns {
            guard let before = old.values[column.name], let after = new.values[column.name], before - after > rowsLost else { continue }
            warnings.append(MigrationWarning(kind: .valuesLost,
                message: "\(name).\(column.name): \(before - after - rowsLost) value(s) became NULL (\(before) → \(after) non-NULL)", destructive: true))
        }
        for key in new.foreignKeys.subtracting(old.foreignKeys).sorted() {
            changes.append(SchemaChange(object: "foreign key", name: key, change: .added))
        }
        for key in old.foreignKeys.subtracting(new.foreignKeys).sorted() {
            changes.append(SchemaChange(object: "foreign key", name: key, change: .dropped))
            if newColumns[String(key.dropFirst(name.count + 1).prefix { $0 != " " })] != nil {
                warnings.append(MigrationWarning(kind: .foreignKeyDropped, message: "foreign key \(key) dropped", destructive: false))
            }
        }
        if old.sql != new.sql && old.columns == new.columns && old.foreignKeys == new.foreignKeys {
            changes.append(SchemaChange(object: "table", name: name, change: .changed, detail: "constraints or options (the table was rebuilt)"))
        }
        if let before = old.rows, let after = new.rows, after < before {
            warnings.append(MigrationWarning(kind: .rowsLost, message: "\(name): \(before - after) row(s) lost (\(before) → \(after))",
                                             destructive: true))
        }
    }

    private mutating func compareObjects(_ object: String, _ old: [String: String], _ new: [String: String],
                                         warning: MigrationWarning.Kind?) {
        for name in Set(old.keys).union(new.keys).sorted() {
            switch (old[name], new[name]) {
            case (nil, _?): changes.append(SchemaChange(object: object, name: name, change: .added))
            case (_?, nil):
                changes.append(SchemaChange(object: object, name: name, change: .dropped))
                if let warning { warnings.append(MigrationWarning(kind: warning, message: "\(object) \(name) dropped", destructive: false)) }
            case (let a?, let b?) where a != b:
                changes.append(SchemaChange(object: object, name: name, change: .changed, detail: b))
            default: break
            }
        }
    }
}

/// SQL text compared by meaning rather than layout: comments dropped, whitespace collapsed,
/// quoted text kept as written. It works on Unicode scalars, not Characters: "\r\n" is one
/// Character in Swift, and a comment must end at the "\n" of a CRLF line.
enum SQLText {
    static func normalized(_ sql: String) -> String {
        var out = String.UnicodeScalarView()
        let chars = Array(sql.unicodeScalars)
        var i = 0
        var pendingSpace = false
        func emit(_ c: Unicode.Scalar) {
            // No space after ( nor before ) or ,.
            if pendingSpace && !out.isEmpty && out.last != "(" && c != ")" && c != "," { out.append(" ") }
            pendingSpace = false
            out.append(c)
        }
        while i < chars.count {
            let c = chars[i]
            if c == "-" && i + 1 < chars.count && chars[i + 1] == "-" {
                while i < chars.count && chars[i] != "\n" { i += 1 }
                pendingSpace = true
                continue
            }
            if c == "/" && i + 1 < chars.count && chars[i + 1] == "*" {
                i += 2
                while i + 1 < chars.count && !(chars[i] == "*" && chars[i + 1] == "/") { i += 1 }
                i += 2
                pendingSpace = true
                continue
            }
            if c.properties.isWhitespace { pendingSpace = true; i += 1; continue }
            if c == "'" || c == "\"" || c == "`" || c == "[" {
                let close: Unicode.Scalar = c == "[" ? "]" : c
                emit(c)
                i += 1
                while i < chars.count {
                    out.append(chars[i])
                    if chars[i] == close {
                        if close != "]" && i + 1 < chars.count && chars[i + 1] == close { out.append(close); i += 2; continue }
                        i += 1
                        break
                    }
                    i += 1
                }
                continue
            }
            emit(c)
            i += 1
        }
        return String(out)
    }

    /// The first keyword of a statement, uppercased (`BEGIN`, `ATTACH`...).
    static func firstKeyword(_ sql: String) -> String {
        String(String(normalized(sql).unicodeScalars.prefix { $0.properties.isAlphabetic })).uppercased()
    }
}
