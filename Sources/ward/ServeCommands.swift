import ArgumentParser
import CWardOS
import Logging
import WardClient
import WardCore
import WardLedger
import WardPolicy
import WardSandbox
import WardSupervisor

#if canImport(Glibc)
import Glibc
#endif

/// Options of the commands that supervise a run (`ward serve`, `ward run`).
struct RunOptions: ParsableArguments {
    @OptionGroup var policyOptions: PolicyOptions
    @OptionGroup var ledgerOptions: LedgerOptions

    @Option(help: "Socket path (default: /tmp/ward-UID/RUN.sock). Its directory must be ward's uid's alone (mode 0700, not a symlink) or $XDG_RUNTIME_DIR; a missing one is made so.")
    var socket: String?

    @Option(name: .customLong("run-id"), help: "The run's ID (default: generated).")
    var runID: String?

    @Flag(name: .customLong("move-workspace"), help: "The run's workspace was moved to --workspace: use it, and record the move.")
    var moveWorkspace = false

    @Option(parsing: .unconditional, help: "Seconds running tools get to finish at SIGINT/SIGTERM before they are killed (0 or more).")
    var grace: Double = 10

    @Flag(help: "When another supervisor serves the run (on this host, or on another through a shared ledger), wait until it ends or its lease expires, instead of failing.")
    var wait = false

    /// A run ID names the run's socket file and is an identifier in the ledger: one with a
    /// `/`, a control character or a leading `.` is refused before anything is opened.
    func validate() throws {
        try Checks.nonEmpty(socket, "--socket")
        try Checks.notNegative(grace, "--grace")
        if let runID, let problem = Identifier.runIDProblem(in: runID) {
            throw ValidationError("--run-id: the run ID \(problem)")
        }
    }

    var effectiveRunID: String { runID ?? RunOptions.generatedRunID }
    static let generatedRunID: String = {
        var rng = SystemRandomNumberGenerator()
        let suffix = String((0..<6).map { _ in "0123456789abcdef".randomElement(using: &rng)! })
        var t = time(nil)
        var tm = tm()
        gmtime_r(&t, &tm)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "run-\(tm.tm_year + 1900)\(two(tm.tm_mon + 1))\(two(tm.tm_mday))-\(two(tm.tm_hour))\(two(tm.tm_min))\(two(tm.tm_sec))-\(suffix)"
    }()

    func socketPath(run: String) -> String { socket ?? "/tmp/ward-\(geteuid())/\(run).sock" }

    /// No new calls; running ones get the grace period, then are killed and recorded
    /// `killed` (never left `running`, to turn in doubt at the next start). Then outcomes
    /// not recorded yet (a full disk) get one more attempt, and more within the grace period.
    func drain(server: SocketServer, supervisor: Supervisor) {
        server.drain()
        if !server.waitUntilIdle(timeout: grace) {
            supervisor.sandbox.terminateAll()
            _ = server.waitUntilIdle(timeout: 10)
        }
        supervisor.recordPendingOutcomes(within: grace)
    }

    /// The run's lock; with `--wait`, waited for while another supervisor holds it.
    func lockRun(_ run: String, in ledger: Ledger, logger: Logger) throws -> RunLock {
        var told = false
        while true {
            do { return try ledger.lockRun(run) } catch where wait && error.code == .busy {
                if !told { logger.notice("\(error.message); waiting for it to end (--wait)") }
                told = true
                usleep(200_000)
            } catch {
                throw CLIError(message: error.message, exitCode: 1)
            }
        }
    }

