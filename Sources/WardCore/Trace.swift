/// What a traced call's tool, and every process it started, attempted to change: files
/// opened for writing, created, truncated, deleted, renamed, linked, made or removed as
/// directories, chmodded; programs executed; sockets connected or bound (docs/design.md,
/// "Effect traces"). Recorded with the call's outcome and chained with it.
///
/// *Attempted*, not observed: ward reads each syscall's arguments while the kernel holds
/// it, before the kernel acts. A syscall that then fails (a path Landlock refuses, a file
/// that is not there) is still in the trace, and a thread of the tool that rewrites the
/// path in memory between ward's read and the kernel's makes the trace name the first path.
public struct Trace: Sendable, Hashable {
    /// The effects of one call kept at most: a tool that creates a million files leaves a
    /// trace that says so (`truncated`) instead of a ledger that grows without bound.
    public static let limit = 10_000
    /// The bytes of JSON a call's effects take at most (each effect's paths and arguments
    /// are cut too): what one hostile call can add to the ledger and its capture file.
    public static let byteLimit = 2 << 20

    /// The effects, in the order ward was told of them.
    public var effects: [Effect]
    /// How many effects past `limit` were not recorded; nil when unknown (the trace was
    /// read back from a crashed call's capture, which records only that it was cut).
    public var dropped: Int?

    public init(effects: [Effect] = [], dropped: Int? = 0) {
        self.effects = effects
        self.dropped = dropped
    }

    /// Some effects were not recorded.
    public var truncated: Bool { dropped != 0 }

    /// One attempted change.
    public struct Effect: Sendable, Hashable {
        public enum Kind: String, Sendable, CaseIterable {
            /// A file opened with O_CREAT where none was.
            case create
            /// An existing file opened for writing (`flags`: append, truncate).
            case write
            /// truncate(2) by path.
            case truncate
            case delete
            /// `path` renamed to `to`.
            case rename
            case mkdir
            case rmdir
            /// A hard link `to` made of `path`.
            case link
            /// A symbolic link made at `path`, holding `target`.
            case symlink
            case chmod
            /// A program executed (`argv`).
            case exec
            /// A socket connected to `address`.
            case connect
            /// A socket bound to `address`.
            case bind
        }

        public var kind: Kind
        /// Absolute, resolved against the process's working directory or the directory fd
        /// it named, symlinks of its directories followed.
        public var path: String?
        public var to: String?
        public var target: String?
        public var mode: UInt32?
        public var argv: [String]?
        public var address: String?
        public var flags: [String]?
        /// The process that attempted it (as ward's PID namespace numbers it).
        public var pid: Int32
        /// Milliseconds since the call's tool was started.
        public var atMs: Double

        public init(kind: Kind, path: String? = nil, to: String? = nil, target: String? = nil, mode: UInt32? = nil,
                    argv: [String]? = nil, address: String? = nil, flags: [String]? = nil, pid: Int32, atMs: Double) {
            self.kind = kind
            self.path = path
            self.to = to
            self.target = target
            self.mode = mode
            self.argv = argv
            self.address = address
            self.flags = flags
            self.pid = pid
            self.atMs = atMs
        }

        public var json: JSONValue {
            var m: [String: JSONValue] = ["kind": .string(kind.rawValue), "pid": .number(Double(pid)), "atMs": .number(atMs)]
            if let path { m["path"] = .string(path) }
            if let to { m["to"] = .string(to) }
            if let target { m["target"] = .string(target) }
            if let mode { m["mode"] = .string(Trace.Effect.octal(mode)) }
            if let argv { m["argv"] = .array(argv.map { .string($0) }) }
            if let address { m["address"] = .string(address) }
            if let flags { m["flags"] = .array(flags.map { .string($0) }) }
            return .object(m)
        }

        public init?(json: JSONValue) {
            guard let m = json.objectValue, let kind = m["kind"]?.stringValue.flatMap(Kind.init(rawValue:)) else { return nil }
            let pid = m["pid"]?.integer(Int32.self) ?? 0
            let at: Double = if case .number(let n)? = m["atMs"] { n } else { 0 }
            self.init(kind: kind, path: m["path"]?.stringValue, to: m["to"]?.stringValue, target: m["target"]?.stringValue,
                      mode: m["mode"]?.stringValue.flatMap { UInt32($0, radix: 8) },
                      argv: m["argv"]?.arrayValue?.compactMap(\.stringValue), address: m["address"]?.stringValue,
                      flags: m["flags"]?.arrayValue?.compactMap(\.stringValue), pid: pid, atMs: at)
        }

        static func octal(_ mode: UInt32) -> String {
            let digits = String(mode, radix: 8)
            return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
        }

        /// One line for people: `rename /w/a → /w/b`, `exec /usr/bin/git commit -m x`.
        public var description: String {
            var line = kind.rawValue + " "
            switch kind {
            case .rename, .link: line += (path ?? "?") + " → " + (to ?? "?")
            case .symlink: line += (path ?? "?") + " → " + (target ?? "?")
            case .exec:
                // The program run, then its arguments quoted where a shell would need it.
                let words = (argv ?? []).dropFirst().map { Shell.quote("x" + $0) == "x" + $0 ? $0 : Shell.quote($0) }
                line += ([path ?? argv?.first ?? "?"] + words).joined(separator: " ")
            case .connect, .bind: line += address ?? "?"
            default: line += path ?? "?"
            }
            if let mode, kind != .exec { line += " (mode \(Trace.Effect.octal(mode)))" }
            if let flags, !flags.isEmpty { line += " (" + flags.joined(separator: ", ") + ")" }
            return line
        }
    }

    /// `{"mode": "attempted", "effects": [...], "truncated": …, "dropped": …}`: the member
    /// `trace` of a call's `call.finish` or `call.in-doubt` event.
    public var json: JSONValue {
        var m: [String: JSONValue] = ["mode": .string("attempted"), "effects": .array(effects.map(\.json)), "truncated": .bool(truncated)]
        if let dropped { m["dropped"] = .number(Double(dropped)) }
        return .object(m)
    }

    public init?(json: JSONValue) {
        guard let m = json.objectValue, let effects = m["effects"]?.arrayValue else { return nil }
        self.init(effects: effects.compactMap(Effect.init(json:)), dropped: m["dropped"]?.integer(Int.self))
        if dropped == nil, case .bool(false)? = m["truncated"] { dropped = 0 }
    }

    /// The lines `ledger show` prints, with what was not recorded.
    public var lines: [String] {
        var lines = effects.map(\.description)
        if let dropped, dropped > 0 {
            lines.append("… \(dropped) more not recorded (a call keeps at most \(Trace.limit) effects, 2 MiB)")
        } else if dropped == nil {
            lines.append("… more may have followed: the trace reached its limit of \(Trace.limit) effects")
        }
        return lines
    }
}
