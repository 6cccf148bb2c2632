import Testing
import WardPolicy

/// `[tools.a]` with a command, starting at line 4 of t.toml (after `base`); `snippet` starts at line 6.
private func tool(_ snippet: String) -> String { base + "[tools.a]\ncommand = [\"/bin/true\"]\n" + snippet + "\n" }

/// A limit in its own table: the key is at line 7, column 1.
private func limit(_ entry: String) -> String { "[tools.a.limits]\n" + entry }

@Suite("Policies: numeric values are range-checked, never trapped on")
struct RangeTests {
    /// One bad value per policy file, and the one diagnostic it must give, exactly.
    static let bad: [(String, String)] = [
        // timeout: whole seconds multiplied by 1000 must not overflow
        ("timeout = 9223372036854775807", "t.toml:6:1: timeout 9223372036854775807 is too large (at most 7 days, \"168h\")"),
        ("timeout = 0x7FFF_FFFF_FFFF_FFFF", "t.toml:6:1: timeout 9223372036854775807 is too large (at most 7 days, \"168h\")"),
        ("timeout = 18446744073709552", "t.toml:6:1: timeout 18446744073709552 is too large (at most 7 days, \"168h\")"),
        ("timeout = 604801", "t.toml:6:1: timeout 604801 is too large (at most 7 days, \"168h\")"),
        ("timeout = \"168h1ms\"", "t.toml:6:1: bad timeout \"168h1ms\" (expected a duration such as \"30s\", \"500ms\", \"2m\")"),
        ("timeout = \"169h\"", "t.toml:6:1: timeout \"169h\" is too large (at most 7 days, \"168h\")"),
        ("timeout = \"99999999999999999999h\"", "t.toml:6:1: timeout \"99999999999999999999h\" is too large (at most 7 days, \"168h\")"),
        ("timeout = \"5124095576030431.9h\"", "t.toml:6:1: timeout \"5124095576030431.9h\" is too large (at most 7 days, \"168h\")"),
        ("timeout = 0", "t.toml:6:1: timeout must be at least 1ms, not 0"),
        ("timeout = -5", "t.toml:6:1: timeout must be at least 1ms, not -5"),
        ("timeout = -9223372036854775808", "t.toml:6:1: timeout must be at least 1ms, not -9223372036854775808"),
        ("timeout = \"0.0001s\"", "t.toml:6:1: timeout must be at least 1ms, not \"0.0001s\""),
        ("timeout = \"-1s\"", "t.toml:6:1: bad timeout \"-1s\" (expected a duration such as \"30s\", \"500ms\", \"2m\")"),
        ("timeout = 1.5", "t.toml:6:1: bad timeout 1.5: a float is not taken; write whole seconds or a string with a unit, such as \"1.5s\""),
        ("timeout = inf", "t.toml:6:1: bad timeout inf: a float is not taken; write whole seconds or a string with a unit, such as \"1.5s\""),
        ("timeout = nan", "t.toml:6:1: bad timeout nan: a float is not taken; write whole seconds or a string with a unit, such as \"1.5s\""),
        ("timeout = true", "t.toml:6:1: bad timeout (a boolean) (expected a duration such as \"30s\")"),
        // TOML integers past 64 bits, in every base
        ("timeout = 99999999999999999999", "t.toml:6:11: TOML syntax error: integer 99999999999999999999 does not fit in 64 bits (TOML integers are -9223372036854775808 to 9223372036854775807)"),
        ("timeout = 0xFFFF_FFFF_FFFF_FFFF", "t.toml:6:11: TOML syntax error: integer 0xFFFF_FFFF_FFFF_FFFF does not fit in 64 bits (TOML integers are -9223372036854775808 to 9223372036854775807)"),
        ("timeout = -9223372036854775809", "t.toml:6:11: TOML syntax error: integer -9223372036854775809 does not fit in 64 bits (TOML integers are -9223372036854775808 to 9223372036854775807)"),
        // sizes: a fraction times T must not overflow; at most 1 PiB
        (limit("memory = \"1025T\""), "t.toml:7:1: memory \"1025T\" is too large (at most 1 PiB, \"1024T\")"),
        (limit("memory = 1125899906842625"), "t.toml:7:1: memory 1125899906842625 is too large (at most 1 PiB, \"1024T\")"),
        (limit("memory = \"99999999999T\""), "t.toml:7:1: memory \"99999999999T\" is too large (at most 1 PiB, \"1024T\")"),
        (limit("memory = \"16777215.999999999T\""), "t.toml:7:1: memory \"16777215.999999999T\" is too large (at most 1 PiB, \"1024T\")"),
        (limit("memory = 0"), "t.toml:7:1: memory must be at least 1 byte, not 0"),
        (limit("memory = -1"), "t.toml:7:1: memory must be at least 1 byte, not -1"),
        (limit("memory = \"0.0001K\""), "t.toml:7:1: memory must be at least 1 byte, not \"0.0001K\""),
        (limit("memory = \"1.5\""), "t.toml:7:1: bad size \"1.5\" for memory (expected bytes or a size such as \"512M\", \"1G\")"),
        (limit("memory = \"1٣M\""), "t.toml:7:1: bad size \"1٣M\" for memory (expected bytes or a size such as \"512M\", \"1G\")"),
        (limit("memory = 1.5e9"), "t.toml:7:1: bad memory 1500000000.0: a float is not taken; write whole bytes or a string with a unit, such as \"1.5G\""),
        (limit("memory = -inf"), "t.toml:7:1: bad memory -inf: a float is not taken; write whole bytes or a string with a unit, such as \"1.5G\""),
        (limit("file-size = \"1025T\""), "t.toml:7:1: file-size \"1025T\" is too large (at most 1 PiB, \"1024T\")"),
        (limit("output = \"129M\""), "t.toml:7:1: output \"129M\" is too large (at most 128 MiB, \"128M\")"),
        (limit("output = 134217729"), "t.toml:7:1: output 134217729 is too large (at most 128 MiB, \"128M\")"),
        // cpu: whole seconds, at most a week
        (limit("cpu = \"1.5s\""), "t.toml:7:1: cpu must be whole seconds, not \"1.5s\""),
        (limit("cpu = \"500ms\""), "t.toml:7:1: cpu must be at least 1s, not \"500ms\""),
        (limit("cpu = \"2500ms\""), "t.toml:7:1: cpu must be whole seconds, not \"2500ms\""),
        (limit("cpu = 0"), "t.toml:7:1: cpu must be at least 1s, not 0"),
        (limit("cpu = 604801"), "t.toml:7:1: cpu 604801 is too large (at most 7 days, \"168h\")"),
        (limit("cpu = 9223372036854775807"), "t.toml:7:1: cpu 9223372036854775807 is too large (at most 7 days, \"168h\")"),
        (limit("cpu = \"soon\""), "t.toml:7:1: bad cpu limit \"soon\" (expected a duration such as \"30s\", \"500ms\", \"2m\")"),
        // counts: whole, positive, within what the kernel takes
        (limit("processes = 1.5"), "t.toml:7:1: processes must be a whole number, not 1.5"),
        (limit("processes = 2.0"), "t.toml:7:1: processes must be a positive integer, not 2.0"),
        (limit("processes = nan"), "t.toml:7:1: processes must be a positive integer, not nan"),
        (limit("processes = \"4\""), "t.toml:7:1: processes must be a positive integer, not \"4\""),
        (limit("processes = 0"), "t.toml:7:1: processes must be at least 1, not 0"),
        (limit("processes = 4194305"), "t.toml:7:1: processes 4194305 is too large (at most 4194304, Linux's PID_MAX_LIMIT)"),
        (limit("processes = 0o20000001"), "t.toml:7:1: processes 4194305 is too large (at most 4194304, Linux's PID_MAX_LIMIT)"),
        (limit("processes = 1_000_000_000"), "t.toml:7:1: processes 1000000000 is too large (at most 4194304, Linux's PID_MAX_LIMIT)"),
        (limit("open-files = 0x10_0001"), "t.toml:7:1: open-files 1048577 is too large (at most 1048576, Linux's default fs.nr_open)"),
        (limit("open-files = -9223372036854775808"), "t.toml:7:1: open-files must be at least 1, not -9223372036854775808"),
        // an inline table places the error at its key
        ("limits = { output = \"1M\", memory = \"2048T\" }", "t.toml:6:27: memory \"2048T\" is too large (at most 1 PiB, \"1024T\")"),
    ]

