import ArgumentParser
import Logging
import WardCore
import WardLedger
import WardPolicy
import WardSandbox
import WardSupervisor

#if canImport(Glibc)
import Glibc
#endif

/// An error the user reads, with the process exit code the README gives (*Running a tool in
/// its sandbox*: 1 the checked thing is wrong, 2 usage or bad input, 3 storage).
struct CLIError: Error, CustomStringConvertible {
    let message: String
    let exitCode: Int32
    /// Lines printed before `ward: message`, as they are (policy diagnostics, compiler style).
    var details: [String] = []
    var description: String { message }

    static func usage(_ message: String) -> CLIError { CLIError(message: message, exitCode: 2) }

    /// Policies that cannot be loaded. A directory that is missing or holds no policy files is
    /// a usage error (2) everywhere: nothing was checked. Wrong files exit `invalid`: 1 for
    /// `policy check`, whose checked thing they are, 2 for commands given them as input.
    static func policies(_ error: PolicyError, invalid: Int32) -> CLIError {
        guard !error.diagnostics.isEmpty else { return .usage(error.message) }
        let sorted = error.diagnostics.sorted { ($0.file, $0.line, $0.column, $0.message) < ($1.file, $1.line, $1.column, $1.message) }
        let count = sorted.count == 1 ? "1 error" : "\(sorted.count) errors"
        return CLIError(message: "\(error.message): \(count)", exitCode: invalid, details: sorted.map(\.description))
    }
}

struct Ward: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ward",
        abstract: "Run AI agents' tool calls sandboxed, recorded and crash-safe.",
        version: Ward.version,
        subcommands: [RunCommand.self, ServeCommand.self, MCPGroup.self, CallCommand.self, SandboxCommand.self, PolicyCommand.self, LedgerCommand.self, RunsCommand.self,
                      CheckpointCommand.self, ApproveCommand.self, DenyCommand.self, DoctorCommand.self]
    )

    /// ward's version, for `ward --version` and `ward doctor --json`.
    static let version = "0.5.0"
}

/// Options shared by commands that load policies and run tools.
struct PolicyOptions: ParsableArguments {
    @Option(name: .customLong("policies"), help: "Policy directory (default: the run's recorded one, else ./policies).")
    var policiesOption: String?

    @Option(name: .customLong("workspace"), help: "Workspace directory (default: the run's recorded one, else ./workspace, created when missing).")
    var workspaceOption: String?

    /// The directories given, or the defaults. A run's later attempts and reconciles use the
    /// ones its ledger recorded instead (`RunPlace`).
    var policies: String { policiesOption ?? "policies" }
    var workspace: String { workspaceOption ?? "workspace" }

    @Option(name: .customLong("tool-user"),
            help: "Who tools run as when ward is root: NAME, UID or UID:GID (default: the policies' [defaults] user, else ward-tool, else 65533). Never root.")
    var toolUser: String?

    func load() throws -> PolicySet { try PolicyOptions.load(policies) }

    /// The sandbox tools of `policies` run in: in `workspace`, as `--tool-user`.
    func sandbox(_ policies: PolicySet, workspace: String, logger: Logger = Logger(label: "ward")) throws -> Sandbox {
        do { return try Sandbox(policies: policies, workspace: workspace, logger: logger, toolUser: toolUser) } catch {
            throw CLIError(message: error.description, exitCode: 1)
        }
    }

    static func load(_ directory: String) throws -> PolicySet {
        do { return try PolicyLoader.load(directory: directory) } catch {
            throw CLIError.policies(error, invalid: 2)
        }
    }

