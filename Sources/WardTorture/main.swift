// ward-torture: writes through the ledger and reports each durable step on stdout, so a
// test (or Scripts/crash-matrix) can SIGKILL it anywhere and check what survived.
//
//   ward-torture loop LEDGER RUN PREFIX    begin/finish calls, checkpoints, journal, forever
//   ward-torture race LEDGER RUN CALL MS   begin one call; if it runs, hold it MS ms, finish
//   ward-torture fill LEDGER RUN N         N calls, each with its checkpoint, one in 50 failing (a big run to report)
import WardCore
import WardLedger

#if canImport(Glibc)
import Glibc
#endif

func say(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(1, $0.baseAddress, $0.count) }
}

let args = CommandLine.arguments
guard args.count >= 5 else {
    say("usage: ward-torture loop LEDGER RUN PREFIX | race LEDGER RUN CALL MS | fill LEDGER RUN N")
    exit(2)
}
func main(_ args: [String]) throws(LedgerError) {
    // A filled run is test data, made fast; the other modes test durability itself.
    let ledger = try Ledger(path: args[2], durability: args[1] == "fill" ? .normal : .full)
    let run = args[3]
    switch args[1] {
    case "fill":
        let attempt = try ledger.startAttempt(run: run)
        for i in 0..<(Int(args[4]) ?? 0) {
            let request = BeginRequest(run: run, callId: "c\(i)", tool: i % 3 == 0 ? "shell" : "write_file", effect: .nonIdempotent,
                                       arguments: .object(["i": .number(Double(i))]), policyHash: "p", executable: "/bin/true", attempt: attempt,
                                       checkpoint: Array("{\"step\":\(i)}".utf8))
            guard case .execute(let ticket) = try ledger.begin(request) else { say("unexpected replay c\(i)"); exit(1) }
            let failed = i % 50 == 49
            _ = try ledger.finish(ticket, outcome: ToolOutcome(status: failed ? .failed : .succeeded, exitCode: failed ? 1 : 0, signal: nil,
                                                               stdout: Array("ok \(i)\n".utf8), stderr: failed ? Array("no such file\n".utf8) : [],
                                                               truncated: false, durationMs: 0.4))
        }
        say("filled")
    case "loop":
        let prefix = args[4]
        let effects: [CallEffect] = [.nonIdempotent, .idempotent, .readOnly]
        var i = 0
        while true {
            i += 1
            let id = "\(prefix)-\(i)"
            let effect = effects[i % 3]
            let request = BeginRequest(run: run, callId: id, tool: "t", effect: effect, arguments: .object(["i": .number(Double(i))]),
                                       policyHash: "p", executable: "/bin/true", attempt: 1,
                                       checkpoint: i % 4 == 0 ? Array("{\"i\":\(i),\"pad\":\"\(String(repeating: "z", count: i % 700))\"}".utf8) : nil)
            guard case .execute(let ticket) = try ledger.begin(request) else { say("unexpected replay \(id)"); exit(1) }
            say("begun \(id) \(effect.rawValue)\(ticket.checkpointSeq.map { " checkpoint \($0)" } ?? "")")
            let outcome = ToolOutcome(status: .succeeded, exitCode: 0, signal: nil, stdout: Array("out-\(id)".utf8), stderr: [],
                                      truncated: false, durationMs: 1)
            _ = try ledger.finish(ticket, outcome: outcome)
            say("finished \(id)")
            if i % 5 == 0 {
                let seq = try ledger.saveCheckpoint(run: run, state: Array("state after \(id)".utf8))
                say("checkpoint \(seq) \(id)")
            }
            if i % 3 == 0 {
                _ = try ledger.journalRecord(run: run, key: "k-\(id)", value: .string("v-\(id)"))
                say("journal k-\(id)")
            }
        }
    case "race":
        let call = args[4]
        let hold = args.count > 5 ? Int(args[5]) ?? 0 : 0
        let request = BeginRequest(run: run, callId: call, tool: "t", effect: .nonIdempotent, arguments: .object([:]),
                                   policyHash: "p", executable: "/bin/true", attempt: 1)
        switch try ledger.begin(request) {
        case .execute(let ticket):
            say("execute")
            usleep(useconds_t(hold * 1000))
            _ = try ledger.finish(ticket, outcome: ToolOutcome(status: .succeeded, exitCode: 0, signal: nil, stdout: Array("\(getpid())".utf8),
                                                              stderr: [], truncated: false, durationMs: 1))
            say("finished")
        case .replay(let result):
            say("replay \(String(decoding: result.outcome.stdout, as: UTF8.self))")
        }
    default:
        say("unknown mode \(args[1])")
        exit(2)
    }
}

do {
    try main(args)
} catch {
    say("error \(error.code) \(error.message)")
    exit(3)
}
