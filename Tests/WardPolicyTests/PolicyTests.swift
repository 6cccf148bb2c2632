import Testing
import WardPolicy
import WardTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The repository's policies/ directory.
let shippedPolicies = BuildProducts.repository + "/policies"

/// A temporary policy directory holding the shipped syscall sets plus `files`.
func policyDirectory(_ files: [String: String], withSets: Bool = true) throws -> String {
    let dir = makeTemporaryDirectory("ward-policy")
    var all = files
    if withSets {
        let fp = fopen(shippedPolicies + "/syscall-sets.toml", "r")!
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while case let n = fread(&buf, 1, buf.count, fp), n > 0 { bytes += buf[0..<n] }
        fclose(fp)
        all["syscall-sets.toml"] = String(decoding: bytes, as: UTF8.self)
    }
    for (name, text) in all {
        let fp = fopen(dir + "/" + name, "w")!
        fputs(text, fp)
        fclose(fp)
    }
    return dir
}

func diagnostics(_ files: [String: String]) throws -> [PolicyDiagnostic] {
    let dir = try policyDirectory(files)
    do {
        _ = try PolicyLoader.load(directory: dir)
        return []
    } catch {
        return error.diagnostics
    }
}

let base = """
[defaults]
syscalls = ["@system-service"]
read = ["/usr"]

"""

@Suite("Policies: loading, merging and file:line:column errors")
struct PolicyTests {
    @Test func shippedPoliciesLoad() throws {
        let set = try PolicyLoader.load(directory: shippedPolicies)
        for name in ["shell", "read_file", "write_file", "list_dir", "python", "git", "http_get"] {
            #expect(set.tools[name] != nil, "missing shipped tool \(name)")
        }
        let shell = try set.tool("shell")
        #expect(shell.command == ["/bin/sh", "-c", "{command}"])
        #expect(shell.effect == .nonIdempotent)
        #expect(shell.network == .none)
        #expect(shell.write.contains("{workspace}"))
        #expect(shell.placeholders == ["command"])
        #expect(shell.syscalls.contains("execve") && shell.syscalls.contains("openat"))
        #expect(!shell.syscalls.contains("ptrace") && !shell.syscalls.contains("bpf") && !shell.syscalls.contains("mount"))
        #expect(try set.tool("http_get").network == .any)
        #expect(try set.tool("read_file").effect == .readOnly)
        #expect(try set.tool("write_file").effect == .idempotent)
    }

    /// The shipped policies load on a machine where the MCP servers of mcp-servers.toml were
    /// never installed (`Scripts/setup --servers` not run): each server is then a note, and
    /// the tools of every other file are usable.
    @Test func shippedServersNeedNotBeInstalled() throws {
        let text = try String(contentsOfFile: shippedPolicies + "/mcp-servers.toml", encoding: .utf8)
        let absent = "/nonexistent/ward-mcp-servers-\(getpid())"
        let dir = try policyDirectory(["mcp-servers.toml": text.replacingOccurrences(of: "/opt/ward-mcp-servers", with: absent)])
        let set = try PolicyLoader.load(directory: dir)
        #expect(Set(set.servers.keys) == ["git", "time", "fetch"])
    }

    /// A tool allowed ptrace and the like gets a note at the entry that asked (ward keeps them
    /// to the tool's own call); a tool without them gets none, and a `!` that removes them
    /// again leaves no note.
    @Test func crossProcessSyscallsGetANote() throws {
        let text = base + """
        [tools.tracer]
        command = ["/bin/true"]
        syscalls = ["ptrace", "kcmp"]
        [tools.plain]
        command = ["/bin/true"]
        [tools.undone]
        command = ["/bin/true"]
        syscalls = ["ptrace", "!ptrace"]
        """
        let dir = try policyDirectory(["t.toml": text])
        let notes = try PolicyLoader.load(directory: dir).notes
        #expect(notes.map(\.column) == [13, 23], "one note per entry: \(notes)")
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        for (note, name) in zip(notes, ["ptrace", "kcmp"]) {
            #expect(note.file.hasSuffix("t.toml") && note.message.contains("\"tracer\" allows \(name) only towards its own call"), "\(note)")
            #expect(lines[note.line - 1] == "syscalls = [\"ptrace\", \"kcmp\"]", "\(note)")
        }
    }

