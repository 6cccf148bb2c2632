import CSeccomp

#if canImport(Glibc)
import Glibc
#endif

/// Reads a policy directory: every `*.toml` file in it, each with optional
/// `[syscall-sets]`, `[defaults]` and `[tools.NAME]` tables.
///
/// ```toml
/// [defaults]
/// syscalls = ["@default", "@file-system"]
/// read = ["/usr", "/etc"]
///
/// [tools.shell]
/// command = ["/bin/sh", "-c", "{command}"]
/// write = ["{workspace}"]
/// ```
///
/// Lists (`syscalls`, `read`, `write`, `env`) extend the defaults; every other key
/// replaces it. All problems of all files are collected and thrown together, each with
/// its file, line and column.
public enum PolicyLoader {
    /// Default wall-clock timeout when a policy names none.
    public static let defaultTimeoutMilliseconds: UInt64 = 30_000

    static let toolKeys: Set<String> = [
        "description", "command", "effect", "syscalls", "network", "read", "write", "env",
        "timeout", "limits", "reconcile", "arguments", "destructive", "input-schema", "approve", "trace",
    ]
    static let limitKeys: Set<String> = ["memory", "cpu", "processes", "file-size", "open-files", "output"]
    /// What a tool has and a proxied server does not: the server's tools have effects, and
    /// it takes no arguments of ward's; a server runs across many calls, so what its process
    /// does cannot be told apart per call (`trace`).
    static let toolOnlyKeys: Set<String> = ["effect", "destructive", "arguments", "input-schema", "reconcile", "trace"]
    /// `[servers.NAME]`: a tool's sandbox keys, and its tools' table.
    static let serverKeys: Set<String> = toolKeys.subtracting(toolOnlyKeys).union(["tools"])
    /// `[servers.NAME.tools.TOOL]`.
    static let serverToolKeys: Set<String> = ["effect", "destructive", "timeout", "approve"]

    /// Loads and validates every policy file of `directory`.
    public static func load(directory: String) throws(PolicyError) -> PolicySet {
        var isDir = false
        guard fileExists(directory, isDirectory: &isDir), isDir else {
            throw PolicyError(message: "policy directory \(directory) does not exist", code: .invalidPolicy)
        }
        let files = listTOMLFiles(directory)
        guard !files.isEmpty else {
            throw PolicyError(message: "policy directory \(directory) has no .toml files", code: .invalidPolicy)
        }
        var sources: [(file: String, text: Result<String, PolicyDiagnostic>)] = []
        for path in files { sources.append((path, Result { () throws(PolicyDiagnostic) in try readPolicyFile(path) })) }
        return try load(sources: sources, directory: directory)
    }

    /// Loads and validates policy texts already read (`file` names them in diagnostics):
    /// the whole of `load(directory:)` but the file system, so it can be fuzzed.
    public static func load(sources: [(file: String, text: String)], directory: String) throws(PolicyError) -> PolicySet {
        try load(sources: sources.map { ($0.file, .success($0.text)) }, directory: directory)
    }

    static func load(sources: [(file: String, text: Result<String, PolicyDiagnostic>)], directory: String) throws(PolicyError) -> PolicySet {
        var parsed: [ParsedFile] = []
        var diagnostics: [PolicyDiagnostic] = []
        for (path, text) in sources {
            do {
                parsed.append(try ParsedFile(path: path, text: text.get()))
            } catch {
                diagnostics.append(error)
            }
        }
        var builder = Builder(directory: directory)
        builder.diagnostics = diagnostics
        builder.collectSets(parsed)
        for file in parsed { builder.collectTools(file) }
        if !builder.diagnostics.isEmpty {
            // A fault in [defaults] is met again by every tool that inherits it: report it once.
            var seen = Set<PolicyDiagnostic>()
            let unique = builder.diagnostics.filter { seen.insert($0).inserted }
            throw PolicyError(message: "invalid policies in \(directory)", code: .invalidPolicy, diagnostics: unique)
        }
        var seen = Set<PolicyDiagnostic>()
        let notes = builder.notes.filter { seen.insert($0).inserted }.sorted { ($0.file, $0.line, $0.column) < ($1.file, $1.line, $1.column) }
        return PolicySet(tools: builder.tools, servers: builder.servers, syscallSets: builder.sets, directory: directory,
                         toolUser: builder.toolUser?.name, notes: notes)
    }

