/// What repeating a tool call does to the world. The ledger uses it to decide what a call
/// caught mid-flight by a crash becomes: read-only and idempotent calls are simply run
/// again; a non-idempotent one becomes in-doubt.
public enum Effect: String, Sendable, Hashable, CaseIterable {
    case readOnly = "read-only"
    case idempotent = "idempotent"
    case nonIdempotent = "non-idempotent"
}

/// How much network a tool gets.
public enum NetworkAccess: String, Sendable, Hashable, CaseIterable {
    /// No sockets at all (seccomp refuses `socket` and the calls that need an address;
    /// AF_UNIX stream and seqpacket `socketpair`s still work): no host
    /// loopback, no abstract or pathname Unix sockets, no TCP or UDP.
    case none
    /// A private network namespace with only its own loopback up.
    case loopback
    /// The host's network (IPv4, IPv6 and Unix sockets; no raw, netlink or vsock).
    case any
}

/// Resource bounds of one call. nil means "no limit of ward's own".
public struct Limits: Sendable, Hashable {
    /// Bytes of memory for the whole call (cgroup), or address space (RLIMIT_AS) without one.
    public var memory: UInt64?
    /// CPU seconds (RLIMIT_CPU).
    public var cpuSeconds: UInt64?
    /// Processes and threads in the whole call (cgroup pids.max, or RLIMIT_NPROC).
    public var processes: UInt64?
    /// Largest file the tool may write (RLIMIT_FSIZE).
    public var fileSize: UInt64?
    /// Open file descriptors (RLIMIT_NOFILE).
    public var openFiles: UInt64?
    /// Bytes of stdout and of stderr kept; the rest is dropped and `truncated` set.
    public var output: UInt64

    public init(memory: UInt64? = nil, cpuSeconds: UInt64? = nil, processes: UInt64? = nil,
                fileSize: UInt64? = nil, openFiles: UInt64? = nil, output: UInt64 = 1 << 20) {
        self.memory = memory
        self.cpuSeconds = cpuSeconds
        self.processes = processes
        self.fileSize = fileSize
        self.openFiles = openFiles
        self.output = output
    }
}

/// One environment entry of a tool: copied from ward's environment when present (`NAME`),
/// or set to a value (`NAME=value`, `{workspace}` expanded).
public enum EnvironmentEntry: Sendable, Hashable {
    case inherit(String)
    case set(String, String)

    public var name: String {
        switch self {
        case .inherit(let n), .set(let n, _): n
        }
    }
}

/// A tool's effective policy: its file's `[defaults]` merged with its own table.
public struct ToolPolicy: Sendable, Hashable {
    /// The tool's name (`[tools.NAME]`).
    public var name: String
    /// The file it was defined in, for messages.
    public var file: String
    public var description: String?
    /// argv templates; `{name}` placeholders are replaced by arguments, each element stays one element.
    public var command: [String]
    public var effect: Effect
    /// The resolved allowlist, sorted.
    public var syscalls: [String]
    public var network: NetworkAccess
    /// Read-only roots (templates: `{workspace}` expands at run time; a leading `?` marks optional).
    public var read: [String]
    /// Read-write roots.
    public var write: [String]
    public var environment: [EnvironmentEntry]
    /// Wall-clock timeout in milliseconds.
    public var timeoutMilliseconds: UInt64
    public var limits: Limits
    /// The reconcile command (argv templates), for settling in-doubt calls.
    public var reconcile: [String]?
    /// The argument names the tool declares (`arguments = [...]`), or nil when it declares
    /// none: a declaring tool is given no other argument.
    public var arguments: [String]? = nil
    /// Whether a call may destroy or overwrite what it did not create (`destructive`): told to
    /// MCP hosts as `destructiveHint`. nil: true for a non-idempotent tool, else false.
    public var destructive: Bool? = nil
    /// A JSON Schema of the tool's arguments (`input-schema`, a table), published to MCP
    /// hosts instead of the one derived from `arguments` and the placeholders.
    public var inputSchema: PolicyValue? = nil
    /// Whether each call waits for an operator's verdict before it runs (`approve`): recorded
    /// `awaiting-approval` first, run once approved (`ward approve`), ended `denied` if not.
    public var approve = false
    /// Whether each call's effects are traced (`trace`): nil when the policy does not say.
    public var trace: Bool? = nil

    /// Whether each call's effects on files, programs and the network are recorded: as the
    /// policy says, else for a non-idempotent tool, whose calls are the ones an operator
    /// must settle after a crash and the ones whose changes an audit asks about.
    public var traced: Bool { trace ?? (effect == .nonIdempotent) }

