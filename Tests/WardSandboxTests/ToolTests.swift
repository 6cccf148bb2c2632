import Foundation
import Testing
import WardCore
import WardPolicy
import WardSandbox
import WardTestSupport

@Suite("Tools: the shipped policies run what agents really use")
struct ToolTests {
    static let workspace = Fixture.workspace()
    static let sandbox = try! Fixture.sandbox(workspace: workspace)

    func run(_ tool: String, _ arguments: [String: JSONValue]) throws -> ToolOutcome {
        try ToolTests.sandbox.run(tool: tool, arguments: .object(arguments))
    }

    func shell(_ command: String) throws -> ToolOutcome {
        try run("shell", ["command": .string(command)])
    }

    @Test func shellRunsCoreutilsTextToolsArchivesAndPython() throws {
        let o = try shell("""
        set -e
        mkdir -p t/a/b && echo 'hello world' > t/a/b/f.txt && cp t/a/b/f.txt t/g.txt && mv t/g.txt t/h.txt
        cat t/h.txt | tr a-z A-Z | sed 's/WORLD/ward/' | awk '{print $2}' | grep -c ward
        find t -name '*.txt' | sort | head -1 | xargs wc -c | cut -d' ' -f1
        tar czf t.tgz t && mkdir u && tar xzf t.tgz -C u && diff -r t u/t && echo tar-ok
        python3 -c 'import json, sys, hashlib, tempfile, subprocess; print(json.load(sys.stdin)["command"][:6]); print(subprocess.run(["echo", "sub"], capture_output=True, text=True).stdout.strip()); tempfile.NamedTemporaryFile()'
        date +%Y >/dev/null && sleep 0.01 && env | grep -c '^PATH=' && rm -r t u t.tgz && ls ward-hostile
        """)
        #expect(o.status == .succeeded, "\(o.err)")
        #expect(o.out == "1\n12\ntar-ok\nset -e\nsub\n1\nward-hostile\n", "\(o.out)")
    }

    @Test func shellRunsGitInTheWorkspace() throws {
        let o = try shell("""
        set -e
        rm -rf repo && git init -q repo && cd repo
        printf 'one\\n' > a.txt && git add a.txt && git commit -qm first
        printf 'two\\n' >> a.txt && git commit -qam second
        git log --format=%s | tr '\\n' ' ' && git status --porcelain && git diff HEAD~1 --stat | tail -1
        """)
        #expect(o.status == .succeeded, "\(o.err)")
        #expect(o.out.hasPrefix("second first "), "\(o.out)")
        #expect(o.out.contains("1 file changed, 1 insertion(+)"), "\(o.out)")
    }

    @Test func fileTools() throws {
        let text = "line 1\nünïcode ✓\n; rm -rf / $(echo no)\n"
        let w = try run("write_file", ["path": .string("docs/notes.txt"), "content": .string(text)])
        #expect(w.status == .succeeded, "\(w)")
        #expect(try String(contentsOfFile: ToolTests.workspace + "/docs/notes.txt", encoding: .utf8) == text)
        let r = try run("read_file", ["path": .string("docs/notes.txt")])
        #expect(r.status == .succeeded && r.out == text)
        let l = try run("list_dir", ["path": .string("docs")])
        #expect(l.status == .succeeded && l.out.contains("notes.txt"))
        // A path is one argv element, never shell syntax.
        let odd = try run("read_file", ["path": .string("docs/notes.txt; echo injected")])
        #expect(odd.status == .failed && !odd.out.contains("injected"), "\(odd)")
        // read_file cannot write, and nothing outside the roots is readable.
        #expect(try run("read_file", ["path": .string("/etc/shadow")]).status == .failed)
    }

    @Test func pythonAndGitTools() throws {
        try "import sys, json\nprint('args', sys.argv[1:], json.load(sys.stdin)['script'])\n"
            .write(toFile: ToolTests.workspace + "/job.py", atomically: true, encoding: .utf8)
        let p = try run("python", ["script": .string("job.py")])
        #expect(p.status == .succeeded && p.out == "args [] job.py\n", "\(p.out)\(p.err)")
        _ = try shell("rm -rf g && mkdir g && echo x > g/x")
        for args in [["init", "-q", "g"], ["-C", "g", "add", "x"], ["-C", "g", "commit", "-qm", "msg with spaces; and $(symbols)"]] {
            let g = try run("git", ["args": .array(args.map { .string($0) })])
            #expect(g.status == .succeeded, "\(args): \(g.err)")
        }
        let log = try run("git", ["args": .array(["-C", "g", "log", "--format=%s|%an"].map { .string($0) })])
        #expect(log.out == "msg with spaces; and $(symbols)|ward agent\n", "\(log.out)\(log.err)")
    }