    @Test("a bad number is one exact file:line:column diagnostic", arguments: bad)
    func refused(snippet: String, expected: String) throws {
        let found = try diagnostics(["t.toml": tool(snippet)])
        let named = found.map { "\($0.file.split(separator: "/").last!):\($0.line):\($0.column): \($0.message)" }
        #expect(named == [expected])
    }

    /// The largest (and smallest) values each key takes load, with the values meant.
    static let good: [(String, String, UInt64)] = [
        ("timeout = 604800", "timeout", 604_800_000),
        ("timeout = \"168h\"", "timeout", 604_800_000),
        ("timeout = \"10080m\"", "timeout", 604_800_000),
        ("timeout = 1", "timeout", 1000),
        ("timeout = \"1ms\"", "timeout", 1),
        ("timeout = \"0.001s\"", "timeout", 1),
        ("timeout = 0x3C", "timeout", 60_000),
        (limit("memory = 1125899906842624"), "memory", 1 << 50),
        (limit("memory = \"1024T\""), "memory", 1 << 50),
        (limit("memory = \"1023.999999999TiB\""), "memory", 1_125_899_906_841_524),
        (limit("memory = \"1.99999999T\""), "memory", 2_199_023_244_556),
        (limit("memory = 1"), "memory", 1),
        (limit("memory = 1_048_576"), "memory", 1 << 20),
        (limit("file-size = \"1024T\""), "file-size", 1 << 50),
        (limit("output = \"128M\""), "output", 128 << 20),
        (limit("output = 134217728"), "output", 128 << 20),
        (limit("output = 1"), "output", 1),
        (limit("cpu = 604800"), "cpu", 604_800),
        (limit("cpu = \"168h\""), "cpu", 604_800),
        (limit("cpu = \"1s\""), "cpu", 1),
        (limit("cpu = \"1000ms\""), "cpu", 1),
        (limit("processes = 4194304"), "processes", 4_194_304),
        (limit("processes = 0x40_0000"), "processes", 4_194_304),
        (limit("processes = 1"), "processes", 1),
        (limit("open-files = 1048576"), "open-files", 1_048_576),
        (limit("open-files = 0b1"), "open-files", 1),
    ]

