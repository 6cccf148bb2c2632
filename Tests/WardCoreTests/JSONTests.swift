import Testing
import WardCore

@Suite("JSON: strict parsing and RFC 8785 canonical form")
struct JSONTests {
    @Test("numbers take ECMAScript's shortest form", arguments: [
        ("1.0", "1"), ("-0", "0"), ("1e21", "1e+21"), ("1e20", "100000000000000000000"),
        ("0.000001", "0.000001"), ("1e-7", "1e-7"), ("123.456", "123.456"), ("-1.5E3", "-1500"),
        ("9007199254740993", "9007199254740992"), ("5e-324", "5e-324"), ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ("0.1", "0.1"), ("100", "100"), ("12345678.9", "12345678.9"),
    ])
    func numbers(input: String, expected: String) throws {
        #expect(try JSONValue.parse(input).canonical == expected)
    }

    @Test func keysSortedByUTF16AndNoWhitespace() throws {
        let v = try JSONValue.parse(#"{ "b": [1, 2, {"z": null, "a": true}], "a": "x", "\u20ac": 1, "\ud83d\ude00": 2, "1": false }"#)
        #expect(v.canonical == #"{"1":false,"a":"x","b":[1,2,{"a":true,"z":null}],"€":1,"😀":2}"#)
    }

    /// UTF-8 bytes and UTF-16 code units order U+E000–U+FFFF and supplementary characters
    /// differently: RFC 8785 wants UTF-16's order, surrogates (U+1F600) first.
    @Test func keysAboveTheSurrogatesSortAfterSupplementaryCharacters() throws {
        let v = try JSONValue.parse(#"{"\uff61": 1, "\ud83d\ude00": 2, "\ue000": 3, "\ud7ff": 4, "\ud83d\ude01x": 5}"#)
        #expect(v.canonical == "{\"\u{D7FF}\":4,\"😀\":2,\"😁x\":5,\"\u{E000}\":3,\"\u{FF61}\":1}")
    }

    @Test func stringsEscapeMinimally() throws {
        let v = try JSONValue.parse(#""a\"b\\c\/d\n\t\u0001\u00e9""#)
        #expect(v.canonical == #""a\"b\\c/d\n\t\u0001é""#)
    }

    @Test("malformed input is refused", arguments: [
        "", "{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "01", "1.", "-", "tru", "\"\\x\"", "\"\\ud800\"",
        "\"\\udc00x\"", "{\"a\":1,\"a\":2}", "1 2", "\"a\u{01}\"", "[1]x", "NaN", "1e999",
    ])
    func refused(input: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(input) }
    }

    @Test func invalidUTF8IsRefused() {
        #expect(throws: JSONParseError.self) { try JSONValue.parse([0x22, 0xFF, 0x22]) }
    }

    @Test func deepNestingIsRefusedNotACrash() throws {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(deep) }
        let ok = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        _ = try JSONValue.parse(ok)
    }

    @Test func base64() {
        #expect(Base64.encode([]) == "")
        #expect(Base64.encode(Array("f".utf8)) == "Zg==")
        #expect(Base64.encode(Array("fo".utf8)) == "Zm8=")
        #expect(Base64.encode(Array("foobar".utf8)) == "Zm9vYmFy")
        #expect(Base64.encode([0xFF, 0xFE, 0x00]) == "//4A")
    }

    @Test func callResultUsesBase64ForNonUTF8() {
        let outcome = ToolOutcome(status: .succeeded, exitCode: 0, signal: nil, stdout: [0xFF], stderr: Array("ok".utf8), truncated: false, durationMs: 1.5)
        let json = CallResult(callId: "c1", tool: "t", outcome: outcome, replayed: false, attempt: 1).json.objectValue!
        #expect(json["stdoutBase64"] == .string("/w=="))
        #expect(json["stdout"] == nil)
        #expect(json["stderr"] == .string("ok"))
        #expect(json["signal"] == .null)
    }
}

@Suite("JSON-RPC framing and request decoding")
struct RPCTests {
    func lines(_ stream: String, readSize: Int, limit: Int = .max) throws(LineFramer.TooLong) -> ([String], pending: Int) {
        var framer = LineFramer(maximumLineBytes: limit)
        let bytes = Array(stream.utf8)
        var out: [String] = []
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + readSize, bytes.count)
            bytes[offset..<end].withUnsafeBytes { framer.append($0) }
            offset = end
            while let line = try framer.next() { out.append(String(decoding: line, as: UTF8.self)) }
        }
        return (out, framer.pendingBytes)
    }

    @Test("lines come out whole however the reads cut them", arguments: [1, 2, 3, 7, 64])
    func framing(readSize: Int) throws {
        let (out, pending) = try lines("a\n\nbc\r\n{\"x\":1}\nrest", readSize: readSize)
        #expect(out == ["a", "", "bc\r", "{\"x\":1}"])
        #expect(pending == 4)
    }

    @Test func aLineOverTheLimitIsRefusedBeforeItsNewline() throws {
        #expect(try lines("12345\n", readSize: 1, limit: 5).0 == ["12345"])
        #expect(throws: LineFramer.TooLong.self) { try lines("123456", readSize: 2, limit: 5) }
        #expect(throws: LineFramer.TooLong.self) { try lines("ok\n1234567\n", readSize: 64, limit: 5) }
    }

    @Test("requests and refusals", arguments: [
        (#"{"jsonrpc":"2.0","id":7,"method":"tool.call","params":{"a":1}}"#, "tool.call", nil),
        (#"{"jsonrpc":"2.0","method":"run.resume"}"#, "run.resume", nil),
        (#"{"jsonrpc":"2.0","id":1,"method":"x""#, nil, -32700),
        (#"[{"jsonrpc":"2.0","id":1,"method":"x"}]"#, nil, -32600),
        (#"{"jsonrpc":"2.0","id":[1],"method":"x"}"#, nil, -32600),
        (#"{"jsonrpc":"1.0","id":1,"method":"x"}"#, nil, -32600),
        (#"{"jsonrpc":"2.0","id":1,"method":3}"#, nil, -32600),
    ] as [(String, String?, Int?)])
    func decode(line: String, method: String?, code: Int?) {
        switch RPCRequest.decode(Array(line.utf8)) {
        case .success(let request):
            #expect(request.method == method)
            #expect(code == nil)
        case .failure(let refusal):
            #expect(refusal.error.code == code)
            #expect(refusal.error.kind == .invalidArguments)
            #expect(method == nil)
        }
    }
}
