import Foundation

/// Coffer's effective configuration: every setting with its value and where it came from.
///
/// Built once per run by ``resolve(flags:environment:configFile:workingDirectory:)``;
/// precedence is flag > environment > config file > default. Every value is checked here, so
/// a bad one stops the run before anything is opened (exit 64, naming the variable).
public struct CofferConfiguration: Sendable {
    public let settings: [Setting]
    public let dbPath: String
    public let mediaRoot: String
    public let minFreeSpaceGB: Double
    public let alertFreeSpaceGB: Double
    public let tempDirTemplate: PathTemplate
    public let libraryPathTemplate: PathTemplate
    public let repo: String?

    /// Gigabytes in the thresholds are GiB (2^30 bytes), as the pipeline computes them.
    public static let bytesPerGB: Double = 1_073_741_824

    public var minFreeSpaceBytes: UInt64 { UInt64(minFreeSpaceGB * Self.bytesPerGB) }
    public var alertFreeSpaceBytes: UInt64 { UInt64(alertFreeSpaceGB * Self.bytesPerGB) }

    public func setting(_ key: SettingKey) -> Setting { settings.first { $0.key == key }! }

    /// The volume layout these settings describe.
    public var layout: VolumeLayout {
        VolumeLayout(dbPath: dbPath, mediaRoot: mediaRoot, tempDirTemplate: tempDirTemplate, libraryPathTemplate: libraryPathTemplate)
    }

    /// Resolves every setting. `flags` holds what was given on the command line, `environment`
    /// the process environment, `configFile` the path given with `--config`.
    public static func resolve(
        flags: [SettingKey: String] = [:],
        environment: [String: String] = ProcessInfo.processInfo.environment,
        configFile: String? = nil,
        workingDirectory: String = FileManager.default.currentDirectoryPath
    ) throws -> CofferConfiguration {
        let file = try configFile.map { try ConfigFile(path: absolute($0, in: workingDirectory)) }
        let fileDirectory = file.map { PathText.parent($0.path) } ?? workingDirectory

        var settings: [Setting] = []
        for key in SettingKey.allCases {
            var setting: Setting
            if let value = flags[key] {
                setting = Setting(key: key, value: value, source: .flag, origin: key.flag)
            } else if let value = environment[key.rawValue] {
                setting = Setting(key: key, value: value, source: .environment, origin: key.rawValue)
            } else if let file, let entry = file.entries[key.rawValue] {
                setting = Setting(key: key, value: entry.value, source: .configFile, origin: "\(file.path):\(entry.line)")
            } else if let value = key.defaultValue {
                setting = Setting(key: key, value: value, source: .defaultValue, origin: nil)
            } else {
                setting = Setting(key: key, value: nil, source: .unset, origin: nil)
            }
            if key.isPath, let value = setting.value {
                guard !value.isEmpty else {
                    throw CofferError.badSetting(key.rawValue, value, "is empty", hint: "set a path with \(key.flag) or \(key.rawValue)")
                }
                if !(key == .repo && value.contains("://")) {
                    let base = setting.source == .configFile ? fileDirectory : workingDirectory
                    setting.value = normalized(absolute(value, in: base))
                }
            }
            settings.append(setting)
        }
        return try CofferConfiguration(settings: settings)
    }

    /// The same settings with some replaced (as if given as flags): a drill's scratch targets.
    public func replacing(_ values: [SettingKey: String], origin: String) throws -> CofferConfiguration {
        try CofferConfiguration(settings: settings.map { setting in
            guard let value = values[setting.key] else { return setting }
            return Setting(key: setting.key, value: value, source: .flag, origin: origin)
        })
    }

    init(settings: [Setting]) throws {
        self.settings = settings
        func value(_ key: SettingKey) -> String { settings.first { $0.key == key }?.value ?? "" }
        dbPath = value(.dbPath)
        mediaRoot = value(.mediaRoot)
        // Its tmp/ would be the system's /tmp, its library/ a folder of /, and a restore or a
        // cleanup would work at the top of the file system.
        guard mediaRoot != "/" else {
            throw CofferError.badSetting(SettingKey.mediaRoot.rawValue, mediaRoot, "is the root of the file system",
                                         hint: "set MEDIA_ROOT to the folder that holds library/ and tmp/ (the pipeline's default is /media)")
        }
        minFreeSpaceGB = try Self.gigabytes(.minFreeSpaceGB, value(.minFreeSpaceGB))
        alertFreeSpaceGB = try Self.gigabytes(.alertFreeSpaceGB, value(.alertFreeSpaceGB))
        guard alertFreeSpaceGB >= minFreeSpaceGB else {
            throw CofferError.badSetting(
                SettingKey.alertFreeSpaceGB.rawValue, value(.alertFreeSpaceGB),
                "is below MIN_FREE_SPACE_GB (\(value(.minFreeSpaceGB))): the alert would come after the failure",
                hint: "set ALERT_FREE_SPACE_GB to at least MIN_FREE_SPACE_GB")
        }
        tempDirTemplate = try Self.tempTemplate(value(.tempDirTemplate))
        libraryPathTemplate = try Self.libraryTemplate(value(.libraryPathTemplate))
        repo = settings.first { $0.key == .repo }?.value
    }

    static func gigabytes(_ key: SettingKey, _ text: String) throws -> Double {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard let number = Double(trimmed), number.isFinite, number >= 0, number < 1e9,
              trimmed.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }) else {
            throw CofferError.badSetting(key.rawValue, text, "is not a number of gigabytes", hint: "for example \(key.rawValue)=10")
        }
        return number
    }

    static func tempTemplate(_ text: String) throws -> PathTemplate {
        let name = SettingKey.tempDirTemplate.rawValue
        let template = try PathTemplate(text, variable: name, allowed: PathTemplate.tempPlaceholders)
        let lastComponent = text.split(separator: "/").last.map(String.init) ?? ""
        guard lastComponent.components(separatedBy: "{jobId}").count == 2,
              text.components(separatedBy: "{jobId}").count == 2 else {
            throw CofferError.badSetting(name, text, "must contain {jobId} once, in its last path component",
                                         hint: "the default is {MEDIA_ROOT}/tmp/{jobId}")
        }
        try requireAbsolute(template, name)
        return template
    }

    static func libraryTemplate(_ text: String) throws -> PathTemplate {
        let name = SettingKey.libraryPathTemplate.rawValue
        let template = try PathTemplate(text, variable: name, allowed: PathTemplate.libraryPlaceholders)
        try requireAbsolute(template, name)
        return template
    }

    static func requireAbsolute(_ template: PathTemplate, _ name: String) throws {
        guard let first = template.parts.first,
              first == .placeholder("MEDIA_ROOT") || { if case .literal(let t) = first { return t.hasPrefix("/") } else { return false } }()
        else {
            throw CofferError.badSetting(name, template.text, "must start with {MEDIA_ROOT} or an absolute path")
        }
    }

    static func absolute(_ path: String, in directory: String) -> String {
        path.hasPrefix("/") ? path : (directory as NSString).appendingPathComponent(path)
    }

    /// Removes `.`/`..`, doubled and trailing slashes, without touching the file system.
    static func normalized(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/") {
            if part == "." { continue }
            if part == ".." { if !parts.isEmpty { parts.removeLast() }; continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }
}