    @Test("boundary values are taken", arguments: good)
    func accepted(snippet: String, key: String, value: UInt64) throws {
        let dir = try policyDirectory(["t.toml": tool(snippet)])
        let a = try PolicyLoader.load(directory: dir).tool("a")
        let got: UInt64? = switch key {
        case "timeout": a.timeoutMilliseconds
        case "memory": a.limits.memory
        case "file-size": a.limits.fileSize
        case "output": a.limits.output
        case "cpu": a.limits.cpuSeconds
        case "processes": a.limits.processes
        default: a.limits.openFiles
        }
        #expect(got == value)
    }

    /// Every key with every extreme value: each loads within its range or is one diagnostic,
    /// and none traps (a trap would end the test process).
    @Test func extremesNeverTrap() throws {
        let values = [
            "9223372036854775807", "-9223372036854775808", "0", "1", "0x7FFF_FFFF_FFFF_FFFF", "1.0", "1e308", "-0.0", "inf", "-inf", "nan",
            "\"18446744073709551615\"", "\"18446744073709551616\"", "\"18446744073709551615T\"", "\"16777216T\"", "\"16777215.999999999T\"",
            "\"0.999999999T\"", "\"5124095576030431h\"", "\"5124095576030431.999999999h\"", "\"18446744073709551615ms\"",
            "\"1.999999999s\"", "\"0.0000000001s\"", "\"\"", "\" \"", "\"T\"", "\".T\"", "\"1.T\"", "\"+1\"", "\"1e3\"", "\"0x10\"",
        ]
        let maxima: [String: UInt64] = ["timeout": 604_800_000, "memory": 1 << 50, "file-size": 1 << 50, "output": 128 << 20,
                                        "cpu": 604_800, "processes": 1 << 22, "open-files": 1 << 20]
        for key in maxima.keys.sorted() {
            for value in values {
                let snippet = key == "timeout" ? "timeout = \(value)" : limit("\(key) = \(value)")
                let dir = try policyDirectory(["t.toml": tool(snippet)])
                do {
                    let a = try PolicyLoader.load(directory: dir).tool("a")
                    let got = key == "timeout" ? a.timeoutMilliseconds : [
                        "memory": a.limits.memory, "file-size": a.limits.fileSize, "output": a.limits.output,
                        "cpu": a.limits.cpuSeconds, "processes": a.limits.processes, "open-files": a.limits.openFiles,
                    ][key]!
                    #expect(got != nil && got! >= 1 && got! <= maxima[key]!, "\(key) = \(value) gave \(String(describing: got))")
                } catch {
                    #expect(error.diagnostics.count == 1, "\(key) = \(value): \(error)")
                }
            }
        }
    }
}