    /// The test policies with http_get allowed 127.0.0.0/8 as a policy writer says it: an
    /// env entry WARD_HTTP_ALLOW in the tool's table. ::1 and the rest stay refused. It also
    /// trusts only the test's own certificate authority (in the workspace), for HTTPS.
    static let loopbackHTTP: Sandbox = {
        let dir = Fixture.temporaryDirectory("policies-http")
        try! FileManager.default.copyItem(atPath: Fixture.shippedPolicies + "/syscall-sets.toml", toPath: dir + "/syscall-sets.toml")
        let tools = try! String(contentsOfFile: Fixture.shippedPolicies + "/tools.toml", encoding: .utf8)
        let allowing = tools.replacingOccurrences(of: "\n[tools.http_get]\n", with: """

        [tools.http_get]
        env = ["WARD_HTTP_ALLOW=127.0.0.0/8", "SSL_CERT_FILE={workspace}/tls/cert.pem"]

        """)
        precondition(allowing != tools, "tools.toml has no [tools.http_get]")
        try! allowing.write(toFile: dir + "/tools.toml", atomically: true, encoding: .utf8)
        return try! Sandbox(policies: PolicyLoader.load(directory: dir), workspace: workspace)
    }()

    func httpGet(_ url: String, allowingLoopback: Bool = false) throws -> ToolOutcome {
        try (allowingLoopback ? ToolTests.loopbackHTTP : ToolTests.sandbox).run(tool: "http_get", arguments: .object(["url": .string(url)]))
    }