    /// Ledger, sandbox, a new attempt of the run, and the server listening on its socket.
    /// `publishToken`: write the agent's token beside the socket (`ward serve`, whose agents
    /// start elsewhere); `ward run` hands it to the agent it starts instead, and records its
    /// command line (`agent`). `choose` picks the run, before anything is locked or recorded,
    /// when no `--run-id` names it (`ward run` may resume an unfinished one); nil: the run
    /// `--run-id` names, else a new one.
    func startServer(logger: Logger, publishToken: Bool, agent: [String]? = nil,
                     choose: ((Ledger) throws -> (run: String, resumedBy: Ledger.Resumption?))? = nil) throws -> (SocketServer, Supervisor) {
        let ledger = try ledgerOptions.open(recover: false)
        let (run, resumedBy) = try choose?(ledger) ?? (effectiveRunID, nil)
        // The run's lock first: a start refused because another supervisor serves the run
        // records nothing (no recovery, no place, no attempt).
        let runLock = try lockRun(run, in: ledger, logger: logger)
        try ledgerCall { () throws(LedgerError) in try ledger.recover() }
        let place = try policyOptions.place(of: run, in: ledger, create: true)
        let policies = try PolicyOptions.load(place.policies)
        let socket = socketPath(run: run)
        // Before the sandbox, which gives the workspace to the tool identity.
        try Checks.layout(policies: policies, workspace: place.workspace, ledger: ledger, socket: socket, tokenPublished: publishToken)
        let sandbox = try policyOptions.sandbox(policies, workspace: place.workspace, logger: logger)
        let supervisor = Supervisor(ledger: ledger, sandbox: sandbox, runID: run, attempt: 0, runLock: runLock)
        // The run's lock went with the lease (the supervisor stopped its calls first): another
        // supervisor may serve the run now, so this one must not go on serving it.
        ledger.whenOwnerLost {
            Supervisor.notifyOnStderr("run \(run)'s lock went with the lease: another supervisor may serve it now; this one exits")
            Glibc.exit(3)
        }
        // Bound before anything is recorded: a socket that another supervisor holds refuses
        // the start with no place claimed and no attempt counted.
        let server: SocketServer
        do { server = try SocketServer(path: socket, supervisor: supervisor, publishToken: publishToken) } catch {
            throw CLIError(message: error.message, exitCode: 1)
        }
        try policyOptions.claim(place, run: run, in: ledger, moved: moveWorkspace)
        supervisor.attempt = try ledgerCall { () throws(LedgerError) in try ledger.startAttempt(run: run, agent: agent, resumedBy: resumedBy) }
        server.start()
        return (server, supervisor)
    }
}

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "The supervisor alone, for agents started elsewhere; prints the socket path once it listens."
    )

    @OptionGroup var options: RunOptions

    func run() throws {
        // Caught before the socket exists: a SIGTERM that comes once an agent can connect stops ward.
        ward_termination_catch()
        let (server, supervisor) = try options.startServer(logger: Logger(label: "ward"), publishToken: true)
        Output.write(1, Array((server.path + "\n").utf8))
        _ = ward_termination_wait()
        options.drain(server: server, supervisor: supervisor)
        server.stop()
    }
}

struct CallCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "call",
        abstract: "One tool call through $WARD_SOCKET, for shell agents.",
        discussion: """
            Opens the connection with the agent's token: the token file beside the socket (ward serve), else $WARD_TOKEN (ward run). \
            Prints the tool's stdout and stderr and exits with its exit code (128+N when killed by signal N, 124 on timeout, 126 when denied). \
            Into a pipe or file the output is passed through byte for byte; on a terminal, control and bidi characters are shown escaped. \
            Protocol errors: exit 2 for bad input (invalid-arguments, unknown-tool, too-large), 3 for storage, 1 otherwise (conflict, in-doubt, in-progress, policy-denied, \
            awaiting-approval: a gated tool's call waits for `ward approve`; --approval-timeout waits for it).
            """
    )

    @Option(name: .customLong("call-id"), help: "The call's ID, unique within the run (the same ID replays).")
    var callID: String

    @OptionGroup var argumentOptions: ArgumentOptions

    @Option(help: "Socket path (default: $WARD_SOCKET).")
    var socket: String?

    @Option(name: .customLong("approval-timeout"), help: "Seconds to wait for the verdict on a gated tool's call (0 to \(Int(Supervisor.longestApprovalWait)); default 0).")
    var approvalTimeout: Double = 0

    @Flag(help: "Print the whole CallResult as JSON.")
    var json = false

    @Argument(help: "The tool.")
    var tool: String

    func validate() throws {
        try Checks.nonEmpty(callID, "--call-id")
        try Checks.nonEmpty(socket, "--socket")
        try Checks.notNegative(approvalTimeout, "--approval-timeout")
        guard approvalTimeout <= Supervisor.longestApprovalWait else {
            throw ValidationError("--approval-timeout must be at most \(Int(Supervisor.longestApprovalWait)) seconds")
        }
    }

    func run() throws {
        guard let path = socket ?? getenv("WARD_SOCKET").map({ String(cString: $0) }) else {
            throw CLIError.usage("no socket: set WARD_SOCKET (ward run does) or pass --socket")
        }
        let arguments = try argumentOptions.arguments()
        let result: CallResult
        do {
            result = try WardConnection(socketPath: path).call(callId: callID, tool: tool, arguments: arguments, approvalTimeout: approvalTimeout)
        } catch {
            throw CLIError(message: error.description, exitCode: CallCommand.exitStatus(error))
        }
        if json {
            printJSON(result.json)
        } else {
            Output.stream(1, result.outcome.stdout)
            Output.stream(2, result.outcome.stderr)
        }
        let code = result.outcome.exitStatus
        if code != 0 { throw ExitCode(code) }
    }

    /// A protocol error's exit status: 2 for bad input, 3 for storage, 1 for anything else.
    static func exitStatus(_ error: WardClientError) -> Int32 {
        switch error.kind {
        case .ward(.invalidArguments), .ward(.unknownTool), .ward(.tooLarge): 2
        case .ward(.storage): 3
        case .ward, .connection: 1
        }
    }
}
