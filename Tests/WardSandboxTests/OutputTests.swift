import Foundation
import Testing
import WardCore
@testable import WardSandbox

@Suite("Output cut at the limit stays text")
struct OutputTests {
    @Test(arguments: [
        ([0x61, 0x62], 0), ([0x61, 0xC3], 1), ([0x61, 0xC3, 0xA9], 0), ([0xE2, 0x82], 2), ([0xE2, 0x82, 0xAC], 0),
        ([0xF0, 0x9F, 0xA7], 3), ([0xF0, 0x9F, 0xA7, 0xAA], 0), ([], 0), ([0x80, 0x80, 0x80, 0x80], 0),
    ] as [([UInt8], Int)])
    func partialCharactersAreFound(bytes: [UInt8], partial: Int) {
        #expect(OutputCollector.partialUTF8Suffix(bytes) == partial)
    }

    /// A limit that falls inside a UTF-8 character cuts before it: the agent gets text,
    /// not the whole output as base64.
    @Test func aCutInsideACharacterMovesToItsStart() throws {
        let sandbox = try Fixture.sandbox(workspace: Fixture.workspace())
        // shell-short keeps 64 KiB: 65,535 × "a" then "é" (2 bytes) puts the limit inside "é".
        let outcome = try sandbox.run(tool: "shell-short", arguments: .object(["command": .string("head -c 65535 /dev/zero | tr '\\0' a; printf '\\303\\251tail'")]))
        #expect(outcome.truncated)
        #expect(outcome.stdout.count == 65_535 && outcome.stdout.allSatisfy { $0 == 0x61 }, "\(outcome.stdout.count) bytes")
        let result = CallResult(callId: "c", tool: "shell-short", outcome: outcome, replayed: false, attempt: 1).json.objectValue
        #expect(result?["stdout"]?.stringValue?.utf8.count == 65_535 && result?["stdoutBase64"] == nil)
    }
}