    /// The text of one policy file; a diagnostic at 1:1 when it cannot be read or is not UTF-8.
    public static func readPolicyFile(_ path: String) throws(PolicyDiagnostic) -> String {
        guard let fp = fopen(path, "r") else {
            throw PolicyDiagnostic(file: path, line: 1, column: 1, message: "cannot read: \(String(cString: strerror(errno)))")
        }
        defer { fclose(fp) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, fp)
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw PolicyDiagnostic(file: path, line: 1, column: 1, message: "file is not valid UTF-8")
        }
        return text
    }

    static func fileExists(_ path: String, isDirectory: inout Bool) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0 else { return false }
        isDirectory = (st.st_mode & S_IFMT) == S_IFDIR
        return true
    }

    public static func listTOMLFiles(_ directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name.hasSuffix(".toml"), !name.hasPrefix(".") { names.append(name) }
        }
        let base = directory.hasSuffix("/") ? directory : directory + "/"
        return names.sorted().map { base + $0 }
    }
}


struct ParsedFile {
    let path: String
    let root: [String: Node]
    let map: SourceMap

    init(path: String, text: String) throws(PolicyDiagnostic) {
        self.path = path
        do {
            (root, map) = try TOMLReader.parse(text)
        } catch {
            throw PolicyDiagnostic(file: path, line: error.position.line, column: error.position.column, message: "TOML syntax error: \(error.message)")
        }
    }
}

extension PolicyDiagnostic: Error {}

private struct Builder {
    let directory: String
    var diagnostics: [PolicyDiagnostic] = []
    var sets: [String: [String]] = [:]
    var tools: [String: ToolPolicy] = [:]
    var servers: [String: ServerPolicy] = [:]
    /// `[defaults] user`, and the file that set it.
    var toolUser: (name: String, file: String)?
    /// Remarks that are not errors (`noteCrossProcess`).
    var notes: [PolicyDiagnostic] = []
    private var setOrigin: [String: (ParsedFile, [String])] = [:]

    init(directory: String) { self.directory = directory }

    mutating func report(_ file: ParsedFile, _ path: [String], _ message: String) {
        let pos = file.map.position(of: path)
        diagnostics.append(PolicyDiagnostic(file: file.path, line: pos.line, column: pos.column, message: message))
    }

    mutating func report(_ file: ParsedFile, element: String, in path: [String], _ message: String) {
        let pos = file.map.position(ofString: element, in: path)
        diagnostics.append(PolicyDiagnostic(file: file.path, line: pos.line, column: pos.column, message: message))
    }

    /// Syscalls that act on another process's memory, file descriptors or identity.
    static let crossProcess: Set<String> = ["ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp"]

    /// A tool that asks for `crossProcess` syscalls gets them only within its own call: a
    /// note at each entry that brings one in says so (not an error: tracing the tool's own
    /// children, as strace and gdb do, works).
    mutating func noteCrossProcess(_ file: ParsedFile, _ tool: String, _ entries: [(String, [String])], _ resolved: Set<String>) {
        let granted = resolved.intersection(Self.crossProcess)
        guard !granted.isEmpty else { return }
        for (entry, path) in entries where !entry.hasPrefix("!") {
            var scratch = Builder(directory: directory)
            scratch.sets = sets
            scratch.setOrigin = setOrigin
            guard let brought = scratch.resolveSyscalls(file, path, [entry])?.intersection(granted), !brought.isEmpty else { continue }
            let pos = file.map.position(ofString: entry, in: path)
            let names = brought.sorted().joined(separator: ", ")
            notes.append(PolicyDiagnostic(file: file.path, line: pos.line, column: pos.column, message:
                "note: tool \"\(tool)\" allows \(names) only towards its own call's processes: ward, its zygotes and "
                + "other calls stay out of reach (a Landlock domain per call, a PID namespace per call below Landlock "
                + "ABI 6, a non-dumpable ward when root)"))
        }
    }

    // MARK: Syscall sets

    mutating func collectSets(_ files: [ParsedFile]) {
        for file in files {
            for key in file.root.keys where !["syscall-sets", "defaults", "tools", "servers"].contains(key) {
                report(file, [key], "unknown top-level key \"\(key)\" (expected [syscall-sets], [defaults], [tools.NAME] or [servers.NAME])")
            }
            guard let node = file.root["syscall-sets"] else { continue }
            guard case .table(let members) = node else {
                report(file, ["syscall-sets"], "[syscall-sets] must be a table"); continue
            }
            for (name, value) in members {
                let path = ["syscall-sets", name]
                if let (other, _) = setOrigin[name] {
                    report(file, path, "syscall set \"@\(name)\" is already defined in \(other.path)"); continue
                }
                guard let list = stringList(file, path, value) else { continue }
                sets[name] = list
                setOrigin[name] = (file, path)
            }
        }
        // Resolve each set now so unknown names are reported once, where the set is defined.
        for name in sets.keys.sorted() {
            let (file, path) = setOrigin[name]!
            _ = resolveSyscalls(file, path, sets[name]!, visiting: [name])
        }
    }

