import Testing
import WardPolicy

/// `[servers.NAME]`: a proxied MCP server's sandbox, with the same keys and checks as a
/// tool's, and what ward holds each of its tools to (never the server's own annotations).
@Suite("Policies: MCP servers for ward mcp proxy")
struct ServerPolicyTests {
    @Test func aServerTakesAToolsSandboxKeysAndItsDefaults() throws {
        let dir = try policyDirectory(["servers.toml": base + """
            [servers.git]
            command = ["/usr/bin/python3", "-m", "mcp_server_git"]
            write = ["{workspace}"]
            network = "none"
            env = ["HOME={workspace}"]
            timeout = "20s"
            limits = { memory = "512M" }

            [servers.git.tools.git_status]
            effect = "read-only"

            [servers.git.tools.git_add]
            effect = "idempotent"
            timeout = "5s"

            [servers.git.tools.git_commit]
            """])
        let set = try PolicyLoader.load(directory: dir)
        let git = try set.server("git")
        #expect(git.sandbox.command == ["/usr/bin/python3", "-m", "mcp_server_git"])
        #expect(git.sandbox.read == ["/usr"] && git.sandbox.write == ["{workspace}"])  // [defaults] merged in
        #expect(git.sandbox.syscalls.contains("openat") && git.sandbox.network == .none)
        #expect(git.sandbox.limits.memory == 512 << 20 && git.sandbox.timeoutMilliseconds == 20_000)
        #expect(git.tool("git_status") == ServerToolPolicy(name: "git_status", effect: .readOnly, destructive: false, timeoutMilliseconds: 20_000))
        #expect(git.tool("git_add") == ServerToolPolicy(name: "git_add", effect: .idempotent, destructive: false, timeoutMilliseconds: 5_000))
        #expect(git.tool("git_commit") == ServerToolPolicy(name: "git_commit", effect: .nonIdempotent, destructive: true, timeoutMilliseconds: 20_000))
        // A tool the policy does not name: non-idempotent and destructive, whatever the server says.
        #expect(git.tool("git_reset") == ServerToolPolicy(name: "git_reset", effect: .nonIdempotent, destructive: true, timeoutMilliseconds: 20_000))
        #expect(set.tools.isEmpty)
        #expect(throws: PolicyError.self) { try set.server("fetch") }
    }

    @Test func whatOnlyToolsHaveInDefaultsIsNotAServers() throws {
        // A read-only [defaults] effect would take the server's write roots away.
        let dir = try policyDirectory(["s.toml": base + """
            effect = "read-only"
            write = ["{workspace}"]

            [servers.time]
            command = ["/bin/true"]
            """])
        let time = try PolicyLoader.load(directory: dir).server("time")
        #expect(time.sandbox.write == ["{workspace}"])
    }

    /// `approve`: a server's gates each of its tools, unless a tool's own table says otherwise.
    @Test func approvalGatesAServersToolsUnlessATableSaysOtherwise() throws {
        let dir = try policyDirectory(["s.toml": base + """
            [servers.mail]
            command = ["/bin/true"]
            approve = true

            [servers.mail.tools.list_drafts]
            effect = "read-only"
            approve = false

            [servers.mail.tools.send]

            [servers.time]
            command = ["/bin/true"]

            [servers.time.tools.set_alarm]
            approve = true
            """])
        let set = try PolicyLoader.load(directory: dir)
        let mail = try set.server("mail"), time = try set.server("time")
        #expect(!mail.tool("list_drafts").approve && mail.tool("send").approve && mail.tool("unnamed").approve)
        #expect(time.tool("set_alarm").approve && !time.tool("now").approve)
    }

    @Test func approvalIsTrueOrFalseOnATool() throws {
        let dir = try policyDirectory(["t.toml": base + """
            [tools.send]
            command = ["/bin/true"]
            approve = true

            [tools.look]
            command = ["/bin/true"]
            """])
        let set = try PolicyLoader.load(directory: dir)
        #expect(try set.tool("send").approve && !set.tool("look").approve)
        let found = try diagnostics(["t.toml": base + """
            [tools.send]
            command = ["/bin/true"]
            approve = "yes"
            """])
        #expect(found.map { "\($0.line) \($0.message)" } == ["6 approve must be true or false, not a string"])
    }

