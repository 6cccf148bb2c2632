// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "ward",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ward", targets: ["ward"]),
        .library(name: "WardCore", targets: ["WardCore"]),
        .library(name: "WardPolicy", targets: ["WardPolicy"]),
        .library(name: "WardSandbox", targets: ["WardSandbox"]),
        .library(name: "WardLedger", targets: ["WardLedger"]),
        .library(name: "WardClient", targets: ["WardClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
    ],
    targets: [
        // System libraries: libseccomp compiles filters in the parent; libcap names
        // capabilities and reads their state. Both only on the parent side of a spawn.
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        .systemLibrary(name: "CCap", pkgConfig: "libcap", providers: [.apt(["libcap-dev"])]),
        // The child side of the spawn: runs between clone and execve, raw syscalls only.
        .target(name: "CWardSpawn", cSettings: [.define("_GNU_SOURCE")]),
        // What Swift cannot call directly (variadics, macros, _GNU_SOURCE-only declarations,
        // syscalls without a glibc wrapper), outside the child: memfds, the
        // parent's Landlock calls, peer credentials, tool identities.
        .target(name: "CWardOS", cSettings: [.define("_GNU_SOURCE")]),
        // JSON (strict parsing, RFC 8785 canonical form) and the call result types.
        .target(name: "WardCore", dependencies: [.product(name: "SystemPackage", package: "swift-system")]),
        // Policies: its own TOML reader (positions for every key), syscall names via libseccomp.
        .target(name: "WardPolicy", dependencies: ["CSeccomp"]),
        .target(name: "WardSandbox", dependencies: [
            "WardCore", "WardPolicy", "CWardSpawn", "CWardOS", "CSeccomp", "CCap",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The idempotency ledger: write-ahead call records, checkpoints, journal, hash chain.
        .target(name: "WardLedger", dependencies: [
            "WardCore",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "GRDBSQLite", package: "GRDB.swift"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // Orchestration of ledger and sandbox: the agent protocol, its socket server, reconcile.
        .target(name: "WardSupervisor", dependencies: ["WardCore", "WardPolicy", "WardSandbox", "WardLedger", "CWardOS"]),
        // ward as an MCP server over stdio: tools from policies, calls through the supervisor.
        .target(name: "WardMCP", dependencies: ["CWardOS", "WardCore", "WardPolicy", "WardSandbox", "WardLedger", "WardSupervisor"]),
        // The Swift client of the agent protocol: blocking (WardConnection) and async (WardClient), typed errors.
        .target(name: "WardClient", dependencies: ["WardCore"]),
        .executableTarget(name: "ward", dependencies: [
            "WardCore", "WardPolicy", "WardSandbox", "WardLedger", "WardSupervisor", "WardClient", "WardMCP",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Writes through the ledger and reports each durable step: crash tests kill it anywhere.
        .executableTarget(name: "ward-torture", dependencies: ["WardCore", "WardLedger"], path: "Sources/WardTorture"),
        // Fuzz targets (Scripts/fuzz builds them with libFuzzer; a plain build replays kept inputs).
        .executableTarget(name: "ward-fuzz", dependencies: ["WardCore", "WardPolicy", "WardSandbox", "WardLedger", "WardSupervisor"], path: "Sources/WardFuzz"),
        // Benchmarks (Scripts/bench): whole-process comparisons, interleaved.
        .target(name: "CWardBench"),
        .executableTarget(name: "ward-bench", dependencies: ["WardCore", "WardPolicy", "WardSandbox", "WardLedger", "WardSupervisor", "WardClient", "WardMCP", "CWardBench"], path: "Sources/WardBench"),
        // Hostile programs the threat tests run inside the sandbox. Linked without the shared
        // Swift runtime, which lives outside every sandbox's read roots.
        .executableTarget(name: "ward-hostile", path: "Sources/WardHostile", cSettings: [.define("_GNU_SOURCE")],
                          linkerSettings: [.unsafeFlags(["-static-stdlib"])]),
        // What the test suites share: where the built programs are, and running them.
        .target(name: "WardTestSupport", dependencies: ["WardLedger", "WardSandbox"], path: "Tests/WardTestSupport"),
        .testTarget(name: "WardCoreTests", dependencies: ["WardCore"]),
        .testTarget(name: "WardPolicyTests", dependencies: ["WardPolicy", "WardTestSupport"]),
        .testTarget(name: "WardLedgerTests", dependencies: ["WardLedger", "WardCore", "WardTestSupport", "ward", "ward-torture"]),
        .testTarget(name: "WardSupervisorTests", dependencies: ["WardSupervisor", "WardClient", "WardLedger", "WardSandbox", "WardPolicy", "WardCore", "WardTestSupport", "ward"]),
        .testTarget(name: "WardSandboxTests", dependencies: ["WardSandbox", "WardPolicy", "WardCore", "WardTestSupport", "ward", "ward-hostile"]),
    ],
    swiftLanguageModes: [.v6]
)