    /// systemd-style evaluation: entries in order, `@set` expands, `!` removes.
    mutating func resolveSyscalls(_ file: ParsedFile, _ path: [String], _ entries: [String], visiting: Set<String> = []) -> Set<String>? {
        var result = Set<String>()
        var ok = true
        for entry in entries {
            let negate = entry.hasPrefix("!")
            let name = negate ? String(entry.dropFirst()) : entry
            var members: Set<String> = []
            if name.hasPrefix("@") {
                let setName = String(name.dropFirst())
                guard let list = sets[setName] else {
                    report(file, element: entry, in: path, "unknown syscall set \"\(name)\" (known: \(sets.keys.sorted().map { "@" + $0 }.joined(separator: ", ")))")
                    ok = false; continue
                }
                if visiting.contains(setName) {
                    report(file, element: entry, in: path, "syscall set \"\(name)\" includes itself"); ok = false; continue
                }
                guard let resolved = resolveSyscalls(setOrigin[setName]!.0, setOrigin[setName]!.1, list, visiting: visiting.union([setName])) else {
                    ok = false; continue
                }
                members = resolved
            } else {
                guard seccomp_syscall_resolve_name(name) != __NR_SCMP_ERROR else {
                    report(file, element: entry, in: path, "unknown syscall \"\(name)\""); ok = false; continue
                }
                members = [name]
            }
            if negate { result.subtract(members) } else { result.formUnion(members) }
        }
        return ok ? result : nil
    }

    // MARK: Tools

    mutating func collectTools(_ file: ParsedFile) {
        var defaults: [String: Node] = [:]
        if let node = file.root["defaults"] {
            if case .table(let members) = node { defaults = members } else { report(file, ["defaults"], "[defaults] must be a table") }
            // Who a root ward's tools run as: one identity for the whole directory, since the
            // workspace they share is given to it.
            if let user = defaults.removeValue(forKey: "user") {
                if case .string(let name) = user, !name.isEmpty {
                    if let other = toolUser, other.name != name {
                        report(file, ["defaults", "user"], "[defaults] user = \"\(name)\" differs from \"\(other.name)\" in \(other.file) (tools share one workspace, so one user runs them all)")
                    } else {
                        toolUser = (name, file.path)
                    }
                } else {
                    report(file, ["defaults", "user"], "[defaults] user must be a user name, \"UID\" or \"UID:GID\"")
                }
            }
            checkKeys(file, ["defaults"], defaults)
        }
        collectServers(file, defaults: defaults)
        guard let toolsNode = file.root["tools"] else { return }
        guard case .table(let toolTables) = toolsNode else { report(file, ["tools"], "[tools] must hold tables: [tools.NAME]"); return }
        for name in toolTables.keys.sorted() {
            let path = ["tools", name]
            guard case .table(let own) = toolTables[name]! else { report(file, path, "tools.\(name) must be a table"); continue }
            guard isNew(file, path, "tool", definedIn: tools[name]?.file) else { continue }
            checkKeys(file, path, own)
            if let tool = buildTool(file, name, base: path, defaults: defaults, own: own) { tools[name] = tool }
        }
    }

