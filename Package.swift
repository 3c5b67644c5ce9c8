// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Coffer",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "coffer", targets: ["coffer"]),
        .executable(name: "coffer-fixtures", targets: ["coffer-fixtures"]),
        .library(name: "CofferKit", targets: ["CofferKit"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        // HTTP for S3-compatible repositories: SwiftNIO's client, which streams bodies without
        // a dispatch per chunk (Foundation's URLSession on Linux spent a CPU-second per 20 MB).
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        // libarchive, from the system (Debian: libarchive-dev). Used for snapshot packs.
        .systemLibrary(
            name: "CArchive",
            pkgConfig: "libarchive",
            providers: [.apt(["libarchive-dev"]), .brew(["libarchive"])]
        ),
        // The system SQLite's sqlite3_db_config (variadic, so not callable from Swift), for the
        // defensive mode of connections to databases that came from outside.
        .systemLibrary(
            name: "CSQLiteConfig",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"]), .brew(["sqlite"])]
        ),
        // Linux calls glibc declares only under _GNU_SOURCE (sync_file_range), wrapped in C.
        .target(name: "CLinux"),
        // Everything Coffer knows. Does not import ArgumentParser.
        .target(
            name: "CofferKit",
            dependencies: [
                "CArchive", "CSQLiteConfig", "CLinux",
                .product(name: "GRDB", package: "GRDB.swift"),
                // The system SQLite's C API, as GRDB links it: export-jobs reads cells in place.
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]
        ),
        // Builds realistic volumes (tests, demo, benchmarks).
        .target(
            name: "CofferFixtures",
            dependencies: [
                "CofferKit",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "fixtures/CofferFixtures"
        ),
        .executableTarget(
            name: "coffer",
            dependencies: [
                "CofferKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "coffer-fixtures",
            dependencies: [
                "CofferFixtures",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "fixtures/coffer-fixtures"
        ),
        // make bench: Coffer side by side with sqlite3, bsdtar, restic, cp and sha256sum.
        .executableTarget(
            name: "coffer-bench",
            dependencies: [
                "CofferFixtures", "CofferKit",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "benchmarks/coffer-bench"
        ),
        .testTarget(
            name: "CofferKitTests",
            dependencies: [
                "CofferKit", "CofferFixtures", "CArchive", "CLinux",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .testTarget(
            name: "CofferCLITests",
            dependencies: [
                "CofferKit", "CofferFixtures",
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
    ],
    swiftLanguageModes: [.v5]
)
