// swift-tools-version: 6.1
// In-process microbenchmarks of ward's hot paths with ordo-one/benchmark (run by
// Scripts/bench, or `swift package --package-path Benchmarks benchmark`). A package of its own
// so the product's build and CI do not carry the benchmark tooling.
import PackageDescription

let package = Package(
    name: "WardBenchmarks",
    platforms: [.macOS(.v13)],
    dependencies: [
        .package(name: "ward", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "WardMicro",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "WardCore", package: "ward"),
                .product(name: "WardPolicy", package: "ward"),
                .product(name: "WardSandbox", package: "ward"),
                .product(name: "WardLedger", package: "ward"),
            ],
            path: "Benchmarks/WardMicro",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