    /// Whether the table at `path` (`[tools.NAME]`, `[servers.NAME]`) has a name of letters,
    /// digits, '_', '-' and '.' not defined before (`other`: the file that did); else says why.
    mutating func isNew(_ file: ParsedFile, _ path: [String], _ kind: String, definedIn other: String?) -> Bool {
        let name = path[1]
        if let other { report(file, path, "\(kind) \"\(name)\" is already defined in \(other)"); return false }
        guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == ".") }) else {
            report(file, path, "\(kind) name \"\(name)\" may use only letters, digits, '_', '-' and '.'"); return false
        }
        return true
    }

    // MARK: Servers

    /// `[servers.NAME]`: a proxied MCP server's sandbox, built as a tool's is (the file's
    /// `[defaults]` merged in, less what only tools have), and `[servers.NAME.tools.TOOL]`.
    mutating func collectServers(_ file: ParsedFile, defaults: [String: Node]) {
        guard let node = file.root["servers"] else { return }
        guard case .table(let tables) = node else { report(file, ["servers"], "[servers] must hold tables: [servers.NAME]"); return }
        let serverDefaults = defaults.filter { !PolicyLoader.toolOnlyKeys.contains($0.key) }
        for name in tables.keys.sorted() {
            let path = ["servers", name]
            guard case .table(let own) = tables[name]! else { report(file, path, "servers.\(name) must be a table"); continue }
            guard isNew(file, path, "server", definedIn: servers[name]?.file) else { continue }
            checkKeys(file, path, own, known: PolicyLoader.serverKeys)
            var sandboxTable = own
            let toolsNode = sandboxTable.removeValue(forKey: "tools")
            let errorsBefore = diagnostics.count
            let sandbox = buildTool(file, name, base: path, defaults: serverDefaults, own: sandboxTable)
            var serverTools: [String: ServerToolPolicy] = [:]
            if let toolsNode {
                if case .table(let toolTables) = toolsNode {
                    for tool in toolTables.keys.sorted() {
                        let timeout = sandbox?.timeoutMilliseconds ?? PolicyLoader.defaultTimeoutMilliseconds
                        if let policy = serverTool(file, path + ["tools", tool], tool, toolTables[tool]!, defaultTimeout: timeout,
                                                   defaultApproval: sandbox?.approve ?? false) {
                            serverTools[tool] = policy
                        }
                    }
                } else {
                    report(file, path + ["tools"], "servers.\(name).tools must hold tables: [servers.\(name).tools.TOOL]")
                }
            }
            guard let sandbox, diagnostics.count == errorsBefore else { continue }
            servers[name] = ServerPolicy(name: name, file: file.path, sandbox: sandbox, tools: serverTools)
        }
    }

    /// One `[servers.NAME.tools.TOOL]` table.
    mutating func serverTool(_ file: ParsedFile, _ path: [String], _ name: String, _ node: Node, defaultTimeout: UInt64,
                             defaultApproval: Bool) -> ServerToolPolicy? {
        guard case .table(let table) = node else { report(file, path, "\(path.joined(separator: ".")) must be a table"); return nil }
        guard !name.isEmpty else { report(file, path, "a server's tool needs a name"); return nil }
        let errorsBefore = diagnostics.count
        for key in table.keys.sorted() where !PolicyLoader.serverToolKeys.contains(key) {
            report(file, path + [key], "unknown key \"\(key)\" for a server's tool (known: \(PolicyLoader.serverToolKeys.sorted().joined(separator: ", ")))")
        }
        var effect = Effect.nonIdempotent
        if let node = table["effect"] {
            if case .string(let s) = node, let e = Effect(rawValue: s) { effect = e } else {
                report(file, path + ["effect"], "effect must be one of read-only, idempotent, non-idempotent (got \(describe(node)))")
            }
        }
        var destructive = effect == .nonIdempotent
        if let node = table["destructive"] {
            if case .bool(let b) = node {
                destructive = b
                if b && effect == .readOnly { report(file, path + ["destructive"], "tool \"\(name)\" is read-only, so it cannot be destructive") }
            } else {
                report(file, path + ["destructive"], "destructive must be true or false, not a \(node.typeName)")
            }
        }
        var timeout = defaultTimeout
        if let node = table["timeout"], let ms = quantity(file, path + ["timeout"], node, .timeout) { timeout = ms }
        let approve = flag(file, path + ["approve"], table["approve"]) ?? defaultApproval
        guard diagnostics.count == errorsBefore else { return nil }
        return ServerToolPolicy(name: name, effect: effect, destructive: destructive, timeoutMilliseconds: timeout, approve: approve)
    }

    mutating func checkKeys(_ file: ParsedFile, _ path: [String], _ table: [String: Node], known: Set<String> = PolicyLoader.toolKeys) {
        for key in table.keys.sorted() where !known.contains(key) {
            if key == "user" {
                report(file, path + [key], "user is chosen for all tools at once, in [defaults] (they share one workspace)"); continue
            }
            if known == PolicyLoader.serverKeys && PolicyLoader.toolOnlyKeys.contains(key) {
                report(file, path + [key], "\(key) belongs to each of a server's tools ([\(path.joined(separator: ".")).tools.TOOL]), not to the server"); continue
            }
            report(file, path + [key], "unknown key \"\(key)\" (known: \(known.sorted().joined(separator: ", ")))")
        }
        if case .table(let limits)? = table["limits"] {
            for key in limits.keys.sorted() where !PolicyLoader.limitKeys.contains(key) {
                report(file, path + ["limits", key], "unknown limit \"\(key)\" (known: \(PolicyLoader.limitKeys.sorted().joined(separator: ", ")))")
            }
        }
    }

    /// A key's value and the path to report it at: the tool's own, else the defaults'.
    func lookup(_ key: String, _ base: [String], defaults: [String: Node], own: [String: Node]) -> (Node, [String])? {
        if let v = own[key] { return (v, base + [key]) }
        if let v = defaults[key] { return (v, ["defaults", key]) }
        return nil
    }

    /// Defaults' list followed by the tool's own.
    mutating func mergedList(_ file: ParsedFile, _ key: String, _ base: [String], defaults: [String: Node], own: [String: Node]) -> [(String, [String])]? {
        var out: [(String, [String])] = []
        var ok = true
        for (table, path) in [(defaults, ["defaults", key]), (own, base + [key])] {
            guard let node = table[key] else { continue }
            guard let list = stringList(file, path, node) else { ok = false; continue }
            out += list.map { ($0, path) }
        }
        return ok ? out : nil
    }

    mutating func stringList(_ file: ParsedFile, _ path: [String], _ node: Node) -> [String]? {
        guard case .array(let items) = node else {
            report(file, path, "\(path.last!) must be an array of strings, not a \(node.typeName)"); return nil
        }
        var out: [String] = []
        for item in items {
            guard case .string(let s) = item else {
                report(file, path, "\(path.last!) must hold only strings, found a \(item.typeName)"); return nil
            }
            out.append(s)
        }
        return out
    }

    /// A tool's policy from its table at `base` (`["tools", NAME]`), or a proxied server's
    /// sandbox from its (`["servers", NAME]`, whose `defaults` hold no tool-only key).
    mutating func buildTool(_ file: ParsedFile, _ name: String, base: [String], defaults: [String: Node], own: [String: Node]) -> ToolPolicy? {
        let errorsBefore = diagnostics.count
        let kind = base.first == "servers" ? "server" : "tool"
        func string(_ key: String) -> (String, [String])? {
            guard let (node, path) = lookup(key, base, defaults: defaults, own: own) else { return nil }
            guard case .string(let s) = node else { report(file, path, "\(key) must be a string, not a \(node.typeName)"); return nil }
            return (s, path)
        }

        // command
        var command: [String] = []
        if let (node, path) = lookup("command", base, defaults: defaults, own: own) {
            if let list = stringList(file, path, node) {
                command = list
                if list.isEmpty { report(file, path, "command must not be empty") }
                validateCommand(file, path, list, optional: kind == "server")
            }
        } else {
            report(file, base, "\(kind) \"\(name)\" has no command")
        }

        var effect = Effect.nonIdempotent
        if let (s, path) = string("effect") {
            if let e = Effect(rawValue: s) { effect = e } else {
                report(file, path, "effect must be one of read-only, idempotent, non-idempotent (got \"\(s)\")")
            }
        }
        var network = NetworkAccess.none
        if let (s, path) = string("network") {
            if let n = NetworkAccess(rawValue: s) { network = n } else {
                report(file, path, "network must be one of none, loopback, any (got \"\(s)\")")
            }
        }
        let description = string("description")?.0

        // syscalls
        var syscalls: [String] = []
        if let entries = mergedList(file, "syscalls", base, defaults: defaults, own: own) {
            var resolved = Set<String>()
            for (entry, path) in entries {
                guard let members = resolveSyscalls(file, path, [entry.hasPrefix("!") ? String(entry.dropFirst()) : entry]) else { continue }
                if entry.hasPrefix("!") { resolved.subtract(members) } else { resolved.formUnion(members) }
            }
            syscalls = resolved.sorted()
            noteCrossProcess(file, name, entries, resolved)
            if entries.isEmpty { report(file, base, "\(kind) \"\(name)\" allows no syscalls (set syscalls in [defaults] or the \(kind))") }
        }

        // paths
        let read = mergedList(file, "read", base, defaults: defaults, own: own) ?? []
        var write = mergedList(file, "write", base, defaults: defaults, own: own) ?? []
        for (entry, path) in read + write { validatePath(file, path, entry) }

        // env
        var environment: [EnvironmentEntry] = []
        for (entry, path) in mergedList(file, "env", base, defaults: defaults, own: own) ?? [] {
            let parts = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(parts[0])
            guard !key.isEmpty, key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }), !key.first!.isNumber else {
                report(file, element: entry, in: path, "bad environment entry \"\(entry)\" (expected NAME or NAME=value)"); continue
            }
            if parts.count == 2 {
                let value = String(parts[1])
                for p in Template.placeholders(in: value) where p != Template.workspace {
                    report(file, element: entry, in: path, "environment values may use only {workspace}, not {\(p)}")
                }
                environment.removeAll { $0.name == key }
                environment.append(.set(key, value))
            } else {
                environment.removeAll { $0.name == key }
                environment.append(.inherit(key))
            }
        }

        // timeout
        var timeout = PolicyLoader.defaultTimeoutMilliseconds
        if let (node, path) = lookup("timeout", base, defaults: defaults, own: own),
           let ms = quantity(file, path, node, .timeout) {
            timeout = ms
        }

        // limits: the tool's own table overrides the defaults' key by key
        var limits = Limits()
        var limitEntries: [String: (Node, [String])] = [:]
        for (table, path) in [(defaults, ["defaults", "limits"]), (own, base + ["limits"])] {
            guard let node = table["limits"] else { continue }
            guard case .table(let members) = node else { report(file, path, "limits must be a table"); continue }
            for (k, v) in members { limitEntries[k] = (v, path + [k]) }
        }
        for (key, (node, path)) in limitEntries.sorted(by: { $0.key < $1.key }) {
            guard let bound = Bound.limits[key], let value = quantity(file, path, node, bound) else { continue }
            switch key {
            case "memory": limits.memory = value
            case "file-size": limits.fileSize = value
            case "output": limits.output = value
            case "cpu": limits.cpuSeconds = value / 1000
            case "processes": limits.processes = value
            case "open-files": limits.openFiles = value
            default: break
            }
        }

        // reconcile
        var reconcile: [String]?
        if let (node, path) = lookup("reconcile", base, defaults: defaults, own: own), let list = stringList(file, path, node) {
            if list.isEmpty { report(file, path, "reconcile must not be empty") } else { validateCommand(file, path, list) }
            reconcile = list
        }

        // arguments: when declared, every placeholder must be one of them
        var arguments: [String]?
        if let (node, path) = lookup("arguments", base, defaults: defaults, own: own), let declared = stringList(file, path, node) {
            arguments = declared
            let commandPath = own["command"] != nil ? base + ["command"] : ["defaults", "command"]
            for element in command {
                for p in Template.placeholders(in: element) where p != Template.workspace && !declared.contains(p) {
                    report(file, element: element, in: commandPath, "placeholder {\(p)} is not among the tool's arguments (\(declared.joined(separator: ", ")))")
                }
            }
        }

        // What MCP hosts are told of the tool must be what its sandbox holds: a read-only
        // tool writes nothing but devices, and destroys nothing. Its own write roots are an
        // error; the ones [defaults] gives every tool are not given to it (lists extend the
        // defaults, so it could not drop them itself).
        if effect == .readOnly {
            for (entry, path) in write where !entry.hasPrefix("/dev/") {
                if path.first == "defaults" {
                    let pos = file.map.position(ofString: entry, in: path)
                    notes.append(PolicyDiagnostic(file: file.path, line: pos.line, column: pos.column, message:
                        "note: tool \"\(name)\" is read-only, so it does not get the default write root \(entry)"))
                } else {
                    report(file, element: entry, in: path, "tool \"\(name)\" is read-only but may write \(entry): drop the write root or change its effect")
                }
            }
            write.removeAll { !$0.0.hasPrefix("/dev/") }
        }
        var destructive: Bool?
        if let (node, path) = lookup("destructive", base, defaults: defaults, own: own) {
            if case .bool(let b) = node {
                destructive = b
                if b && effect == .readOnly { report(file, path, "tool \"\(name)\" is read-only, so it cannot be destructive") }
            } else {
                report(file, path, "destructive must be true or false, not a \(node.typeName)")
            }
        }
        let approval = lookup("approve", base, defaults: defaults, own: own)
        let approve = flag(file, approval?.1 ?? base + ["approve"], approval?.0) ?? false
        let tracing = lookup("trace", base, defaults: defaults, own: own)
        let trace = flag(file, tracing?.1 ?? base + ["trace"], tracing?.0)
        var inputSchema: PolicyValue?
        if let (node, path) = lookup("input-schema", base, defaults: defaults, own: own) {
            if case .table(let members) = node, members["type"].map({ if case .string("object") = $0 { true } else { false } }) == true {
                inputSchema = Self.value(node)
            } else {
                report(file, path, "input-schema must be a table holding a JSON Schema of type \"object\"")
            }
        }

        guard diagnostics.count == errorsBefore else { return nil }
        return ToolPolicy(name: name, file: file.path, description: description, command: command, effect: effect,
                          syscalls: syscalls, network: network, read: read.map(\.0), write: write.map(\.0),
                          environment: environment, timeoutMilliseconds: timeout, limits: limits, reconcile: reconcile,
                          arguments: arguments, destructive: destructive, inputSchema: inputSchema, approve: approve, trace: trace)
    }

    /// A `true`/`false` key (`approve`, `trace`): nil when absent, reported when of another type.
    mutating func flag(_ file: ParsedFile, _ path: [String], _ node: Node?) -> Bool? {
        guard let node else { return nil }
        guard case .bool(let b) = node else {
            report(file, path, "\(path.last ?? "") must be true or false, not a \(node.typeName)")
            return nil
        }
        return b
    }

    static func value(_ node: Node) -> PolicyValue {
        switch node {
        case .string(let s), .dateTime(let s): .string(s)
        case .integer(let i): .integer(i)
        case .double(let d): .double(d)
        case .bool(let b): .bool(b)
        case .array(let items): .array(items.map(value))
        case .table(let members): .table(members.mapValues(value))
        }
    }

    /// - Parameter optional: a proxied server's program, which may be installed later: its
    ///   absence is a note (`ward mcp proxy` refuses to start it), not an error.
    mutating func validateCommand(_ file: ParsedFile, _ path: [String], _ argv: [String], optional: Bool = false) {
        for element in argv {
            if let bad = Template.malformedBrace(in: element) {
                report(file, element: element, in: path, "malformed placeholder \"\(bad)\" (placeholders are {name})")
            }
        }
        guard let program = argv.first else { return }
        if !Template.placeholders(in: program).isEmpty {
            report(file, element: program, in: path, "the program (first element) must be fixed, not a placeholder"); return
        }
        var missing: String?
        if program.hasPrefix("/") {
            if access(program, X_OK) != 0 { missing = "command \(program) does not exist or is not executable" }
        } else if program.contains("/") {
            report(file, element: program, in: path, "command \(program) must be an absolute path or a bare name found in PATH")
        } else if Executable.resolve(program) == nil {
            missing = "command \"\(program)\" not found in \(Executable.searchPath)"
        }
        guard let missing else { return }
        if optional {
            let pos = file.map.position(ofString: program, in: path)
            notes.append(PolicyDiagnostic(file: file.path, line: pos.line, column: pos.column,
                                          message: "\(missing): server \(path[1]) cannot be proxied until it is installed"))
        } else {
            report(file, element: program, in: path, missing)
        }
    }

    mutating func validatePath(_ file: ParsedFile, _ path: [String], _ entry: String) {
        let optional = entry.hasPrefix("?")
        let body = optional ? String(entry.dropFirst()) : entry
        for p in Template.placeholders(in: body) where p != Template.workspace {
            report(file, element: entry, in: path, "paths may use only {workspace}, not {\(p)}"); return
        }
        if body.hasPrefix("{\(Template.workspace)}") {
            let rest = body.dropFirst(Template.workspace.count + 2)
            if !rest.isEmpty && !rest.hasPrefix("/") { report(file, element: entry, in: path, "\(body): expected {workspace} or {workspace}/sub/path") }
            return
        }
        guard body.hasPrefix("/") else {
            report(file, element: entry, in: path, "relative path \"\(body)\" (read and write roots must be absolute or start with {workspace})"); return
        }
        if !optional && access(body, F_OK) != 0 {
            report(file, element: entry, in: path, "path \(body) does not exist (prefix it with ? if it is optional)")
        }
    }

    /// A numeric key's value in its unit (bytes, milliseconds, a count), or nil after
    /// reporting why not: malformed, zero or negative, a fraction where a whole number is
    /// meant, or beyond `bound.maximum`. Every step is checked arithmetic: a policy can
    /// hold any 64-bit integer or any string, and none of them may trap.
    mutating func quantity(_ file: ParsedFile, _ path: [String], _ node: Node, _ bound: Bound) -> UInt64? {
        let key = path.last!
        var value: UInt64
        switch (bound.kind, node) {
        case (_, .integer(let n)) where n <= 0:
            report(file, path, "\(key) must be at least \(bound.minimumText), not \(n)"); return nil
        case (.count, .integer(let n)):
            value = UInt64(n)
        case (.size, .integer(let n)):
            value = UInt64(n)
        case (.duration, .integer(let n)), (.seconds, .integer(let n)):  // whole seconds
            let (ms, overflow) = UInt64(n).multipliedReportingOverflow(by: 1000)
            value = overflow ? .max : ms
        case (.size, .string(let s)):
            guard let bytes = Units.size(s) else {
                report(file, path, "bad size \(describe(node)) for \(key) (expected bytes or a size such as \"512M\", \"1G\")"); return nil
            }
            value = bytes
        case (.duration, .string(let s)), (.seconds, .string(let s)):
            guard let ms = Units.milliseconds(s) else {
                report(file, path, "bad \(key == "timeout" ? "timeout" : "\(key) limit") \(describe(node)) (expected a duration such as \"30s\", \"500ms\", \"2m\")"); return nil
            }
            value = ms
        case (.count, .double(let d)) where d.isFinite && d > 0 && d != d.rounded(.down):
            report(file, path, "\(key) must be a whole number, not \(describe(node))"); return nil
        case (.count, _):
            report(file, path, "\(key) must be a positive integer, not \(describe(node))"); return nil
        case (_, .double):
            let (unit, example) = bound.kind == .size ? ("bytes", "1.5G") : ("seconds", "1.5s")
            report(file, path, "bad \(key) \(describe(node)): a float is not taken; write whole \(unit) or a string with a unit, such as \"\(example)\""); return nil
        default:
            report(file, path, "bad \(key) \(describe(node)) (expected \(bound.kind == .size ? "bytes or a size such as \"512M\"" : "a duration such as \"30s\""))"); return nil
        }
        guard value >= bound.minimum else {
            report(file, path, "\(key) must be at least \(bound.minimumText), not \(describe(node))"); return nil
        }
        guard value <= bound.maximum else {
            report(file, path, "\(key) \(describe(node)) is too large (at most \(bound.maximumText))"); return nil
        }
        if bound.kind == .seconds, value % 1000 != 0 {  // RLIMIT_CPU counts whole seconds
            report(file, path, "\(key) must be whole seconds, not \(describe(node))"); return nil
        }
        return value
    }

    func describe(_ node: Node) -> String {
        switch node {
        case .string(let s): "\"\(s)\""
        case .integer(let n): "\(n)"
        case .double(let d): "\(d)"
        default: "(a \(node.typeName))"
        }
    }
}