    @Test func listsExtendDefaultsAndBangRemoves() throws {
        let dir = try policyDirectory(["t.toml": base + """
        [tools.a]
        command = ["/bin/true"]
        syscalls = ["!@network-io", "!openat", "ptrace"]
        read = ["/etc/passwd"]
        env = ["A=1", "B", "A=2"]
        effect = "idempotent"
        timeout = "1500ms"
        [tools.a.limits]
        memory = "64MiB"
        output = 1024
        cpu = "3s"
        """])
        let a = try PolicyLoader.load(directory: dir).tool("a")
        #expect(!a.syscalls.contains("socket") && !a.syscalls.contains("openat"))
        #expect(a.syscalls.contains("ptrace") && a.syscalls.contains("read"))
        #expect(a.read == ["/usr", "/etc/passwd"])
        #expect(a.environment == [.inherit("B"), .set("A", "2")])
        #expect(a.timeoutMilliseconds == 1500)
        #expect(a.limits.memory == 64 << 20 && a.limits.output == 1024 && a.limits.cpuSeconds == 3)
        #expect(a.effect == .idempotent)
    }

    @Test func mcpClaimsAreKept() throws {
        let set = try PolicyLoader.load(directory: try policyDirectory(["t.toml": base + """
            [tools.rm]
            command = ["/bin/rm", "{path}"]
            effect = "idempotent"
            destructive = true
            input-schema = { type = "object", properties = { path = { type = "string", minLength = 1 } }, required = ["path"] }
            [tools.ls]
            command = ["/bin/ls"]
            effect = "read-only"
            write = ["/dev/null"]
            """]))
        let rm = try #require(set.tools["rm"])
        #expect(rm.destructive == true)
        #expect(rm.inputSchema == .table(["type": .string("object"), "required": .array([.string("path")]),
                                          "properties": .table(["path": .table(["type": .string("string"), "minLength": .integer(1)])])]))
        #expect(set.tools["ls"]?.destructive == nil && set.tools["ls"]?.inputSchema == nil)
    }

    /// Lists extend the defaults, so a read-only tool could not drop a default write root:
    /// it is not given one, and a note says so.
    @Test func aReadOnlyToolGetsNoDefaultWriteRoot() throws {
        let set = try PolicyLoader.load(directory: try policyDirectory(["t.toml": """
            [defaults]
            syscalls = ["@system-service"]
            read = ["/usr"]
            write = ["/tmp", "/dev/null"]
            [tools.look]
            command = ["/bin/ls"]
            effect = "read-only"
            [tools.make]
            command = ["/bin/ls"]
            effect = "idempotent"
            """]))
        #expect(set.tools["look"]?.write == ["/dev/null"])
        #expect(set.tools["make"]?.write == ["/tmp", "/dev/null"])
        #expect(set.notes.contains { $0.message.contains("tool \"look\" is read-only, so it does not get the default write root /tmp") }, "\(set.notes)")
    }

    @Test func defaultsWhenUnset() throws {
        let dir = try policyDirectory(["t.toml": base + "[tools.a]\ncommand = [\"true\"]\n"])
        let a = try PolicyLoader.load(directory: dir).tool("a")
        #expect(a.effect == .nonIdempotent)
        #expect(a.network == .none)
        #expect(a.timeoutMilliseconds == PolicyLoader.defaultTimeoutMilliseconds)
    }

    @Test("each problem is named at its file:line:column", arguments: [
        ("[tools.a]\ncommand = [\"/bin/true\"]\ncomand = 1\n", 6, 1, "unknown key \"comand\""),
        ("[tools.a]\ncommand = [\"/bin/true\"]\nsyscalls = [\"read\", \"netwrok_io\"]\n", 6, 21, "unknown syscall \"netwrok_io\""),
        ("[tools.a]\ncommand = [\"/bin/true\"]\nsyscalls = [\n  \"@netwrok\",\n]\n", 7, 3, "unknown syscall set \"@netwrok\""),
        ("[tools.a]\ncommand = [\"/bin/true\"]\n[tools.a.limits]\nmemory = \"12Q\"\n", 7, 1, "bad size \"12Q\""),
        ("[tools.a]\ncommand = [\"/bin/true\"]\nlimits = { output = \"1M\", memory = \"lots\" }\n", 6, 27, "bad size \"lots\""),
        ("[tools.a]\ncommand = [\"/bin/true\"]\ntimeout = \"soon\"\n", 6, 1, "bad timeout \"soon\""),
        ("[tools.a]\ncommand = [\"/bin/true\"]\nwrite = [\"tmp/out\"]\n", 6, 10, "relative path \"tmp/out\""),
        ("[tools.a]\ncommand = [\"/bin/true\"]\nread = [\"/nonexistent/ward\"]\n", 6, 9, "path /nonexistent/ward does not exist"),
        ("[tools.a]\ncommand = [\"/bin/cat\", \"{path}\", \"{oops}\"]\narguments = [\"path\"]\n", 5, 34, "placeholder {oops} is not among"),
        ("[tools.a]\ncommand = [\"/bin/cat\", \"{pa th}\"]\n", 5, 24, "malformed placeholder"),
        ("[tools.a]\ncommand = [\"{prog}\"]\n", 5, 12, "the program (first element) must be fixed"),
        ("[tools.a]\ncommand = [\"/nonexistent/bin\"]\n", 5, 12, "does not exist or is not executable"),
        ("[tools.a]\ncommand = [\"no-such-program-ward\"]\n", 5, 12, "not found in"),
        ("[tools.a]\neffect = \"maybe\"\ncommand = [\"/bin/true\"]\n", 5, 1, "effect must be one of"),
        ("[tools.a]\nnetwork = \"some\"\ncommand = [\"/bin/true\"]\n", 5, 1, "network must be one of"),
        ("[tools.a]\ncommand = [\"/bin/true\"]\nenv = [\"1BAD=x\"]\n", 6, 8, "bad environment entry"),
        ("[tools.a]\ndescription = \"no command\"\n", 4, 1, "has no command"),
        ("[tools.a]\ncommand = [\"/bin/true\"]\n[tools.a.limits]\nprocesses = -3\n", 7, 1, "processes must be at least 1, not -3"),
        ("[tools.a]\ncommand = [\"/bin/true\"\n", 6, 1, "TOML syntax error: the array opened at 5:11 is not closed"),
        ("[tool.a]\ncommand = [\"/bin/true\"]\n", 4, 1, "unknown top-level key \"tool\""),
        // What MCP hosts are told must hold in the sandbox.
        ("[tools.a]\ncommand = [\"/bin/true\"]\neffect = \"read-only\"\nwrite = [\"/tmp\"]\n", 7, 10, "is read-only but may write /tmp"),
        ("[tools.a]\ncommand = [\"/bin/true\"]\neffect = \"read-only\"\ndestructive = true\n", 7, 1, "is read-only, so it cannot be destructive"),
        ("[tools.a]\ncommand = [\"/bin/true\"]\ndestructive = \"yes\"\n", 6, 1, "destructive must be true or false"),
        ("[tools.a]\ncommand = [\"/bin/true\"]\ninput-schema = { type = \"string\" }\n", 6, 1, "input-schema must be a table holding a JSON Schema of type \"object\""),
    ])
    func diagnostic(tool: String, line: Int, column: Int, message: String) throws {
        let found = try diagnostics(["t.toml": base + tool])
        let match = found.first { $0.message.contains(message) }
        #expect(match != nil, "expected \(message); got \(found)")
        if let match {
            #expect(match.file.hasSuffix("/t.toml"))
            #expect(match.line == line, "\(match)")
            #expect(match.column == column, "\(match)")
        }
    }

    /// toml++ inside TOMLKit asserts (aborting the process) on these; ward must answer with a
    /// diagnostic instead (found by Scripts/fuzz).
    @Test("a header without a name is a diagnostic, not an abort", arguments: [
        ("[\n", 1, 2), ("[ # note\n", 1, 3), ("[[\n", 1, 3), ("[=]\n", 1, 2), ("x = 1\n[\r\n", 2, 2), ("[tools.a]\n[.b]\n", 2, 2),
    ])
    func headerWithoutName(text: String, line: Int, column: Int) throws {
        let found = try diagnostics(["t.toml": text])
        #expect(found.count == 1, "\(found)")
        #expect(found.first?.line == line && found.first?.column == column, "\(found)")
        #expect(found.first?.message.contains("TOML syntax error") == true)
    }

    @Test("brackets in values and strings are not headers", arguments: [
        "[tools.a]\ncommand = [\"/bin/sh\", \"-c\", \"\"\"\n[\n\"\"\"]\n",
        "[tools.a]\ncommand = [\n  \"/bin/true\",\n]\nenv = [ # [\n  \"A=[\",\n]\n",
        "[tools.a]\ncommand = ['/bin/sh', '-c', '''\n[ ]\n[\n''']\n",
    ])
    func bracketsInValues(text: String) throws {
        #expect(try diagnostics(["t.toml": base + text]) == [])
    }

    @Test func aFaultInDefaultsIsReportedOnce() throws {
        let found = try diagnostics(["t.toml": "[defaults]\nsyscalls = [\"@nope\"]\n[tools.a]\ncommand = [\"/bin/true\"]\n[tools.b]\ncommand = [\"/bin/true\"]\n"])
        #expect(found.count == 1, "\(found)")
    }

    @Test func everyProblemOfEveryFileIsReported() throws {
        let found = try diagnostics([
            "a.toml": base + "[tools.a]\ncommand = [\"/bin/true\"]\nbogus = 1\n",
            "b.toml": base + "[tools.b]\ncommand = [\"/bin/true\"]\ntimeout = \"x\"\n",
        ])
        #expect(found.count == 2)
        #expect(Set(found.map { String($0.file.split(separator: "/").last!) }) == ["a.toml", "b.toml"])
    }

    @Test func duplicateToolAcrossFiles() throws {
        let found = try diagnostics(["a.toml": base + "[tools.x]\ncommand = [\"/bin/true\"]\n", "b.toml": base + "[tools.x]\ncommand = [\"/bin/true\"]\n"])
        #expect(found.contains { $0.message.contains("already defined") })
    }

    @Test func missingDirectoryAndUnknownTool() throws {
        #expect(throws: PolicyError.self) { try PolicyLoader.load(directory: "/nonexistent/policies") }
        let set = try PolicyLoader.load(directory: shippedPolicies)
        do {
            _ = try set.tool("nope")
            Issue.record("unknown tool accepted")
        } catch {
            #expect(error.code == .unknownTool)
            #expect(error.message.contains("shell"))
        }
    }

    @Test func templatesNeverSplitElements() throws {
        #expect(try Template.expand("{command}", values: ["command": "a b; rm -rf / $(x)"]) == "a b; rm -rf / $(x)")
        #expect(try Template.expand("--file={path}.txt", values: ["path": "p q"]) == "--file=p q.txt")
        #expect(Template.placeholders(in: "{a}-{b}{a}") == ["a", "b", "a"])
        // Literal braces for shells: {{ and }}.
        #expect(try Template.expand("echo ${{HOME}} {{ a; }} {x}", values: ["x": "1", "HOME": "no"]) == "echo ${HOME} { a; } 1")
        #expect(Template.placeholders(in: "${{HOME}}").isEmpty)
        #expect(Template.malformedBrace(in: "a } b") != nil && Template.malformedBrace(in: "{ a; }") != nil)
        do {
            _ = try Template.expand("{missing}", values: [:])
            Issue.record("missing placeholder accepted")
        } catch {
            #expect(error.code == .invalidArguments)
            #expect(error.message.contains("missing"))
        }
    }
}

