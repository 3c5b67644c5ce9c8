import ArgumentParser
import CofferKit
import Foundation

/// Everything a command prints goes through here, so `--json`, `--quiet` and the exit codes
/// behave the same in every command.
struct Output {
    let options: GlobalOptions

    /// Human text on stdout (not with --json or --quiet).
    func text(_ text: String) {
        guard !options.json, !options.quiet else { return }
        print(text)
    }

    /// The JSON document on stdout (only with --json).
    func json(_ value: some Encodable) throws {
        guard options.json else { return }
        print(try Formatting.json(value))
    }

    /// A command's report: the JSON document with --json, otherwise its text, which --quiet
    /// holds back unless something is wrong. Returns the exit status.
    func report(_ value: some Encodable, status: ExitStatus, text: () -> String) throws -> ExitStatus {
        try json(value)
        if status != .ok || !options.quiet { self.text(text()) }
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

/// Runs a command's body and turns its outcome into the documented exit code. This is the one
/// place where Coffer errors become exit codes.
enum CofferCLI {
static func run(_ options: GlobalOptions, _ body: (Output) throws -> ExitStatus) throws {
    let output = Output(options: options)
    let status: ExitStatus
    do {
        status = try body(output)
    } catch let error as CofferError {
        Output.report(error)
        if options.json {
            print((try? Formatting.json(ErrorDocument(error: error.message, hint: error.hint, exitCode: error.status.rawValue))) ?? "{}")
        }
        throw ExitCode(error.status.rawValue)
    }
    if status != .ok { throw ExitCode(status.rawValue) }
}
}