    @Test func httpGetReachesTheNetworkShellDoesNot() throws {
        let server = try HTTPServer(body: "hello from loopback")
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.port)/"
        let got = try httpGet(url, allowingLoopback: true)
        #expect(got.status == .succeeded && got.out == "hello from loopback", "\(got.out)\(got.err)")
        let blocked = try shell("python3 -c 'import urllib.request; urllib.request.urlopen(\"\(url)\", timeout=5)'")
        #expect(blocked.status == .failed && blocked.err.contains("Operation not permitted"), "\(blocked.err)")
    }

    /// The shipped http_get, unchanged: only http(s) to public addresses. Each URL names a
    /// live server's port, so a refusal that failed would reach it (and be counted).
    @Test("http_get refuses other schemes and non-public addresses by default", arguments: [
        ("file:///etc/passwd", "only http and https URLs are fetched, not file:"),
        ("ftp://127.0.0.1:PORT/", "only http and https URLs are fetched, not ftp:"),
        ("http://127.0.0.1:PORT/", "127.0.0.1 is a loopback address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://127.1:PORT/", "127.0.0.1 is a loopback address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://2130706433:PORT/", "127.0.0.1 is a loopback address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://localhost:PORT/", "127.0.0.1 is a loopback address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://[::1]:PORT/", "::1 is a loopback address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://[::ffff:127.0.0.1]:PORT/", "127.0.0.1 is a loopback address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://[::ffff:7f00:1]:PORT/", "127.0.0.1 is a loopback address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254 is a cloud metadata address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://169.254.1.1/", "169.254.1.1 is a link-local address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://[fe80::1]/", "fe80::1 is a link-local address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://10.1.2.3/", "10.1.2.3 is a private address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://172.16.0.1/", "172.16.0.1 is a private address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("https://192.168.1.1/", "192.168.1.1 is a private address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://[fc00::1]/", "fc00::1 is a private address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://100.64.0.1/", "100.64.0.1 is a carrier-grade NAT address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://0.0.0.0:PORT/", "0.0.0.0 is the unspecified address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://[::]:PORT/", ":: is the unspecified address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://224.0.0.1/", "224.0.0.1 is a multicast address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://240.0.0.1/", "240.0.0.1 is a reserved address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://[64:ff9b::7f00:1]/", "64:ff9b::7f00:1 is a NAT64 address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://[2002:7f00:1::]/", "2002:7f00:1:: carries 127.0.0.1 is a loopback address (a policy can allow it with WARD_HTTP_ALLOW)"),
        ("http://[::7f00:1]/", "::7f00:1 is an IPv4-compatible address (a policy can allow it with WARD_HTTP_ALLOW)"),
    ])
    func httpGetRefusesByDefault(url: String, reason: String) throws {
        let server = try HTTPServer(body: "should not be reached")
        defer { server.stop() }
        let url = url.replacingOccurrences(of: "PORT", with: "\(server.port)")
        let got = try httpGet(url)
        #expect(got.status == .failed && got.exitCode == 1, "\(got.status) \(got.out)")
        #expect(got.err == "http_get: refused \(url): \(reason)\n")
        #expect(server.requests == 0)
    }

    /// With 127.0.0.0/8 allowed, redirects among allowed servers are followed, and every
    /// hop is checked again: a redirect from the allowed server elsewhere is refused.
    @Test func httpGetChecksEveryRedirect() throws {
        let final = try HTTPServer(body: "after two redirects")
        defer { final.stop() }
        let middle = try HTTPServer(redirect: "http://localhost:\(final.port)/final")
        defer { middle.stop() }
        let first = try HTTPServer(redirect: "/next", then: "http://127.0.0.1:\(middle.port)/")
        defer { first.stop() }
        let got = try httpGet("http://127.0.0.1:\(first.port)/", allowingLoopback: true)
        #expect(got.status == .succeeded && got.out == "after two redirects", "\(got.err)")
        #expect(first.requests == 2 && middle.requests == 1 && final.requests == 1)

        for (target, reason) in [
            ("http://[::1]:\(final.port)/", "::1 is a loopback address"),
            ("http://[::ffff:7f00:1]:\(final.port)/", nil),  // the same 127.0.0.1: allowed
            ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
            ("http://10.0.0.1/", "10.0.0.1 is a private address"),
            ("file:///etc/passwd", nil),
        ] as [(String, String?)] {
            let bouncer = try HTTPServer(redirect: target)
            defer { bouncer.stop() }
            let got = try httpGet("http://127.0.0.1:\(bouncer.port)/", allowingLoopback: true)
            #expect(bouncer.requests == 1)
            if target.hasPrefix("file:") {
                #expect(got.status == .failed && got.err == "http_get: refused \(target): only http and https URLs are fetched, not file:\n")
            } else if let reason {
                #expect(got.status == .failed && got.err == "http_get: refused \(target): \(reason) (a policy can allow it with WARD_HTTP_ALLOW)\n")
            } else {
                #expect(got.status == .succeeded && got.out == "after two redirects", "\(got.err)")
            }
        }
    }

    /// HTTPS connects to the checked address yet verifies the certificate against the host
    /// name: a certificate for localhost is taken at https://localhost and refused at
    /// https://127.0.0.1, the same server.
    @Test func httpGetVerifiesCertificatesAgainstTheHostName() throws {
        let dir = ToolTests.workspace + "/tls"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let openssl = try BuildProducts.run("/usr/bin/openssl", [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost", "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem",
        ])
        try #require(openssl.status == 0, "\(openssl.stderr)")
        // posix_spawn, SIGKILL and waitpid, not Foundation's Process: in this suite the
        // child outlived terminate()'s SIGTERM and waitUntilExit hung.
        let script = """
        import http.server, ssl, sys
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.send_header("Content-Length", "14"); self.end_headers()
                self.wfile.write(b"hello over TLS")
            def log_message(self, *args): pass
        httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); context.load_cert_chain(sys.argv[1], sys.argv[2])
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        with open(sys.argv[3] + ".new", "w") as f: f.write(str(httpd.server_address[1]))
        import os; os.rename(sys.argv[3] + ".new", sys.argv[3])
        httpd.serve_forever()
        """
        let portFile = dir + "/port"
        let argv = ["/usr/bin/python3", "-c", script, dir + "/cert.pem", dir + "/key.pem", portFile]
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { for a in cArgs { free(a) } }
        var pid: pid_t = 0
        try #require(posix_spawn(&pid, argv[0], nil, nil, &cArgs, environ) == 0)
        defer {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        var port = ""
        for _ in 0..<200 where port.isEmpty {
            port = (try? String(contentsOfFile: portFile, encoding: .utf8)) ?? ""
            if port.isEmpty { usleep(50_000) }
        }
        try #require(!port.isEmpty, "the TLS server did not start")

        let trusted = try httpGet("https://localhost:\(port)/", allowingLoopback: true)
        #expect(trusted.status == .succeeded && trusted.out == "hello over TLS", "\(trusted.err)")
        let mismatch = try httpGet("https://127.0.0.1:\(port)/", allowingLoopback: true)
        #expect(mismatch.status == .failed && mismatch.err.contains("certificate verify failed: IP address mismatch"), "\(mismatch.err)")
    }

    @Test func httpGetRedirectsAreBounded() throws {
        let loop = try HTTPServer(redirect: "/again")
        defer { loop.stop() }
        let url = "http://127.0.0.1:\(loop.port)/"
        let got = try httpGet(url, allowingLoopback: true)
        #expect(got.status == .failed && got.err == "http_get: \(url): more than 10 redirects\n")
        #expect(loop.requests == 11)
    }

    @Test func loopbackNetworkIsPrivate() throws {
        let server = try HTTPServer(body: "host")
        defer { server.stop() }
        // Inside its own network namespace the tool can serve and connect to itself…
        let own = try run("shell-loopback", ["command": .string("""
        python3 -c '
        import socket
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
        c = socket.create_connection(s.getsockname()); a, _ = s.accept(); c.sendall(b"ping"); print(a.recv(4).decode())
        try:
            socket.create_connection(("127.0.0.1", \(server.port)), timeout=3); print("reached host")
        except OSError as e:
            print("host unreachable", e.errno)
        '
        """)])
        #expect(own.status == .succeeded, "\(own.err)")
        // …but the host's loopback listener is not there.
        #expect(own.out == "ping\nhost unreachable 111\n", "\(own.out)")
    }

    @Test func argumentsArriveOnStdinAndAsSingleArgvElements() throws {
        // shell-loopback declares no `arguments`, so any argument is passed on.
        let o = try run("shell-loopback", ["command": .string("printf '%s|' \"$0\"; cat"), "extra": .number(1.0), "nested": .object(["k": .bool(true)])])
        #expect(o.out == #"/bin/sh|{"command":"printf '%s|' \"$0\"; cat","extra":1,"nested":{"k":true}}"#, "\(o.out)")
    }

    @Test func aToolThatDeclaresItsArgumentsGetsNoOther() throws {
        // shell declares arguments = ["command"]: "extra" is refused before anything runs.
        let arguments = JSONValue.object(["command": .string("echo ran"), "extra": .number(1.0)])
        for attempt in [{ _ = try ToolTests.sandbox.check(tool: "shell", arguments: arguments) },
                        { _ = try ToolTests.sandbox.run(tool: "shell", arguments: arguments) }] as [() throws -> Void] {
            let error = try #require(throws: SandboxError.self, performing: attempt)
            #expect(error.code == .invalidArguments)
            #expect(error.description.contains("\"extra\"") && error.description.contains(#"its arguments: "command""#), "\(error)")
        }
    }

    @Test func workspaceTmpAndHomeAreTheWorkspace() throws {
        let o = try shell("echo $HOME $TMPDIR; mktemp | grep -c .tmp/")
        #expect(o.out == "\(ToolTests.workspace) \(ToolTests.workspace)/.tmp\n1\n", "\(o.out)")
    }
}

@Suite("Bad input: one clear error, no child started")
struct BadInputTests {
    static let workspace = Fixture.workspace()
    static let sandbox = try! Fixture.sandbox(workspace: workspace)

    @Test func unknownTool() {
        #expect { try BadInputTests.sandbox.run(tool: "nope", arguments: .object([:])) } throws: { error in
            (error as? SandboxError)?.code == .unknownTool && "\(error)".contains("shell")
        }
    }

    @Test func missingPlaceholderArgument() {
        #expect { try BadInputTests.sandbox.run(tool: "shell", arguments: .object(["cmd": .string("x")])) } throws: { error in
            (error as? SandboxError)?.code == .invalidArguments && "\(error)".contains("\"command\"")
        }
    }

    @Test("arguments that are not a JSON object", arguments: [JSONValue.array([]), .string("ls"), .null, .number(3)])
    func notAnObject(arguments: JSONValue) {
        #expect { try BadInputTests.sandbox.run(tool: "shell", arguments: arguments) } throws: { error in
            (error as? SandboxError)?.code == .invalidArguments
        }
    }

    @Test func nonScalarPlaceholderAndNulByte() {
        #expect { try BadInputTests.sandbox.run(tool: "shell", arguments: .object(["command": .array([.string("ls")])])) } throws: { error in
            (error as? SandboxError)?.code == .invalidArguments && "\(error)".contains("array")
        }
        #expect { try BadInputTests.sandbox.run(tool: "shell", arguments: .object(["command": .string("ls\u{0}rm")])) } throws: { error in
            (error as? SandboxError)?.code == .invalidArguments && "\(error)".contains("NUL")
        }
    }

    @Test func cliExitCodesAndOneLineErrors() throws {
        let ws = BadInputTests.workspace
        let policies = Fixture.testPolicies
        let cases: [([String], Int32, String)] = [
            (["sandbox", "--policies", policies, "--workspace", ws, "nope"], 2, "unknown tool \"nope\""),
            (["sandbox", "--policies", policies, "--workspace", ws, "shell"], 2, "missing argument \"command\""),
            (["sandbox", "--policies", policies, "--workspace", ws, "shell", "--args-json", "[1]"], 2, "must be a JSON object"),
            (["sandbox", "--policies", policies, "--workspace", ws, "shell", "--args-json", "{bad"], 2, "not valid JSON"),
            (["sandbox", "--policies", policies, "--workspace", ws, "shell", "--arg", "novalue"], 2, "expected name=value"),
            (["sandbox", "--policies", "/nonexistent", "--workspace", ws, "shell"], 2, "policy directory /nonexistent does not exist"),
            (["sandbox", "shell", "--bogus-flag"], 2, "bogus-flag"),
            // Nothing to check is a usage error (2); 1 is for policies found wrong.
            (["policy", "check", "/nonexistent"], 2, "does not exist"),
            (["policy", "explain", "--policies", policies, "nope"], 2, "unknown tool"),
        ]
        for (args, code, message) in cases {
            let r = try Fixture.cli(args)
            #expect(r.status == code, "\(args): exit \(r.status), \(r.stderr)")
            #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
            #expect(r.stdout.isEmpty, "\(args): \(r.stdout)")
        }
    }

    @Test func invalidPolicyDirectoryNamesFileLineAndColumn() throws {
        let dir = Fixture.temporaryDirectory("badpolicy")
        try "[tools.x]\ncommand = [\"/bin/true\"]\nsyscalls = [\"@nope\"]\nread = [\"relative\"]\n".write(toFile: dir + "/x.toml", atomically: true, encoding: .utf8)
        let check = try Fixture.cli(["policy", "check", dir])
        #expect(check.status == 1)
        #expect(check.stderr.contains("\(dir)/x.toml:3:13: unknown syscall set \"@nope\""), "\(check.stderr)")
        #expect(check.stderr.contains("\(dir)/x.toml:4:9: relative path \"relative\""), "\(check.stderr)")
        let run = try Fixture.cli(["sandbox", "--policies", dir, "x"])
        #expect(run.status == 2 && run.stderr.contains("x.toml:3:13"), "\(run.stderr)")
    }

    @Test func missingExecutableIsRefusedBeforeAnyChild() throws {
        let dir = Fixture.temporaryDirectory("missingexe")
        try FileManager.default.copyItem(atPath: Fixture.shippedPolicies + "/syscall-sets.toml", toPath: dir + "/syscall-sets.toml")
        try "[tools.x]\ncommand = [\"/usr/bin/true\"]\nsyscalls = [\"@system-service\"]\nread = [\"/usr\"]\n".write(toFile: dir + "/x.toml", atomically: true, encoding: .utf8)
        let policies = try PolicyLoader.load(directory: dir)
        let ws = Fixture.workspace()
        let sandbox = try Sandbox(policies: policies, workspace: ws)
        // The program vanished after the policy was loaded: refused, with the step named.
        var patched = policies
        patched.tools["x"]!.command = ["/nonexistent/program"]
        let sandbox2 = try Sandbox(policies: patched, workspace: ws)
        #expect { try sandbox2.run(tool: "x", arguments: .object([:])) } throws: { error in
            (error as? SandboxError)?.code == .policyDenied && "\(error)".contains("/nonexistent/program")
        }
        #expect(try sandbox.run(tool: "x", arguments: .object([:])).status == .succeeded)
    }

    @Test("a step that fails in the child comes back as {step, errno}", arguments: [true, false])
    func childFailureNamesTheStep(zygote: Bool) throws {
        // /bin/true exists, but the policy's read roots do not cover it: Landlock refuses the exec.
        let dir = Fixture.temporaryDirectory("childfail")
        try FileManager.default.copyItem(atPath: Fixture.shippedPolicies + "/syscall-sets.toml", toPath: dir + "/syscall-sets.toml")
        try "[tools.x]\ncommand = [\"/bin/true\"]\nsyscalls = [\"@system-service\"]\nread = [\"/etc/passwd\"]\n"
            .write(toFile: dir + "/x.toml", atomically: true, encoding: .utf8)
        let sandbox = try Sandbox(policies: try PolicyLoader.load(directory: dir), workspace: Fixture.workspace(), useZygotes: zygote)
        #expect { try sandbox.run(tool: "x", arguments: .object([:])) } throws: { error in
            "\(error)" == "execve failed: EACCES (tool x, /bin/true)"
        }
    }

    @Test func jsonOutputIsTheCallResultShape() throws {
        let r = try Fixture.cli(["sandbox", "--json", "--policies", Fixture.testPolicies, "--workspace", BadInputTests.workspace,
                                 "shell", "--arg", "command=printf out; printf err >&2; exit 3"])
        #expect(r.status == 3)
        let json = try JSONValue.parse(r.stdout).objectValue!
        // A call result, and what the (non-idempotent, so traced) tool attempted to change.
        #expect(Set(json.keys) == ["callId", "tool", "status", "exitCode", "signal", "stdout", "stderr", "truncated", "durationMs", "replayed", "attempt",
                                   "trace"])
        #expect(json["trace"].flatMap(Trace.init(json:))?.effects.first?.argv?.last == "printf out; printf err >&2; exit 3")
        #expect(json["status"] == .string("failed") && json["exitCode"] == .number(3) && json["stdout"] == .string("out") && json["stderr"] == .string("err"))
    }

    @Test func explainAndDoctor() throws {
        let explain = try Fixture.cli(["policy", "explain", "--policies", Fixture.shippedPolicies, "--workspace", BadInputTests.workspace, "shell"])
        #expect(explain.status == 0)
        for needle in ["/bin/sh -c {command}", "non-idempotent", "network", "none", "\(BadInputTests.workspace)", "execve", "memory 1 GiB", "landlock"] {
            #expect(explain.stdout.contains(needle), "explain lacks \(needle):\n\(explain.stdout)")
        }
        let doctor = try Fixture.cli(["doctor"])
        #expect(doctor.status == 0)
        for needle in ["seccomp", "landlock", "user namespaces", "cgroups"] { #expect(doctor.stdout.contains(needle)) }
    }
}

