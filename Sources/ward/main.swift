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

/// An error the user reads, with the process exit code of DESIGN.md
/// (1 the checked thing is wrong, 2 usage or bad input, 3 storage).
struct CLIError: Error, CustomStringConvertible {
    let message: String
    let exitCode: Int32
    var description: String { message }

    static func usage(_ message: String) -> CLIError { CLIError(message: message, exitCode: 2) }
}

struct Ward: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ward",
        abstract: "Run AI agents' tool calls sandboxed, recorded and crash-safe.",
        subcommands: [RunCommand.self, ServeCommand.self, CallCommand.self, SandboxCommand.self, PolicyCommand.self, LedgerCommand.self, RunsCommand.self,
                      CheckpointCommand.self, DoctorCommand.self]
    )
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

    func load() throws -> PolicySet { try PolicyOptions.load(policies) }

    static func load(_ directory: String) throws -> PolicySet {
        do { return try PolicyLoader.load(directory: directory) } catch {
            throw CLIError.usage(error.description)
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
}

/// `--arg k=v` and `--args-json JSON`, merged into one JSON object.
struct ArgumentOptions: ParsableArguments {
    @Option(name: .customLong("arg"), help: "An argument as name=value (a string); repeatable.")
    var args: [String] = []

    @Option(name: .customLong("args-json"), help: "All arguments as one JSON object.")
    var argsJSON: String?

    func arguments() throws -> JSONValue {
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
            members[String(arg[..<eq])] = .string(String(arg[arg.index(after: eq)...]))
        }
        return .object(members)
    }
}

struct SandboxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox",
        abstract: "Run one tool in its sandbox, without the ledger (for trying policies).",
        discussion: "Prints the tool's stdout and stderr and exits with its exit code (128+N when killed by signal N, 124 on timeout)."
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
        let sandbox: Sandbox
        do { sandbox = try Sandbox(policies: policies, workspace: policyOptions.workspace, logger: Logger(label: "ward")) } catch {
            throw CLIError(message: error.description, exitCode: 1)
        }
        let outcome: ToolOutcome
        // The same WARD_* variables a tool gets under `ward run`, for run and call "sandbox".
        do { outcome = try sandbox.run(tool: tool, arguments: arguments, environment: Reconciler.environment(run: "sandbox", callId: "sandbox")) } catch {
            throw CLIError(message: error.description, exitCode: error.code == .spawnFailed || error.code == .internalError ? 1 : 2)
        }
        if json {
            let result = CallResult(callId: "sandbox", tool: tool, outcome: outcome, replayed: false, attempt: 1)
            Output.write(1, Array((result.json.canonical + "\n").utf8))
        } else {
            Output.write(1, outcome.stdout)
            Output.write(2, outcome.stderr)
            if outcome.status != .succeeded && outcome.status != .failed {
                let detail = outcome.signal.map { " by signal \($0) (\(String(cString: strsignal($0))))" } ?? ""
                Output.write(2, Array("ward: \(tool) \(outcome.status.rawValue)\(detail) after \(Int(outcome.durationMs)) ms\n".utf8))
            }
            if outcome.truncated { Output.write(2, Array("ward: output truncated at the tool's output limit\n".utf8)) }
        }
        let code: Int32
        switch outcome.status {
        case .timedOut: code = 124
        case .killed: code = 128 + (outcome.signal ?? 9)
        default: code = outcome.exitCode ?? 1
        }
        if code != 0 { throw ExitCode(code) }
    }
}

struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Validate policies or show a tool's effective sandbox.",
        subcommands: [Check.self, Explain.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate a policy directory; errors as file:line:column (exit 1).")

        @Argument(help: "Policy directory.")
        var directory: String = "policies"

        func run() throws {
            do {
                let set = try PolicyLoader.load(directory: directory)
                print("\(directory): \(set.tools.count) tools OK (\(set.tools.keys.sorted().joined(separator: ", ")))")
            } catch {
                throw CLIError(message: error.description, exitCode: 1)
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
            print(Sandbox.explain(policy, workspace: policyOptions.workspace, features: KernelFeatures.probe()))
        }
    }
}

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Which kernel features the sandbox can use here, and what it does without each."
    )

    func run() throws {
        print(Doctor.report(KernelFeatures.probe()))
    }
}

enum Output {
    static func write(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; return }
            offset += n
        }
    }
}

// MARK: - Entry point

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
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
    Output.write(2, Array("ward: \(error.message)\n".utf8))
    exit(error.exitCode)
} catch let error as ExitCode {
    exit(error.rawValue)
} catch {
    let code = Ward.exitCode(for: error)
    if code == .validationFailure {
        Output.write(2, Array((Ward.fullMessage(for: error) + "\n").utf8))
        exit(2)
    }
    Ward.exit(withError: error)
}
