import ArgumentParser
import WardCore
import WardLedger
import WardMCP
import WardPolicy
import WardSupervisor

#if canImport(Glibc)
import Glibc
#endif

struct MCPProxyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "Runs a third-party MCP server in its sandbox and serves its tools over stdio, every call through ward's ledger.",
        discussion: """
            NAME is a [servers.NAME] table of the policies: the server's command, its sandbox and what ward holds each of its \
            tools to (a tool the policy does not name is non-idempotent and destructive). `ward mcp proxy -- CMD ARG...` runs \
            CMD in a default sandbox instead (no network, writes only in the workspace), for trying a server out. The host \
            sees the server's tools with ward's annotations; each tools/call is recorded before it reaches the server and \
            answered from the ledger when repeated, and a non-idempotent call the server never answered is in doubt until \
            `ward ledger resolve` settles it.
            """
    )

    @OptionGroup var policyOptions: PolicyOptions
    @OptionGroup var ledgerOptions: LedgerOptions

    @Option(name: .customLong("run-id"), help: "The run's ID (default: derived from the workspace, as for ward mcp).")
    var runID: String?

    @Argument(help: "The server: a [servers.NAME] table of the policies.")
    var name: String?

    @Argument(parsing: .postTerminator, help: "A server command to run in a default sandbox (after --).")
    var command: [String] = []

    func validate() throws {
        if let runID, let problem = Identifier.runIDProblem(in: runID) {
            throw ValidationError("--run-id: the run ID \(problem)")
        }
        switch (name, command.isEmpty) {
        case (nil, true): throw ValidationError("name a server of the policies (ward mcp proxy NAME), or give a command after --")
        case (_?, false): throw ValidationError("give a server's NAME or a command after --, not both")
        default: break
        }
    }

    func run() throws {
        let run = try MCPCommand.run(runID, workspace: policyOptions.workspace)
        let policies = try name == nil ? MCPProxyCommand.load(policyOptions.policies, trying: command) : policyOptions.load()
        let server: ServerPolicy
        do { server = try policies.server(name ?? MCPProxyCommand.tryName(command)) } catch {
            throw CLIError.usage(error.message)
        }
        guard server.sandbox.command.first.flatMap(Executable.resolve) != nil else {
            throw CLIError(message: "server \(server.name): command \(server.sandbox.command.first ?? "") is not installed (not found or not executable)", exitCode: 1)
        }
        let proxy = MCPProxy(server: server, version: Ward.version,
                             open: MCPCommand.opener(run: run, policies: policies, policyOptions, ledgerOptions, log: MCPProxy.logOnStderr))
        proxy.serve()?.recordPendingOutcomes(within: 10)
    }

    /// The name a server given after `--` is recorded under: its program's file name.
    static func tryName(_ command: [String]) -> String {
        let base = command.first?.split(separator: "/").last.map(String.init) ?? "server"
        return String(base.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") ? $0 : "_" })
    }

    /// The policies, and a server for `command` in the default sandbox: the system's
    /// programs and libraries read-only, the workspace writable, no network, the shipped
    /// defaults' limits. A program in a virtual environment (`…/bin/NAME`) may read that
    /// environment too.
    static func load(_ directory: String, trying command: [String]) throws -> PolicySet {
        guard let program = command.first else { throw CLIError.usage("no command after --") }
        guard let found = program.contains("/") ? program : searchPath(program), let real = realpath(found, nil) else {
            throw CLIError(message: "command \(program) not found", exitCode: 1)
        }
        let target = String(cString: real)
        free(real)
        // Run as named (a virtual environment's `bin/python` is a symlink whose own path
        // is what makes it that environment's), made absolute.
        let absolute = found.hasPrefix("/") ? found : MCPCommand.real(String(found[..<(found.lastIndex(of: "/") ?? found.startIndex)])) + "/" + (found.split(separator: "/").last.map(String.init) ?? found)
        var read = ["/usr", "/bin", "/lib", "?/lib64", "?/sbin", "/etc/ld.so.cache", "/etc/passwd", "/etc/group", "?/etc/nsswitch.conf",
                    "?/etc/localtime", "?/etc/ssl", "?/etc/ca-certificates", "?/etc/python3", "?/etc/hosts", "?/etc/mime.types",
                    "/dev/zero", "/dev/urandom", "{workspace}"]
        // A Python virtual environment's program (`ENV/bin/NAME`, `ENV/pyvenv.cfg` beside it)
        // needs its environment; any other directory a program is in is not given away.
        for path in Set([absolute, target]) {
            let parts = path.split(separator: "/")
            guard parts.count >= 3, parts[parts.count - 2] == "bin" else { continue }
            let environment = "/" + parts.dropLast(2).joined(separator: "/")
            if access(environment + "/pyvenv.cfg", R_OK) == 0 && !read.contains(environment) { read.append(environment) }
        }
        func list(_ items: [String]) -> String { "[" + items.map { JSONValue.string($0).canonical }.joined(separator: ", ") + "]" }
        let name = tryName(command)
        let text = """
            [servers.\(name)]
            command = \(list([absolute] + command.dropFirst()))
            syscalls = ["@system-service"]
            network = "none"
            read = \(list(read))
            write = ["{workspace}", "/dev/null"]
            env = ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME={workspace}", "TMPDIR={workspace}/.tmp"]
            timeout = "60s"
            [servers.\(name).limits]
            memory = "1G"
            processes = 256
            open-files = 1024
            """
        do {
            var sources: [(file: String, text: String)] = []
            for file in PolicyLoader.listTOMLFiles(directory) {
                sources.append((file, try PolicyLoader.readPolicyFile(file)))
            }
            sources.append(("(ward mcp proxy -- \(program))", text))
            return try PolicyLoader.load(sources: sources, directory: directory)
        } catch let error as PolicyError {
            throw CLIError.policies(error, invalid: 2)
        } catch let error as PolicyDiagnostic {
            throw CLIError(message: "\(error)", exitCode: 2)
        }
    }

    /// `program` found in ward's PATH.
    static func searchPath(_ program: String) -> String? {
        let path = getenv("PATH").map { String(cString: $0) } ?? Executable.searchPath
        for dir in path.split(separator: ":") where access("\(dir)/\(program)", X_OK) == 0 { return "\(dir)/\(program)" }
        return nil
    }
}