/// Finding programs named by a bare name.
public enum Executable {
    /// The search path for bare command names: the same for every tool, so a policy means
    /// the same thing whatever ward's own PATH is.
    public static let searchPath = "/usr/local/bin:/usr/bin:/bin"

    /// The absolute path of an executable program, or nil.
    public static func resolve(_ program: String) -> String? {
        if program.hasPrefix("/") { return access(program, X_OK) == 0 ? program : nil }
        guard !program.contains("/") else { return nil }
        for dir in searchPath.split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}

/// The range of one numeric policy key, in its unit (bytes, milliseconds, a count). The
/// maxima are where a larger value stops meaning anything more, or stops fitting what
/// enforces it; the README's *Policies* lists them for policy writers.
struct Bound: Sendable {
    enum Kind: Sendable { case size, duration, seconds, count }
    let kind: Kind
    let minimum: UInt64
    let maximum: UInt64
    let minimumText: String
    let maximumText: String

    /// A week: longer than any agent waits on a tool call, and far inside what the
    /// sandbox's nanosecond deadline (UInt64) and poll's millisecond timeout take.
    static let timeout = Bound(kind: .duration, minimum: 1, maximum: 7 * 24 * 3_600_000,
                               minimumText: "1ms", maximumText: "7 days, \"168h\"")