    /// The argument names the command refers to (`{workspace}` excluded).
    public var placeholders: [String] {
        var seen: [String] = []
        for element in command + (reconcile ?? []) {
            for name in Template.placeholders(in: element) where name != Template.workspace && !seen.contains(name) {
                seen.append(name)
            }
        }
        return seen
    }
}

/// A third-party MCP server that `ward mcp proxy` runs in a sandbox (`[servers.NAME]`), and
/// what ward says of each of its tools (`[servers.NAME.tools.TOOL]`). The server's own
/// annotations are never trusted: a tool the policy does not name is non-idempotent and
/// destructive.
public struct ServerPolicy: Sendable, Hashable {
    /// The server's name (`[servers.NAME]`).
    public var name: String
    /// The file it was defined in, for messages.
    public var file: String
    /// The server process's command and sandbox: the keys a tool has (its file's
    /// `[defaults]` merged in), `timeout` being each call's unless its tool names one.
    /// Its `name` is `NAME`; its effect is not used.
    public var sandbox: ToolPolicy
    /// The tools the policy names, by the server's name for them.
    public var tools: [String: ServerToolPolicy]

    public init(name: String, file: String, sandbox: ToolPolicy, tools: [String: ServerToolPolicy]) {
        self.name = name
        self.file = file
        self.sandbox = sandbox
        self.tools = tools
    }

    /// What ward holds a tool of this server to: the policy's entry, else non-idempotent
    /// and destructive, with the server's timeout.
    public func tool(_ name: String) -> ServerToolPolicy {
        tools[name] ?? ServerToolPolicy(name: name, effect: .nonIdempotent, destructive: true, timeoutMilliseconds: sandbox.timeoutMilliseconds,
                                        approve: sandbox.approve)
    }
}

/// One tool of a proxied MCP server, as the policy declares it.
public struct ServerToolPolicy: Sendable, Hashable {
    public var name: String
    public var effect: Effect
    /// Told to MCP hosts as `destructiveHint` (never true for a read-only tool).
    public var destructive: Bool
    /// How long a call may take before the server's tree is killed and the call ends
    /// (in doubt, for a non-idempotent tool), in milliseconds.
    public var timeoutMilliseconds: UInt64
    /// Each call waits for an operator's verdict (`approve`; the server's own `approve` when
    /// the tool's table does not say).
    public var approve: Bool

    public init(name: String, effect: Effect, destructive: Bool, timeoutMilliseconds: UInt64, approve: Bool = false) {
        self.name = name
        self.effect = effect
        self.destructive = destructive
        self.timeoutMilliseconds = timeoutMilliseconds
        self.approve = approve
    }
}

/// Every tool of a policy directory, plus the named syscall sets they were resolved with.
public struct PolicySet: Sendable {
    public var tools: [String: ToolPolicy]
    /// The MCP servers `ward mcp proxy` may run (`[servers.NAME]`).
    public var servers: [String: ServerPolicy] = [:]
    public var syscallSets: [String: [String]]
    public var directory: String
    /// `[defaults] user`: who a root ward's tools run as (see `ToolIdentity`); nil: the default.
    public var toolUser: String?
    /// Remarks for `ward policy check` that are not errors, e.g. a tool allowed `ptrace`
    /// (which ward confines to the tool's own call).
    public var notes: [PolicyDiagnostic]

    public init(tools: [String: ToolPolicy], servers: [String: ServerPolicy] = [:], syscallSets: [String: [String]], directory: String,
                toolUser: String? = nil, notes: [PolicyDiagnostic] = []) {
        self.tools = tools
        self.servers = servers
        self.syscallSets = syscallSets
        self.directory = directory
        self.toolUser = toolUser
        self.notes = notes
    }

    /// The tool, or a `PolicyError` naming the known tools.
    public func tool(_ name: String) throws(PolicyError) -> ToolPolicy {
        guard let tool = tools[name] else { throw unknown("tool", name, known: tools.keys) }
        return tool
    }

    /// The server, or a `PolicyError` naming the known servers.
    public func server(_ name: String) throws(PolicyError) -> ServerPolicy {
        guard let server = servers[name] else { throw unknown("server", name, known: servers.keys) }
        return server
    }

    private func unknown(_ kind: String, _ name: String, known: some Collection<String>) -> PolicyError {
        let names = known.sorted().joined(separator: ", ")
        return PolicyError(message: "unknown \(kind) \"\(name)\" (policies in \(directory) define: \(names.isEmpty ? "none" : names))",
                           code: .unknownTool)
    }
}

/// A policy value kept as written, for what ward passes on rather than reads itself (an
/// `input-schema`): TOML's strings, numbers, booleans, arrays and tables.
public indirect enum PolicyValue: Sendable, Hashable {
    case string(String)
    case integer(Int)
    case double(Double)
    case bool(Bool)
    case array([PolicyValue])
    case table([String: PolicyValue])
}