    /// Where a run works: its recorded place (the directories given must be it, unless
    /// `moved`), or, for a run without one, the directories given. A recorded workspace that
    /// is missing is never made anew: an empty directory would hide the effects a reconcile
    /// looks for. `create` makes a missing workspace for a run that has no place yet (`ward
    /// run`, `ward serve`). The caller loads the policies, then `claim`s the place.
    func place(of run: String, in ledger: Ledger, create: Bool, defaultAllowed: Bool = true) throws -> RunPlace {
        let recorded = try ledgerCall { () throws(LedgerError) in try ledger.recordedPlace(run: run) }
        if recorded == nil && workspaceOption == nil && !defaultAllowed {
            throw CLIError.usage("run \(run) has no recorded workspace (an older ward ran it): pass --workspace DIR, the directory it ran in")
        }
        let workspace = workspaceOption ?? recorded?.workspace ?? self.workspace
        let policies = policiesOption ?? recorded?.policies ?? self.policies
        if recorded == nil && create && access(workspace, F_OK) != 0 && mkdir(workspace, 0o755) != 0 {
            throw CLIError(message: "cannot create workspace \(workspace): \(String(cString: strerror(errno)))", exitCode: 1)
        }
        guard let place = RunPlace.of(workspace: workspace, policies: policies) else {
            if let recorded, workspaceOption == nil {
                throw CLIError(message: "the workspace \(recorded.workspace) of run \(run) is missing: ward does not make a new one for a run that used it (its effects would not be found); restore it, or pass --workspace DIR --move-workspace where it was moved", exitCode: 1)
            }
            throw CLIError(message: "workspace \(workspace) does not exist (or is not a directory)", exitCode: 1)
        }
        return place
    }

    /// Records `place` as `run`'s (see `Ledger.claimPlace`): another workspace than the
    /// recorded one is refused unless `moved`.
    func claim(_ place: RunPlace, run: String, in ledger: Ledger, moved: Bool) throws {
        do { try ledger.claimPlace(run: run, place, moved: moved) } catch where error.code == .invalid {
            throw CLIError(message: error.message + " (if the run's workspace was moved there, add --move-workspace)", exitCode: 1)
        } catch {
            throw CLIError.from(error)
        }
    }

    /// The workspace as an absolute path, also before it exists (for `policy explain`).
    var absoluteWorkspace: String {
        if workspace.hasPrefix("/") { return workspace }
        guard let pointer = getcwd(nil, 0) else { return workspace }
        defer { free(pointer) }
        let cwd = String(cString: pointer)
        let relative = workspace.split(separator: "/").filter { $0 != "." }.joined(separator: "/")
        return relative.isEmpty ? cwd : (cwd == "/" ? "" : cwd) + "/" + relative
    }
}

/// `--arg k=v` and `--args-json JSON`, merged into one JSON object.
struct ArgumentOptions: ParsableArguments {
    @Option(name: .customLong("arg"), help: "An argument as name=value (a string); repeatable.")
    var args: [String] = []

    @Option(name: .customLong("args-json"), help: "All arguments as one JSON object.")
    var argsJSON: String?

    func arguments() throws -> [String: JSONValue] {
        var members: [String: JSONValue] = [:]
        if let argsJSON {
            let value: JSONValue
            do { value = try JSONValue.parse(argsJSON) } catch {
                throw CLIError.usage("--args-json is not valid JSON: \(error)")
            }
            guard let object = value.objectValue else {
                throw CLIError.usage("--args-json must be a JSON object, not \(value.typeName)")
            }
            members = object
        }
        for arg in args {
            guard let eq = arg.firstIndex(of: "="), eq != arg.startIndex else {
                throw CLIError.usage("--arg \(arg): expected name=value")
            }
            let name = String(arg[..<eq])
            // A second value would silently replace the first: say which one is meant.
            guard members[name] == nil else { throw CLIError.usage("argument \"\(name)\" given twice") }
            members[name] = .string(String(arg[arg.index(after: eq)...]))
        }
        return members
    }
}

