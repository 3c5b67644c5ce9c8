import CofferKit
import Foundation
import Testing

@Suite struct ConfigurationTests {
    @Test func defaultsMatchThePipeline() throws {
        let configuration = try CofferConfiguration.resolve(environment: [:])
        #expect(configuration.dbPath == "/app/data/db.sqlite")
        #expect(configuration.mediaRoot == "/media")
        #expect(configuration.minFreeSpaceGB == 10)
        #expect(configuration.alertFreeSpaceGB == 20)
        #expect(configuration.tempDirTemplate.text == "{MEDIA_ROOT}/tmp/{jobId}")
        #expect(configuration.libraryPathTemplate.text == "{MEDIA_ROOT}/library/{uploader}/{title}.{ext}")
        #expect(configuration.repo == nil)
        #expect(configuration.settings.allSatisfy { $0.source == .defaultValue || $0.key == .repo })
        #expect(configuration.layout.libraryRoot == "/media/library")
        #expect(configuration.layout.tempRoot == "/media/tmp")
    }

    @Test func flagBeatsEnvironmentBeatsFileBeatsDefault() throws {
        let dir = try TemporaryDirectory()
        let file = dir.child("coffer.env")
        try """
            # the pipeline's .env
            DB_PATH=/file/db.sqlite
            export MEDIA_ROOT="/file/media"
            MIN_FREE_SPACE_GB='3'
            ALERT_FREE_SPACE_GB=30
            OTHER_PIPELINE_SETTING=ignored
            """.write(toFile: file, atomically: true, encoding: .utf8)
        let configuration = try CofferConfiguration.resolve(
            flags: [.dbPath: "/flag/db.sqlite"],
            environment: ["DB_PATH": "/env/db.sqlite", "MEDIA_ROOT": "/env/media", "COFFER_REPO": "/env/repo"],
            configFile: file)
        #expect(configuration.dbPath == "/flag/db.sqlite")
        #expect(configuration.setting(.dbPath).source == .flag)
        #expect(configuration.setting(.dbPath).origin == "--db")
        #expect(configuration.mediaRoot == "/env/media")
        #expect(configuration.setting(.mediaRoot).source == .environment)
        #expect(configuration.minFreeSpaceGB == 3)
        #expect(configuration.setting(.minFreeSpaceGB).source == .configFile)
        #expect(configuration.setting(.minFreeSpaceGB).origin == "\(file):4")
        #expect(configuration.alertFreeSpaceGB == 30)
        #expect(configuration.setting(.tempDirTemplate).source == .defaultValue)
        #expect(configuration.repo == "/env/repo")
    }

    @Test func relativePathsResolveAgainstTheirSource() throws {
        let dir = try TemporaryDirectory()
        let file = dir.child("coffer.env")
        try "DB_PATH=data/db.sqlite\n".write(toFile: file, atomically: true, encoding: .utf8)
        let configuration = try CofferConfiguration.resolve(
            flags: [.mediaRoot: "./media//"], environment: [:], configFile: file, workingDirectory: "/work")
        #expect(configuration.dbPath == dir.child("data/db.sqlite"))
        #expect(configuration.mediaRoot == "/work/media")
    }

    @Test(arguments: [
        (SettingKey.minFreeSpaceGB, "abc"),
        (.minFreeSpaceGB, "-1"),
        (.minFreeSpaceGB, "1e3"),
        (.alertFreeSpaceGB, ""),
        (.alertFreeSpaceGB, "5"), // below the minimum of 10
        (.libraryPathTemplate, "{MEDIA_ROOT}/library/{uploder}/{title}.{ext}"),
        (.libraryPathTemplate, "{MEDIA_ROOT}/library/{uploader/{title}"),
        (.libraryPathTemplate, "library/{title}.{ext}"),
        (.tempDirTemplate, "{MEDIA_ROOT}/tmp/{title}"),
        (.tempDirTemplate, "{MEDIA_ROOT}/tmp/{jobId}/work"),
        (.dbPath, ""),
        (.mediaRoot, "/"),
        (.mediaRoot, "/media/.."), // normalized to /
    ])
    func badValueIsAUsageErrorNamingTheVariable(key: SettingKey, value: String) throws {
        let error = #expect(throws: CofferError.self) {
            try CofferConfiguration.resolve(environment: [key.rawValue: value])
        }
        #expect(error?.status == .usage)
        #expect(error?.message.contains(key.rawValue) == true)
    }

    @Test func configFileProblemsAreUsageErrors() throws {
        let dir = try TemporaryDirectory()
        let missing = #expect(throws: CofferError.self) {
            try CofferConfiguration.resolve(environment: [:], configFile: dir.child("nope.env"))
        }
        #expect(missing?.status == .usage)
        #expect(missing?.message.contains("nope.env") == true)

        let file = dir.child("bad.env")
        try "DB_PATH=/x\nthis line has no equals sign\n".write(toFile: file, atomically: true, encoding: .utf8)
        let bad = #expect(throws: CofferError.self) { try CofferConfiguration.resolve(environment: [:], configFile: file) }
        #expect(bad?.subject == "\(file):2")

        try "COFFER_REPOSITORY=/typo\n".write(toFile: file, atomically: true, encoding: .utf8)
        let typo = #expect(throws: CofferError.self) { try CofferConfiguration.resolve(environment: [:], configFile: file) }
        #expect(typo?.status == .usage)
        #expect(typo?.cause.contains("COFFER_REPOSITORY") == true)
    }

    @Test func templatesGiveTheVolumeLayout() throws {
        let configuration = try CofferConfiguration.resolve(environment: [
            "MEDIA_ROOT": "/srv/media",
            "TEMP_DIR_TEMPLATE": "/scratch/work/job-{jobId}.d",
            "LIBRARY_PATH_TEMPLATE": "{MEDIA_ROOT}/films/{upload_date}/{title}.{ext}",
        ])
        let layout = configuration.layout
        #expect(layout.libraryRoot == "/srv/media/films")
        #expect(layout.tempRoot == "/scratch/work")
        #expect(layout.tempDirectory(jobID: "42") == "/scratch/work/job-42.d")
        #expect(layout.jobID(forTempDirectoryName: Array("job-42.d".utf8)) == "42")
        #expect(layout.jobID(forTempDirectoryName: Array("other".utf8)) == nil)
        #expect(layout.jobID(forTempDirectoryName: Array("job-.d".utf8)) == nil)
        #expect(layout.jobID(forTempDirectoryName: Array("job-42.e".utf8)) == nil)
        #expect(layout.jobID(forTempDirectoryName: Array("jab-42.d".utf8)) == nil)
        #expect(layout.jobID(forTempDirectoryName: Array("job-.d.d".utf8)) == ".d") // the id may hold the suffix's bytes
        #expect(layout.jobID(forTempDirectoryName: Array("job-".utf8) + [0xFF] + Array(".d".utf8)) == nil) // ids are text
        #expect(layout.jobID(forTempDirectoryName: Array("job-é.d".utf8)) == "é")
    }

    @Test func aTempTemplateOfTheIdAloneTakesTheWholeName() throws {
        let layout = try CofferConfiguration.resolve(environment: ["MEDIA_ROOT": "/srv/media", "TEMP_DIR_TEMPLATE": "/scratch/{jobId}"]).layout
        #expect(layout.jobID(forTempDirectoryName: Array("42".utf8)) == "42")
        #expect(layout.jobID(forTempDirectoryName: []) == nil)
    }
}
