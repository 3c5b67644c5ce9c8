import ArgumentParser
import CofferKit

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Print every effective setting and where it came from.",
        discussion: Help.text("""
            Precedence: flag > environment > config file (--config) > default. Paths are shown
            absolute, as Coffer will use them.

            Exit codes: 0 every setting is valid, 64 a setting is missing or invalid (named, with
            where its value came from).

            Examples:
              coffer config --config /srv/pipeline/.env
              coffer config --json
            """))

    @OptionGroup var options: GlobalOptions

    func run() throws {
        try CofferCLI.run(options) { output in
            let configuration = try options.configuration()
            try output.json(ConfigDocument(settings: configuration.settings))
            let width = SettingKey.allCases.map(\.rawValue.count).max() ?? 0
            output.text(configuration.settings.map { setting in
                let name = setting.key.rawValue.padding(toLength: width, withPad: " ", startingAt: 0)
                let value = setting.value ?? "(unset)"
                let source = setting.source.rawValue + (setting.origin.map { setting.source == .flag || setting.source == .configFile ? " \($0)" : "" } ?? "")
                return "\(name)  \(value)  [\(source)]"
            }.joined(separator: "\n"))
            return .ok
        }
    }
}

/// `coffer config --json`.
struct ConfigDocument: Encodable {
    var command = "config"
    var settings: [Setting]
}