/// A one-response-at-a-time HTTP server on 127.0.0.1 for http_get: it answers every
/// request with `body`, or with redirects (302) to the `redirect` locations in turn, the
/// last one repeated, and counts the requests it read.
final class HTTPServer: @unchecked Sendable {
    // @unchecked: fd and port are set once in init; the accept thread only reads them.
    let fd: Int32
    let port: UInt16
    private let thread: Thread
    private let served = Lock(0)

    var requests: Int { served.withLock { $0 } }

    convenience init(redirect locations: String...) throws {
        try self.init(body: "", redirects: locations)
    }

    convenience init(redirect first: String, then second: String) throws {
        try self.init(body: "", redirects: [first, second])
    }

    init(body: String, redirects: [String] = []) throws {
        let listener = try Listener.tcp()
        fd = listener.fd
        port = listener.port
        let fd = self.fd
        let served = self.served
        thread = Thread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }
                var buffer = [UInt8](repeating: 0, count: 4096)
                _ = read(client, &buffer, buffer.count)
                let n = served.withLock { count in count += 1; return count }
                let response = redirects.isEmpty
                    ? "HTTP/1.0 200 OK\r\nContent-Length: \(body.utf8.count)\r\nContent-Type: text/plain\r\n\r\n\(body)"
                    : "HTTP/1.0 302 Found\r\nLocation: \(redirects[min(n, redirects.count) - 1])\r\nContent-Length: 0\r\n\r\n"
                _ = response.withCString { write(client, $0, strlen($0)) }
                close(client)
            }
        }
        thread.start()
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}
