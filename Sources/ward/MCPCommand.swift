import ArgumentParser
import Logging
import WardCore
import WardLedger
import WardMCP
import WardPolicy
import WardSupervisor

#if canImport(Glibc)
import Glibc
#endif

/// `ward mcp` (the policies' tools as an MCP server, also `ward mcp serve`) and `ward mcp
/// proxy` (a third-party server's). A group, so that each reads its own options.
struct MCPGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp",
        abstract: "An MCP server over stdio: every MCP host's tool calls through ward's sandbox and ledger.",
        subcommands: [MCPCommand.self, MCPProxyCommand.self],
        defaultSubcommand: MCPCommand.self
    )
}

struct MCPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serves the policies' tools (the default: `ward mcp` is `ward mcp serve`).",
        discussion: """
            Publishes the policies' tools (tools/list) with annotations from what ward enforces, and runs each tools/call \
            like tool.call: sandboxed, recorded, and never twice for a tool that is not idempotent, even when the host \
            repeats a request whose answer it lost. A stable call ID may be given in _meta["ward/callId"] (or an \
            idempotencyKey param). stdout carries only MCP messages; ward's own go to stderr. It exits when stdin ends, \
            once the calls in flight are recorded.
            """
    )

    /// `--policies` and `--workspace` default to ./policies and ./workspace, not to a run's
    /// recorded ones: the tools are listed before the ledger is opened.
    @OptionGroup var policyOptions: PolicyOptions
    @OptionGroup var ledgerOptions: LedgerOptions

    @Option(name: .customLong("run-id"), help: "The run's ID (default: derived from the workspace, so a restarted host continues its run).")
    var runID: String?

    @Option(help: "Publish only these tools (comma-separated policy names).")
    var tools: String?

    func validate() throws {
        if let runID, let problem = Identifier.runIDProblem(in: runID) {
            throw ValidationError("--run-id: the run ID \(problem)")
        }
    }

    func run() throws {
        // Only what tools/list needs before the first answer; the ledger and the sandbox are
        // opened meanwhile on a thread of their own (hosts time out slow starts).
        let run = try MCPCommand.run(runID, workspace: policyOptions.workspace)
        let policies = try policyOptions.load()
        let published: [MCPTool]
        do {
            published = try MCPCatalog.tools(policies, only: tools.map { $0.split(separator: ",").map { String($0) } })
        } catch {
            throw CLIError.usage(error.description)
        }
        let server = MCPServer(tools: published, version: Ward.version,
                               open: MCPCommand.opener(run: run, policies: policies, policyOptions, ledgerOptions, log: MCPServer.logOnStderr))
        server.serve()?.recordPendingOutcomes(within: 10)
    }

    /// The run `ward mcp` (or `ward mcp proxy`) serves in `workspace`, which is made if missing.
    static func run(_ given: String?, workspace: String) throws -> String {
        if access(workspace, F_OK) != 0 && mkdir(workspace, 0o755) != 0 {
            throw CLIError(message: "cannot create workspace \(workspace): \(String(cString: strerror(errno)))", exitCode: 1)
        }
        return try given ?? MCPCommand.runID(workspace: workspace)
    }

    /// `open` for a server: its failure is said on stderr too, as the host may not show it.
    static func opener(run: String, policies: PolicySet, _ policyOptions: PolicyOptions, _ ledgerOptions: LedgerOptions,
                       log: @escaping @Sendable (String) -> Void) -> @Sendable () throws -> Supervisor {
        {
            do {
                return try MCPCommand.open(run: run, policies: policies, policyOptions: policyOptions, ledgerOptions: ledgerOptions)
            } catch {
                log("\(error)")
                throw error
            }
        }
    }

    /// `mcp-` and a hash of the workspace's real path: the same workspace, the same run.
    static func runID(workspace: String) throws -> String {
        guard let real = realpath(workspace, nil) else {
            throw CLIError(message: "cannot resolve workspace \(workspace): \(String(cString: strerror(errno)))", exitCode: 1)
        }
        defer { free(real) }
        return "mcp-" + Ledger.sha256Hex(Array(String(cString: real).utf8)).prefix(16)
    }

    static func real(_ path: String) -> String {
        guard let p = realpath(path, nil) else { return path }
        defer { free(p) }
        return String(cString: p)
    }

    /// The ledger, the run's place and a new attempt of it, the sandbox and the supervisor.
    /// No run lock: a host may start a server per call, several at once, and the ledger's
    /// owner locks keep their calls apart.
    static func open(run: String, policies: PolicySet, policyOptions: PolicyOptions, ledgerOptions: LedgerOptions) throws -> Supervisor {
        let ledger = try ledgerOptions.open()
        let place = try policyOptions.place(of: run, in: ledger, create: true)
        // The tools were published from the directory given (or ./policies) before the
        // ledger was open: a run recorded with other policies is not served with these.
        if MCPCommand.real(place.policies) != MCPCommand.real(policies.directory) {
            throw CLIError(message: "run \(run) was recorded with the policies in \(place.policies), not \(policies.directory): pass --policies \(place.policies)", exitCode: 1)
        }
        try Checks.layout(policies: policies, workspace: place.workspace, ledger: ledger)
        let sandbox = try policyOptions.sandbox(policies, workspace: place.workspace, logger: Logger(label: "ward"))
        try policyOptions.claim(place, run: run, in: ledger, moved: false)
        let attempt = try ledgerCall { () throws(LedgerError) in try ledger.startAttempt(run: run) }
        return Supervisor(ledger: ledger, sandbox: sandbox, runID: run, attempt: attempt, notify: MCPServer.logOnStderr)
    }
}