    /// `trace`: on by default for a non-idempotent tool only; true or false; not a server's
    /// (a server's process serves many calls, so its effects are no one call's).
    @Test func tracingIsTrueOrFalseOnAToolAndNotAServers() throws {
        let dir = try policyDirectory(["t.toml": base + """
            [tools.send]
            command = ["/bin/true"]

            [tools.quiet]
            command = ["/bin/true"]
            trace = false

            [tools.look]
            command = ["/bin/true"]
            effect = "read-only"

            [tools.watched]
            command = ["/bin/true"]
            effect = "idempotent"
            trace = true
            """])
        let set = try PolicyLoader.load(directory: dir)
        #expect(try set.tool("send").traced && !set.tool("quiet").traced && !set.tool("look").traced && set.tool("watched").traced)
        let found = try diagnostics(["t.toml": base + """
            [tools.send]
            command = ["/bin/true"]
            trace = 1
            """])
        #expect(found.map { "\($0.line) \($0.message)" } == ["6 trace must be true or false, not a integer"], "\(found)")
        let server = try diagnostics(["s.toml": base + """
            [servers.mail]
            command = ["/bin/true"]
            trace = true
            """])
        #expect(server.count == 1 && server.first?.line == 6 && server.first?.message.contains("trace") == true, "\(server)")
    }

    @Test func mistakesAreNamedAtTheirLine() throws {
        let found = try diagnostics(["s.toml": base + """
            [servers.a]
            command = ["/bin/true"]
            effect = "read-only"
            approval = true
            network = "some"

            [servers.a.tools.x]
            effect = "sometimes"
            approval = true

            [servers.a.tools.y]
            effect = "read-only"
            destructive = true
            timeout = "-1s"

            [servers.b]
            read = ["/usr"]

            [servers."bad name"]
            command = ["/bin/true"]
            """])
        let lines = found.map { "\($0.line) \($0.message)" }
        let expected = [
            "6 effect belongs to each of a server's tools ([servers.a.tools.TOOL]), not to the server",
            "7 unknown key \"approval\" (known: approve, command, description, env, limits, network, read, syscalls, timeout, tools, write)",
            "8 network must be one of none, loopback, any",
            "11 effect must be one of read-only, idempotent, non-idempotent",
            "12 unknown key \"approval\" for a server's tool",
            "16 tool \"y\" is read-only, so it cannot be destructive",
            "17 bad timeout \"-1s\"",
            "19 server \"b\" has no command",
            "22 server name \"bad name\" may use only letters",
        ]
        for prefix in expected {
            #expect(lines.contains { $0.hasPrefix(prefix) }, "no diagnostic \(prefix)…: \(lines)")
        }
        #expect(found.count == expected.count && found.allSatisfy { $0.file.hasSuffix("/s.toml") }, "\(lines)")
    }

    @Test func aServerNotInstalledYetIsANoteAndAToolsMissingProgramAnError() throws {
        let dir = try policyDirectory(["s.toml": base + """
            [servers.later]
            command = ["/nonexistent/mcp-server", "--flag"]

            [servers.bare]
            command = ["ward-no-such-mcp-server"]
            """])
        let set = try PolicyLoader.load(directory: dir)
        #expect(set.servers.keys.sorted() == ["bare", "later"])
        let notes = set.notes.map { "\($0.line):\($0.column) \($0.message)" }
        #expect(notes.contains { $0.hasPrefix("5:12 command /nonexistent/mcp-server does not exist or is not executable: server later cannot be proxied") }, "\(notes)")
        #expect(notes.contains { $0.hasPrefix("8:12 command \"ward-no-such-mcp-server\" not found") }, "\(notes)")
        let tool = try diagnostics(["t.toml": base + """
            [tools.later]
            command = ["/nonexistent/tool"]
            """])
        #expect(tool.map(\.message) == ["command /nonexistent/tool does not exist or is not executable"])
    }
}
