import ArgumentParser
import CofferKit
import Foundation

/// Everything a command prints goes through here, so `--json`, `--quiet` and the exit codes
/// behave the same in every command.
struct Output {
    let options: GlobalOptions
    /// The figures of the report printed, for the metrics file.
    let figures = FiguresBox()

    final class FiguresBox { var value: RunFigures? }

    /// Human text on stdout (not with --json or --quiet).
    func text(_ text: String) {
        guard !options.json, !options.quiet else { return }
        print(text)
    }

    /// The JSON document on stdout (only with --json).
    func json(_ value: some Encodable) throws {
        if let reporting = value as? MetricsReporting { figures.value = reporting.figures }
        guard options.json else { return }
        print(try Formatting.json(value))
    }

    /// A command's report: the JSON document with --json, otherwise its text, which --quiet
    /// holds back unless something is wrong. Returns the exit status.
    func report(_ value: some Encodable, status: ExitStatus, text: () -> String) throws -> ExitStatus {
        try json(value)
        // --quiet holds back a report only when all is well: cron mails what went wrong.
        if !options.json, status != .ok || !options.quiet { print(text()) }
        return status
    }

    /// ``report(_:status:text:)`` for a report whose top-level list `key` may be long: with
    /// --json, `shell` (the report with that list emptied) is printed with `elements` written
    /// one at a time, the same document.
    func report(_ value: some Encodable, shell: some Encodable, list key: String, elements: [some Encodable],
                status: ExitStatus, text: () -> String) throws -> ExitStatus {
        guard options.json else { return try report(value, status: status, text: text) }
        if let reporting = value as? MetricsReporting { figures.value = reporting.figures }
        fflush(stdout)
        try Formatting.writeJSON(shell, list: key, elements: elements) { piece in
            piece.withUnsafeBytes { _ = fwrite($0.baseAddress, 1, $0.count, stdout) }
        }
        fputs("\n", stdout)
        fflush(stdout)
        return status
    }

    /// `error: operation path: cause` and `hint: ...` on stderr.
    static func report(_ error: CofferError) {
        var message = "error: \(error.message)\n"
        if let hint = error.hint { message += "hint: \(hint)\n" }
        FileHandle.standardError.write(Data(message.utf8))
    }

    static func warn(_ text: String) {
        FileHandle.standardError.write(Data("warning: \(text)\n".utf8))
    }
}

struct ErrorDocument: Encodable {
    var error: String
    var hint: String?
    var exitCode: Int32
    enum CodingKeys: String, CodingKey { case error, hint, exitCode = "exit_code" }
}

/// `--metrics-file`, on the commands an operator runs unattended.
struct MetricsOptions: ParsableArguments {
    @Option(name: .customLong("metrics-file"),
            help: ArgumentHelp("Also write this run's metrics (Prometheus text format) into this file, e.g. node_exporter's textfile folder.",
                               valueName: "file"))
    var metricsFile: String?
}

/// Runs a command's body and turns its outcome into the documented exit code. This is the one
/// place where Coffer errors become exit codes (and where `--metrics-file` is written).
enum CofferCLI {
    /// `command` and, for commands on a repository, `repositoryLabel` name the run's series in
    /// the metrics file (a run that failed before its report still has them).
    static func run(_ options: GlobalOptions, metrics: MetricsOptions? = nil, command: String = "", repositoryLabel: Bool = false,
                    _ body: (Output) throws -> ExitStatus) throws {
        let started = Date()
        var metricsFile = metrics?.metricsFile
        if let path = metricsFile {
            // A monitoring problem must not cost the backup: warn, run without metrics.
            do { try MetricsFile.check(path) } catch let error as CofferError {
                Output.warn("no metrics this run: \(error.message)" + (error.hint.map { " (\($0))" } ?? ""))
                metricsFile = nil
            } catch {
                Output.warn("no metrics this run: \(error)")
                metricsFile = nil
            }
        }
        let output = Output(options: options)
        func recordMetrics(_ status: Int32) {
            guard let metricsFile else { return }
            var figures = output.figures.value ?? RunFigures()
            guard !figures.dryRun else { return }
            if repositoryLabel, figures.repository == nil { figures.repository = (try? options.configuration())?.repo }
            do {
                try MetricsFile.record(.init(command: command, exitCode: status, started: started, finished: Date(), figures: figures),
                                       at: metricsFile)
            } catch let error as CofferError {
                Output.warn("metrics not written: \(error.message)")
            } catch {
                Output.warn("metrics not written: \(error)")
            }
        }
        let status: ExitStatus
        do {
            status = try body(output)
        } catch let error as CofferError {
            Output.report(error)
            if options.json {
                print((try? Formatting.json(ErrorDocument(error: error.message, hint: error.hint, exitCode: error.status.rawValue))) ?? "{}")
            }
            recordMetrics(error.status.rawValue)
            throw ExitCode(error.status.rawValue)
        }
        recordMetrics(status.rawValue)
        if status != .ok { throw ExitCode(status.rawValue) }
    }
}
