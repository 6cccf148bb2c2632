import Testing
@testable import WardPolicy

/// ward's TOML reader against the TOML 1.0 specification's own examples and its edge cases.
@Suite("TOML: the reader behind policy files")
struct TOMLTests {
    func parse(_ text: String) throws -> [String: Node] { try TOMLReader.parse(text).root }

    func value(_ text: String, _ path: String...) throws -> Node? {
        var node: Node = .table(try parse(text))
        for key in path {
            guard case .table(let members) = node, let next = members[key] else { return nil }
            node = next
        }
        return node
    }

    func string(_ text: String) throws -> String? {
        guard case .string(let s)? = try value("v = " + text, "v") else { return nil }
        return s
    }

    @Test("strings", arguments: [
        (#""plain""#, "plain"),
        (#""tab\tquote\"back\\slash\u00e9\U0001F600""#, "tab\tquote\"back\\slash\u{e9}\u{1F600}"),
        (#"'C:\Users\nodejs'"#, #"C:\Users\nodejs"#),
        ("\"\"\"\nRoses are red\nViolets are blue\"\"\"", "Roses are red\nViolets are blue"),
        ("\"\"\"\nThe quick \\\n\n   brown fox\"\"\"", "The quick brown fox"),
        ("\"\"\"Here are two quotation marks: \"\". Simple enough.\"\"\"", "Here are two quotation marks: \"\". Simple enough."),
        ("\"\"\"\"This,\" she said, \"is just a pointless statement.\"\"\"\"", "\"This,\" she said, \"is just a pointless statement.\""),
        ("'''\nThe first newline is\ntrimmed in raw strings.\n'''", "The first newline is\ntrimmed in raw strings.\n"),
        ("''''That,' she said, 'is still pointless.''''", "'That,' she said, 'is still pointless.'"),
        ("\"\"\"a\r\nb\"\"\"", "a\nb"),
    ])
    func strings(text: String, expected: String) throws {
        #expect(try string(text) == expected)
    }

    @Test("numbers, booleans and dates", arguments: [
        ("+99", "integer 99"), ("-17", "integer -17"), ("0", "integer 0"), ("1_000", "integer 1000"),
        ("0xDEAD_beef", "integer 3735928559"), ("0o755", "integer 493"), ("0b1101", "integer 13"),
        ("9223372036854775807", "integer 9223372036854775807"),
        ("3.1415", "float 3.1415"), ("-0.01", "float -0.01"), ("5e+22", "float 5e+22"), ("6.626e-34", "float 6.626e-34"),
        ("1e06", "float 1000000.0"), ("inf", "float inf"), ("-inf", "float -inf"),
        ("true", "boolean true"), ("false", "boolean false"),
        ("1979-05-27T07:32:00Z", "date-time"), ("1979-05-27 07:32:00-07:00", "date-time"), ("1979-05-27", "date-time"),
        ("07:32:00.999", "date-time"), ("1979-05-27T00:32:00.999999", "date-time"),
    ])
    func scalars(text: String, expected: String) throws {
        let node = try #require(try value("v = " + text + " # comment", "v"))
        switch node {
        case .integer(let n): #expect("integer \(n)" == expected)
        case .double(let d): #expect("float \(d)" == expected)
        case .bool(let b): #expect("boolean \(b)" == expected)
        case .dateTime: #expect(expected == "date-time")
        default: Issue.record("\(text) read as \(node)")
        }
    }

    @Test func tablesDottedKeysArraysOfTables() throws {
        let text = """
        # a comment
        title = "TOML"   # trailing
        site."google.com" = true
        [owner]
        name = "Tom"
        [a.b.c]
        d = 1
        [a]
        e = [ 1, [2, "x"], { f = 3, g.h = 4 }, ]
        mixed = [
          "one",  # a comment in an array
          'two',
        ]
        [[products]]
        name = "Hammer"
        [[products]]
        [[products]]
        name = "Nail"
        [products.detail]
        size = 8
        """
        #expect(try value(text, "site", "google.com").map { "\($0)" } == "bool(true)")
        #expect(try value(text, "a", "b", "c", "d").map { "\($0)" } == "integer(1)")
        guard case .array(let e)? = try value(text, "a", "e"), e.count == 3, case .table(let inline) = e[2],
              case .table(let g)? = inline["g"], case .integer(4)? = g["h"] else { Issue.record("a.e"); return }
        guard case .array(let products)? = try value(text, "products"), products.count == 3,
              case .table(let last) = products[2], case .table(let detail)? = last["detail"], case .integer(8)? = detail["size"] else {
            Issue.record("products"); return
        }
        let map = try TOMLReader.parse(text).map
        #expect(map.position(of: ["owner", "name"]) == .init(line: 5, column: 1))
        #expect(map.position(ofString: "two", in: ["a", "mixed"]) == .init(line: 12, column: 3))
        #expect(map.position(of: ["a", "e", "g", "h"]) == .init(line: 9, column: 29))
    }

    @Test("refused with a position", arguments: [
        ("[\n", 1, 2), ("x=[}\n", 1, 4), ("a = 1 b = 2\n", 1, 7), ("a = \"x\n", 1, 7), ("a = 1\ra = 2\n", 1, 6),
        ("a = 1\na = 2\n", 2, 1), ("[t]\n[t]\n", 2, 1), ("a = 01\n", 1, 5), ("a = 1__0\n", 1, 5), ("a = 0x\n", 1, 5),
        ("a = 99999999999999999999\n", 1, 5), ("a = 1.\n", 1, 5), ("a = .5\n", 1, 5), ("a = \"\\q\"\n", 1, 6),
        ("a = \"\\uD800\"\n", 1, 6), ("a = { b = 1, }\n", 1, 14), ("a = { b = 1\n", 1, 12), ("a = {b=1}\na.c = 2\n", 2, 1),
        ("[a]\nb = 1\n[a.b]\n", 3, 1), ("a.b = 1\n[a]\n", 2, 1), ("a = [1\n", 2, 1), ("= 1\n", 1, 1),
        ("a = \"\"\"x\n", 2, 1), ("a = 'x\n", 1, 7), ("[[a]]\n[a]\n", 2, 1), ("a = tru\n", 1, 5), ("a = 1979-05-27T25\n", 1, 5),
        ("a = \"x\u{01}\"\n", 1, 7), ("# bell \u{07}\n", 1, 8), ("[a]x\n", 1, 4),
    ])
    func refused(text: String, line: Int, column: Int) {
        do {
            _ = try TOMLReader.parse(text)
            Issue.record("accepted: \(text.debugDescription)")
        } catch {
            #expect(error.position == .init(line: line, column: column), "\(text.debugDescription): \(error.message)")
        }
    }
}
