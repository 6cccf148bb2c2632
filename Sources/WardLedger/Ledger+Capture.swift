import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// The capture file of one running call (see `OutputCapture`), open for the sandbox to write.
public final class CaptureFile: Sendable {
    public let fd: Int32

    init(fd: Int32) { self.fd = fd }

    deinit { close(fd) }
}

/// What a capture file held when its call was found in doubt.
struct Captured {
    var contents: OutputCapture.Contents
    /// The file's mtime: its last frame or heartbeat (Unix time in milliseconds).
    var lastSignOfLifeMs: Int
    var lastSignOfLife: String

    /// When and how far the tool got.
    var summary: [String: JSONValue] {
        ["captured": .bool(true), "lastSignOfLife": .string(lastSignOfLife),
         "ranForMs": .number(Double(max(0, lastSignOfLifeMs - contents.startedMs))), "toolExit": contents.exit ?? .null]
    }

    /// The members it adds to a `call.in-doubt` event: the output as blobs, named by hash,
    /// so `verify` covers the evidence too.
    func eventData(_ db: any SQLConnection, ledger: Ledger) throws -> [String: JSONValue] {
        var data = summary
        let (out, err) = try ledger.putOutputs(db, contents.stdout, contents.stderr)
        data["stdoutSoFar"] = .string(Digest.hex(out))
        data["stderrSoFar"] = .string(Digest.hex(err))
        if let trace = contents.trace { data["trace"] = trace.json }
        return data
    }

    /// The members it adds to `ledger show`'s evidence: the output itself.
    var shown: [String: JSONValue] {
        var members = summary
        CallResult.put(contents.stdout, as: "stdoutSoFar", into: &members)
        CallResult.put(contents.stderr, as: "stderrSoFar", into: &members)
        if let trace = contents.trace { members["trace"] = trace.json }
        return members
    }
}

extension Ledger {
    /// `LEDGER-output/`, beside the database (like its `-wal`): one capture file per running
    /// non-idempotent call, named by its idempotency key (run and call IDs may hold any
    /// character a file name cannot).
    var captureDirectory: String { localBase + "-output" }

    func capturePath(run: String, callId: String) -> String {
        captureDirectory + "/" + Ledger.idempotencyKey(run: run, callId: callId)
    }

    /// Opens the capture file of a call about to run; nil when it cannot be made (the call
    /// runs anyway: only the evidence a crash would leave is lost). `finish` removes it.
    public func openCapture(_ ticket: CallTicket) -> CaptureFile? {
        let file = capturePath(run: ticket.run, callId: ticket.callId)
        var fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        if fd < 0 && errno == ENOENT {
            // The first capture here. On a server the directory's parent is this host's
            // `.ward`, made only now: a command that never runs a call leaves none behind.
            if isOnServer { mkdir(String(localBase[..<localBase.lastIndex(of: "/")!]), 0o700) }
            if mkdir(captureDirectory, 0o700) == 0 || errno == EEXIST {
                fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
            }
        }
        guard fd >= 0 else { return nil }
        // The clock file times are taken from, so the run time measured against the
        // file's mtime is not a few milliseconds short.
        var now = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &now)
        let header = OutputCapture.header(run: ticket.run, callId: ticket.callId, execution: ticket.execution,
                                          startedMs: now.tv_sec * 1000 + now.tv_nsec / 1_000_000)
        guard OS.writeAll(fd, header) else {
            close(fd)
            unlink(file)
            return nil
        }
        return CaptureFile(fd: fd)
    }

    func removeCapture(run: String, callId: String) {
        unlink(capturePath(run: run, callId: callId))
    }

    /// Names of the capture files present.
    func captureFiles() -> [String] {
        guard let dir = opendir(captureDirectory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// A call's capture file, when it is that execution's (a file of an earlier one is stale).
    func readCapture(run: String, callId: String, execution: Int) -> Captured? {
        let fd = open(capturePath(run: run, callId: callId), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        // At most both streams at the largest output limit a policy may set, and the frames.
        let size = min(Int(st.st_size), 2 * 128 << 20 + 1 << 20)
        guard let bytes = OS.readAll(fd, limit: size), let contents = OutputCapture.parse(bytes), contents.run == run, contents.callId == callId,
              contents.execution == execution else { return nil }
        return Captured(contents: contents, lastSignOfLifeMs: st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1_000_000,
                        lastSignOfLife: Timestamp.format(st.st_mtim))
    }

    /// Everything known about why a call is (or was) in doubt, for `ledger show`: from its
    /// last `call.in-doubt` event, or, for a call still `running` under a dead owner that no
    /// writer has recovered yet, from its capture file and owner as they are now.
    func inDoubtEvidence(_ db: any SQLConnection, run: String, callId: String, status: String, owner: String?, execution: Int) throws -> JSONValue? {
        var members: [String: JSONValue]
        if status == CallStatus.running.rawValue {
            guard case .dead(let fate) = ownerState(owner) else { return nil }
            members = ["owner": owner.map { .string($0) } ?? .null, "ownerFate": .string(fate), "recorded": .bool(false)]
            if let captured = readCapture(run: run, callId: callId, execution: execution) {
                members.merge(captured.shown) { _, new in new }
            }
        } else {
            guard let data = try db.text("""
                SELECT \(db.dialect.json("body", "data")) FROM events WHERE run_id = ? AND call_id = ? AND kind = 'call.in-doubt' ORDER BY seq DESC LIMIT 1
                """, run, callId), var recorded = (try? JSONValue.parse(data))?.objectValue else { return nil }
            recorded["recorded"] = .bool(true)
            for stream in ["stdout", "stderr"] {
                guard let hex = recorded.removeValue(forKey: stream + "SoFar")?.stringValue, let hash = Digest.bytes(fromHex: hex) else { continue }
                CallResult.put(try blob(db, hash) ?? [], as: stream + "SoFar", into: &recorded)
            }
            members = recorded
        }
        members["captured"] = members["captured"] ?? .bool(false)
        return .object(members)
    }
}