    static let limits: [String: Bound] = [
        // 1 PiB: more memory than any machine ward runs on, well inside memory.max and RLIMIT_AS.
        "memory": Bound(kind: .size, minimum: 1, maximum: 1 << 50, minimumText: "1 byte", maximumText: "1 PiB, \"1024T\""),
        // 1 PiB: past the largest file of ext4 (16 TiB) and far inside off_t, which RLIMIT_FSIZE is compared with.
        "file-size": Bound(kind: .size, minimum: 1, maximum: 1 << 50, minimumText: "1 byte", maximumText: "1 PiB, \"1024T\""),
        // ward keeps stdout and stderr in memory, stores each as one SQLite blob (at most
        // 10^9 bytes) and sends them JSON-escaped (up to 6 bytes a byte): 128 MiB fits all three.
        "output": Bound(kind: .size, minimum: 1, maximum: 128 << 20, minimumText: "1 byte", maximumText: "128 MiB, \"128M\""),
        // RLIMIT_CPU, whole seconds; a week as for the timeout.
        "cpu": Bound(kind: .seconds, minimum: 1000, maximum: 7 * 24 * 3_600_000, minimumText: "1s", maximumText: "7 days, \"168h\""),
        // pids.max refuses more than PID_MAX_LIMIT (2^22), the most pids Linux ever has.
        "processes": Bound(kind: .count, minimum: 1, maximum: 1 << 22, minimumText: "1", maximumText: "4194304, Linux's PID_MAX_LIMIT"),
        // RLIMIT_NOFILE above fs.nr_open (1048576 unless raised) fails setrlimit.
        "open-files": Bound(kind: .count, minimum: 1, maximum: 1 << 20, minimumText: "1", maximumText: "1048576, Linux's default fs.nr_open"),
    ]
}
