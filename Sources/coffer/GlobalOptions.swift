import ArgumentParser
import CofferKit
import Foundation
import Logging

/// Flags every command takes: the configuration and the output style.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("A KEY=VALUE file (the pipeline's .env works).", valueName: "file"))
    var config: String?

    @Option(name: .customLong("db"), help: ArgumentHelp("The database (DB_PATH).", valueName: "path"))
    var dbPath: String?

    @Option(name: .customLong("media-root"), help: ArgumentHelp("The media tree (MEDIA_ROOT).", valueName: "dir"))
    var mediaRoot: String?

    @Option(name: .long, help: ArgumentHelp("The snapshot repository: a directory, or s3://BUCKET/PREFIX (COFFER_REPO).", valueName: "repo"))
    var repo: String?

    @Option(name: .customLong("min-free-space-gb"), help: ArgumentHelp("MIN_FREE_SPACE_GB.", valueName: "GiB"))
    var minFreeSpaceGB: String?

    @Option(name: .customLong("alert-free-space-gb"), help: ArgumentHelp("ALERT_FREE_SPACE_GB.", valueName: "GiB"))
    var alertFreeSpaceGB: String?

    @Option(name: .customLong("temp-dir-template"), help: ArgumentHelp("TEMP_DIR_TEMPLATE.", valueName: "template"))
    var tempDirTemplate: String?

    @Option(name: .customLong("library-path-template"), help: ArgumentHelp("LIBRARY_PATH_TEMPLATE.", valueName: "template"))
    var libraryPathTemplate: String?

    @Flag(name: .long, help: "Print one JSON document on stdout and nothing else there.")
    var json = false

    @Flag(name: .shortAndLong, help: "Print nothing but errors.")
    var quiet = false

    @Flag(name: .shortAndLong, help: "Print more detail (every finding, debug logs on stderr).")
    var verbose = false

    func validate() throws {
        if quiet && verbose { throw ValidationError("--quiet and --verbose exclude each other") }
    }

    var flags: [SettingKey: String] {
        var flags: [SettingKey: String] = [:]
        flags[.dbPath] = dbPath
        flags[.mediaRoot] = mediaRoot
        flags[.repo] = repo
        flags[.minFreeSpaceGB] = minFreeSpaceGB
        flags[.alertFreeSpaceGB] = alertFreeSpaceGB
        flags[.tempDirTemplate] = tempDirTemplate
        flags[.libraryPathTemplate] = libraryPathTemplate
        return flags
    }

    func configuration() throws -> CofferConfiguration {
        try CofferConfiguration.resolve(flags: flags, configFile: config)
    }

    func logger(_ label: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = verbose ? .debug : quiet ? .error : .warning
        return logger
    }
}