@Suite("Units: sizes and durations")
struct UnitTests {
    @Test("durations", arguments: [("30s", 30_000), ("500ms", 500), ("2m", 120_000), ("1h", 3_600_000), ("10", 10_000), ("1.5s", 1500), ("0.25", 250)])
    func durations(text: String, ms: Int) throws {
        let dir = try policyDirectory(["t.toml": base + "[tools.a]\ncommand = [\"/bin/true\"]\ntimeout = \"\(text)\"\n"])
        #expect(try PolicyLoader.load(directory: dir).tool("a").timeoutMilliseconds == UInt64(ms))
    }

    @Test("sizes", arguments: [("512M", 512 << 20), ("1G", 1 << 30), ("1GiB", 1 << 30), ("64k", 64 << 10), ("1.5G", 3 << 29), ("4096", 4096), ("2MB", 2 << 20)])
    func sizes(text: String, bytes: Int) throws {
        let dir = try policyDirectory(["t.toml": base + "[tools.a]\ncommand = [\"/bin/true\"]\nlimits = { memory = \"\(text)\" }\n"])
        #expect(try PolicyLoader.load(directory: dir).tool("a").limits.memory == UInt64(bytes))
    }

    @Test("refused", arguments: ["", "1.", ".5s", "1..5s", "-1s", "1e3", "12Q", "s", "99999999999999999999G"])
    func refused(text: String) throws {
        let found = try diagnostics(["t.toml": base + "[tools.a]\ncommand = [\"/bin/true\"]\ntimeout = \"\(text)\"\nlimits = { output = \"\(text)\" }\n"])
        #expect(found.count == 2, "\(text): \(found)")
    }
}