struct SandboxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract: "Run one tool in its sandbox, without the ledger (for trying policies).",
        discussion: """
            Prints the tool's stdout and stderr and exits with its exit code (128+N when killed by signal N, 124 on timeout). \
            Into a pipe or file the output is passed through byte for byte; on a terminal, control and bidi characters are shown escaped (\\x1b, \\u{202e}).
            """
    )

    @OptionGroup var policyOptions: PolicyOptions
    @OptionGroup var argumentOptions: ArgumentOptions

    @Flag(name: .long, help: "Print the CallResult as JSON instead.")
    var json = false

    @Argument(help: "The tool to run.")
    var tool: String

    func run() throws {
        let policies = try policyOptions.load()
        let arguments = try argumentOptions.arguments()
        try Checks.layout(policies: policies, workspace: policyOptions.workspace, ledger: nil)
        let sandbox = try policyOptions.sandbox(policies, workspace: policyOptions.workspace)
        let outcome: ToolOutcome
        // The same WARD_* variables a tool gets under `ward run`, for run and call "sandbox".
        do { outcome = try sandbox.run(tool: tool, arguments: .object(arguments), environment: Reconciler.environment(run: "sandbox", callId: "sandbox")) } catch {
            throw CLIError(message: error.description, exitCode: error.code == .spawnFailed || error.code == .internalError ? 1 : 2)
        }
        if json {
            var json = CallResult(callId: "sandbox", tool: tool, outcome: outcome, replayed: false, attempt: 1).json
            // What the tool attempted to change, when its policy traces it.
            if case .object(var members) = json, let trace = outcome.trace {
                members["trace"] = trace.json
                json = .object(members)
            }
            Output.write(1, Array((json.canonical + "\n").utf8))
        } else {
            Output.stream(1, outcome.stdout)
            Output.stream(2, outcome.stderr)
            if outcome.status != .succeeded && outcome.status != .failed {
                let detail = outcome.signal.map { " by signal \($0) (\(String(cString: strsignal($0))))" } ?? ""
                Output.line(2, "ward: \(tool) \(outcome.status.rawValue)\(detail) after \(Int(outcome.durationMs)) ms")
            }
            if outcome.truncated { Output.line(2, "ward: output truncated at the tool's output limit") }
        }
        let code = outcome.exitStatus
        if code != 0 { throw ExitCode(code) }
    }
}

extension ToolOutcome {
    /// The exit status `ward sandbox` and `ward call` end with: the tool's own, or, as a shell
    /// reports it, 128+N after signal N, 124 after a timeout (timeout(1)), 126 when it could
    /// not be started.
    var exitStatus: Int32 {
        switch status {
        case .succeeded, .resolved: 0
        case .failed: exitCode ?? 1
        case .timedOut: 124
        case .killed: 128 + (signal ?? 9)
        case .denied: 126
        // Never an answer (docs/design.md, *Call states*): a call running elsewhere is
        // awaited, one in doubt is an error.
        case .running, .inDoubt, .awaitingApproval, .approved: 1
        }
    }
}

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Validate policies or show a tool's effective sandbox.",
        subcommands: [Check.self, Explain.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a policy directory.",
            discussion: """
                Each error is one line FILE:LINE:COLUMN: MESSAGE on stderr, sorted by file, line and column, \
                then a summary line; exit 1. Notes (FILE:LINE:COLUMN: note: ..., on stderr) say what ward does \
                with an allowed but sensitive setting, and leave the exit status alone. A directory that is missing or holds no .toml files exits 2.
                """
        )

        @Argument(help: "Policy directory.")
        var directory: String = "policies"

        func run() throws {
            do {
                let set = try PolicyLoader.load(directory: directory)
                for note in set.notes { Output.line(2, note.description) }
                let servers = set.servers.isEmpty ? "" : "; \(set.servers.count) MCP servers OK (\(set.servers.keys.sorted().joined(separator: ", ")))"
                Output.line(1, "\(directory): \(set.tools.count) tools OK (\(set.tools.keys.sorted().joined(separator: ", ")))" + servers)
            } catch {
                throw CLIError.policies(error, invalid: 1)
            }
        }
    }

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a tool's effective sandbox on this machine.")

        @OptionGroup var policyOptions: PolicyOptions

        @Argument(help: "The tool.")
        var tool: String

        func run() throws {
            let set = try policyOptions.load()
            let policy: ToolPolicy
            do { policy = try set.tool(tool) } catch { throw CLIError.usage(error.description) }
            Output.block(1, Self.text(policy, workspace: policyOptions.absoluteWorkspace, features: KernelFeatures.probe()))
        }
    }
}

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Which kernel features the sandbox can use here, and what it does without each.",
        discussion: "--json: {\"version\", \"features\": [{\"key\", \"name\", \"available\", \"state\", \"effect\", \"without\"}]}; effect is what ward does here, without what it does on a machine lacking the feature."
    )

    @Flag(help: "JSON output.") var json = false
    @Option(help: "Also check this ledger (a file or a postgres:// URL): its connection, schema version, durability and, for a server, the clock skew between it and this host.")
    var ledger: String?

    func run() throws {
        let features = KernelFeatures.probe()
        let health = try ledger.map { at in
            try ledgerCall { () throws(LedgerError) -> LedgerHealth in try Ledger(path: at, existing: true, recover: false).health() }
        }
        guard json else {
            print(Doctor.report(features))
            if let health { print("\n" + Doctor.report(health)) }
            return try Doctor.judge(health)
        }
        guard case .object(var members) = Doctor.json(features) else { return }
        members["version"] = .string(Ward.version)
        if let health { members["ledger"] = health.json }
        printJSON(.object(members))
        try Doctor.judge(health)
    }
}

