// ward's in-process hot paths, measured with ordo-one/benchmark (wall clock, CPU and
// mallocs per operation). Whole-process comparisons live in Sources/WardBench.
import Benchmark
import WardCore
import WardLedger
import WardPolicy
import WardSandbox

#if canImport(Glibc)
import Glibc
#endif

/// The repository's policies: Scripts/bench runs this from the repository root.
let policies = getenv("WARD_POLICIES").map { String(cString: $0) } ?? "policies"

/// A request the size of a typical tool call: what every agent line costs to read and key.
let request = Array(#"{"jsonrpc":"2.0","id":42,"method":"tool.call","params":{"callId":"step-47","tool":"shell","arguments":{"command":"make -C site build && ls -la site/out","env":{"LANG":"C.UTF-8"}},"checkpoint":{"step":47,"plan":["write","build","check","commit","publish"],"notes":"résumé \u00e9 \ud83d\ude00"}}}"#.utf8)

func temporaryDirectory() -> String {
    var template = Array("/tmp/ward-micro-XXXXXX".utf8CString)
    return String(cString: mkdtemp(&template)!)
}

let benchmarks: @Sendable () -> Void = {
    // Scripts/bench --quick sets WARD_MICRO_SECONDS=1. Wall times include the malloc
    // interposer's cost per allocation (it counts them): compare them with each other, and
    // take whole-call figures from ward-bench.
    let seconds = getenv("WARD_MICRO_SECONDS").flatMap { Int(String(cString: $0)) } ?? 2
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .mallocCountTotal], maxDuration: .seconds(seconds))
    // Sub-microsecond operations run a thousand times per sample, reported per operation.
    let perOperation = Benchmark.Configuration(scalingFactor: .kilo)

    Benchmark("JSON: parse a tool.call request", configuration: perOperation) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(try JSONValue.parse(request)) }
    }

    let parsed = try! JSONValue.parse(request)
    Benchmark("JSON: RFC 8785 canonical form of a request", configuration: perOperation) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(parsed.canonicalBytes) }
    }

    Benchmark("seccomp: compile the shell policy's filter (libseccomp)") { benchmark in
        let tool = try PolicyLoader.load(directory: policies).tool("shell")
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { blackHole(try Sandbox.compileFilter(for: tool)) }
    }

    Benchmark("policy: load the shipped policy directory") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(try PolicyLoader.load(directory: policies)) }
    }

    Benchmark("fail points: one pass, none armed", configuration: perOperation) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(FailPoints.hit(.afterBegin)) }
    }

    for durability in [Ledger.Durability.full, .normal] {
        Benchmark("ledger: begin + finish of one call (synchronous=\(durability))") { benchmark in
            let dir = temporaryDirectory()
            let ledger = try Ledger(path: dir + "/ledger.sqlite", durability: durability)
            _ = try ledger.startAttempt(run: "micro")
            let outcome = ToolOutcome(status: .succeeded, exitCode: 0, signal: nil, stdout: Array("ok\n".utf8), stderr: [], truncated: false, durationMs: 0.4)
            var n = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                n += 1
                guard case .execute(let ticket) = try ledger.begin(BeginRequest(run: "micro", callId: "c\(n)", tool: "shell", effect: .nonIdempotent,
                    arguments: .object(["command": .string("true")]), policyHash: "p", executable: "/bin/sh", attempt: 1)) else { fatalError("replayed") }
                blackHole(try ledger.finish(ticket, outcome: outcome))
            }
            benchmark.stopMeasurement()
            system("rm -rf '\(dir)'")
        }
    }
}
