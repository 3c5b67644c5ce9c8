import ArgumentParser
import CofferKit

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Schema migrations: status, plan (a dry run on a copy), up.",
        discussion: Help.text("""
            Coffer's own migrations (1 the seed's schema, 2 full-text search over media titles and
            uploaders) come first, then a pipeline release's NNNN_name.sql files given with
            --migrations, in number order. Each is applied in its own transaction with foreign
            keys checked before commit, and recorded with its SHA-256. A database the pipeline
            made itself is recognized and recorded as 1.

            Examples:
              coffer migrate status --migrations /srv/pipeline-2.1/migrations
              coffer migrate plan   --migrations /srv/pipeline-2.1/migrations
              coffer migrate up     --migrations /srv/pipeline-2.1/migrations --repo /backup/coffer
            """),
        subcommands: [MigrateStatus.self, MigratePlan.self, MigrateUp.self])
}

struct MigrationOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("A release's folder of NNNN_name.sql migrations, applied after Coffer's own.", valueName: "dir"))
    var migrations: String?

    func set() throws -> MigrationSet { try MigrationSet(directory: migrations) }
}

struct MigrateStatus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "List applied and pending migrations, and problems.",
        discussion: Help.text("""
            Problems: a migration whose text changed after it was applied (checksum), a database
            migrated by a newer Coffer or a release folder not given (Coffer then refuses to
            migrate it), a gap in the numbering, a pending migration numbered below an applied
            one, a schema that differs from what its history says. Read-only.

            Exit codes: 0 up to date, 1 pending migrations or problems, 2 failed (the database
            cannot be read), 64 usage (a bad migrations folder).

            Example: coffer migrate status --migrations ./release/migrations
            """))

    @OptionGroup var options: GlobalOptions
    @OptionGroup var migrationOptions: MigrationOptions

    func run() throws {
        try CofferCLI.run(options) { output in
            let set = try migrationOptions.set()
            let status = try MigrationStatus.read(try options.configuration(), set: set)
            return try output.report(status, status: status.status) { status.text() }
        }
    }
}

struct MigratePlan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Dry run: apply the pending migrations to a copy of the database and report.",
        discussion: Help.text("""
            The copy is taken with SQLite's online backup API beside the database (the pipeline
            may keep running), migrated, checked and removed; the database itself is never
            written. Per migration: time, rows per table before and after, the schema difference,
            integrity_check, foreign_key_check, and warnings for destructive steps (a table or
            column dropped, rows lost, NOT NULL added over NULLs). A failing migration is shown
            with its failing statement.

            Exit codes: 0 safe, 1 warnings, problems or a failure on the copy, 2 the plan could
            not run (no copy: space, an unreadable database), 64 usage, 130 stopped by SIGINT or
            SIGTERM (the copy removed).

            Example: coffer migrate plan --migrations ./release/migrations
            """))

    @OptionGroup var options: GlobalOptions
    @OptionGroup var migrationOptions: MigrationOptions

    func run() throws {
        try CofferCLI.run(options) { output in
            // Stopped, it removes its copy of the database (a full copy, beside the live one).
            Interruption.cooperate()
            let planner = MigrationPlanner(configuration: try options.configuration(), set: try migrationOptions.set())
            let report = try planner.run()
            return try output.report(report, status: report.exitStatus) { report.text() }
        }
    }
}

struct MigrateUp: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Back up, then apply the pending migrations, each in its own transaction.",
        discussion: Help.text("""
            First a snapshot into the repository (--repo or COFFER_REPO), or without one a copy
            beside the database (DB_PATH.pre-migrate-vN-TIME), unless --no-backup. A failing
            migration is rolled back: the database stays at the last migration that succeeded,
            and the report says how to go back to the copy. A migration that drops a table or a
            column, loses rows or adds NOT NULL over NULLs is rolled back unless
            --allow-destructive. Stop the pipeline's writers first: a table rebuild holds the
            write lock for its whole transaction.

            Exit codes: 0 migrated (or up to date), 2 failed or refused (the database is at a
            whole version, named in the report), 3 another `coffer migrate up` or backup holds
            the lock, 64 usage, 130 stopped by SIGINT or SIGTERM (the migration under way rolled
            back; the database is at the last whole version).

            Example: coffer migrate up --migrations ./release/migrations --repo /backup/coffer
            """))

    @OptionGroup var options: GlobalOptions
    @OptionGroup var migrationOptions: MigrationOptions

    @Option(help: ArgumentHelp("Stop after this migration (its number or identifier).", valueName: "id"))
    var to: String?

    @Flag(help: "Take no backup first (when one was just taken).")
    var noBackup = false

    @Flag(help: "Apply migrations that drop tables or columns, lose rows or add NOT NULL over NULLs.")
    var allowDestructive = false

    @Flag(help: "Change nothing: run `migrate plan` (every pending migration, on a copy) instead.")
    var dryRun = false

    func validate() throws {
        if noBackup && options.repo != nil { throw ValidationError("--repo and --no-backup exclude each other") }
    }

    func run() throws {
        if dryRun {
            var plan = MigratePlan()
            plan.options = options
            plan.migrationOptions = migrationOptions
            return try plan.run()
        }
        try CofferCLI.run(options) { output in
            Interruption.cooperate()
            var upgrader = MigrationUpgrader(configuration: try options.configuration(), set: try migrationOptions.set())
            upgrader.target = to
            upgrader.allowDestructive = allowDestructive
            if noBackup { upgrader.backup = .none }
            let report = try upgrader.run()
            return try output.report(report, status: report.exitStatus) { report.text() }
        }
    }
}