/// Everything ward writes goes through here. Text that an agent or a tool chose (IDs, labels,
/// notes, output) is escaped for the terminal by `line`, `block` and `Table`; `--json` and
/// export are written exact with `write`, and a tool's or agent's own byte stream with `stream`.
enum Output {
    /// One line for people, every control character in it escaped (`\x1b`).
    static func line(_ fd: Int32, _ text: String) {
        write(fd, Array((TerminalText.escape(text) + "\n").utf8))
    }

    /// Several lines for people: escaped like `line`, but keeping its line breaks and tabs.
    static func block(_ fd: Int32, _ text: String) {
        write(fd, Array((TerminalText.escape(text, keepingLineBreaks: true) + "\n").utf8))
    }

    /// A tool's or checkpoint's own bytes: exact into a pipe or a file, where a program reads
    /// them; escaped (line breaks kept) on a terminal, where escape sequences would act.
    static func stream(_ fd: Int32, _ bytes: [UInt8]) {
        if isatty(fd) == 1 { write(fd, Array(TerminalText.escape(bytes: bytes, keepingLineBreaks: true).utf8)) } else { write(fd, bytes) }
    }

    static func write(_ fd: Int32, _ bytes: [UInt8]) { _ = OS.writeAll(fd, bytes) }
}

// MARK: - Entry point

/// Log lines reach the operator's terminal too: whatever a message quotes (a call ID, a tool's
/// words) is escaped like every other line ward prints.
struct EscapingLogHandler: LogHandler {
    var inner: StreamLogHandler
    var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }
    var logLevel: Logger.Level {
        get { inner.logLevel }
        set { inner.logLevel = newValue }
    }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }
    func log(event: LogEvent) {
        var event = event
        event.message = "\(TerminalText.escape(event.message.description))"
        event.metadata = event.metadata?.mapValues { .string(TerminalText.escape($0.description)) }
        inner.log(event: event)
    }
}

LoggingSystem.bootstrap { label in
    var handler = EscapingLogHandler(inner: StreamLogHandler.standardError(label: label))
    handler.logLevel = getenv("WARD_LOG").flatMap { Logger.Level(rawValue: String(cString: $0)) } ?? .warning
    return handler
}
signal(SIGPIPE, SIG_IGN)
// A pipe created while fd 0, 1 or 2 is closed would land there and be mistaken for stdio.
for fd in Int32(0)...2 where fcntl(fd, F_GETFD) < 0 { _ = open("/dev/null", O_RDWR) }

do {
    var command = try Ward.parseAsRoot()
    try command.run()
} catch let error as CLIError {
    for line in error.details { Output.line(2, line) }
    Output.line(2, "ward: \(error.message)")
    exit(error.exitCode)
} catch let error as ExitCode {
    exit(error.rawValue)
} catch {
    let code = Ward.exitCode(for: error)
    if code == .validationFailure {
        // One line, like every other error; --help has the usage.
        Output.line(2, "ward: " + Ward.message(for: error).split(separator: "\n").joined(separator: " "))
        exit(2)
    }
    Ward.exit(withError: error)
}
