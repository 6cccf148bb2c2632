import WardCore

/// Where a run ran: its workspace (the path and the filesystem object behind it) and its
/// policy directory.
///
/// A reconcile command that looks for a call's effect in the wrong directory finds nothing
/// and answers "not executed", and the call runs twice. So the ledger records the place on
/// a run's first attempt, and every later attempt, reconcile or resolve of the run uses it
/// and refuses another one: a different directory, or the same path now holding a new
/// (empty) directory, which its device, inode and birth time tell apart (`RunPlace.of` in
/// WardSupervisor reads them).
public struct RunPlace: Sendable, Hashable, CustomStringConvertible {
    /// The workspace's absolute, symlink-free path.
    public var workspace: String
    public var device: UInt64
    public var inode: UInt64
    /// The directory's birth time, `SECONDS.NANOSECONDS` ("" where the filesystem keeps
    /// none): an inode number is often reused at once for a directory made anew.
    public var born: String
    /// The policy directory's absolute path.
    public var policies: String

    public init(workspace: String, device: UInt64, inode: UInt64, born: String, policies: String) {
        self.workspace = workspace
        self.device = device
        self.inode = inode
        self.born = born
        self.policies = policies
    }

    /// The same workspace directory (its path, device, inode and birth time), whatever the
    /// policies.
    public func isSameWorkspace(as other: RunPlace) -> Bool {
        workspace == other.workspace && device == other.device && inode == other.inode && born == other.born
    }

    public var description: String { "\(workspace) (device \(device), inode \(inode), born \(born)), policies \(policies)" }

    var json: [String: JSONValue] {
        ["workspace": .string(workspace), "device": .number(Double(device)), "inode": .number(Double(inode)), "born": .string(born),
         "policies": .string(policies)]
    }

    /// The place a `runs` row records; nil when it records none. Columns of other types than
    /// ward writes (an edited file) are `corrupt`, never a trap: reconcile must not guess.
    init?(_ row: SQLRow, run: String) throws(LedgerError) {
        let values = ["workspace", "workspace_dev", "workspace_ino", "workspace_born", "policies"].map { row[$0] as SQLValue }
        if values[0].isNull { return nil }
        let damaged = LedgerError(.corrupt, "the workspace recorded for run \(run) is damaged (its columns are not of the types ward records)")
        guard case .text(let workspace) = values[0], case .int(let device) = values[1], case .int(let inode) = values[2]
        else { throw damaged }
        func text(_ value: SQLValue) throws(LedgerError) -> String {
            switch value {
            case .null: return ""
            case .text(let s): return s
            default: throw damaged
            }
        }
        self.init(workspace: workspace, device: UInt64(bitPattern: Int64(device)), inode: UInt64(bitPattern: Int64(inode)),
                  born: try text(values[3]), policies: try text(values[4]))
    }
}

extension Ledger {
    /// The place recorded for `run`, or nil when none is (a new run, or one recorded before
    /// ward kept places).
    public func recordedPlace(run: String) throws(LedgerError) -> RunPlace? {
        try read("reading the place of run \(run)") { db in
            try Ledger.place(db, run: run)
        }
    }

    /// Records `place` for `run` when it has none. When it has one, another workspace (or the
    /// same path holding another directory) is refused with `invalid`, naming both, unless
    /// `moved`: then the move is recorded (`run.moved`) and the new place is the run's. A new
    /// policy directory is recorded (`run.policies`): policies are the operator's to change,
    /// and each call records its tool's policy hash.
    public func claimPlace(run: String, _ place: RunPlace, moved: Bool = false) throws(LedgerError) {
        try write("recording the place of run \(run)", run: run) { db in
            let before = try Ledger.place(db, run: run)
            if before == place { return }
            if let before {
                if !before.isSameWorkspace(as: place) {
                    guard moved else { throw LedgerError(.invalid, Ledger.placeMismatch(run: run, recorded: before, given: place)) }
                    try self.appendEvent(db, run: run, kind: "run.moved", data: ["from": .object(before.json), "to": .object(place.json)])
                } else {
                    try self.appendEvent(db, run: run, kind: "run.policies", data: ["from": .string(before.policies), "to": .string(place.policies)])
                }
            } else {
                try self.appendEvent(db, run: run, kind: "run.place", data: place.json)
            }
            try db.execute("UPDATE runs SET workspace = ?, workspace_dev = ?, workspace_ino = ?, workspace_born = ?, policies = ? WHERE run_id = ?", place.workspace, Int(Int64(bitPattern: place.device)), Int(Int64(bitPattern: place.inode)), place.born, place.policies, run)
        }
    }

    static func place(_ db: any SQLConnection, run: String) throws -> RunPlace? {
        guard let row = try db.row("SELECT workspace, workspace_dev, workspace_ino, workspace_born, policies FROM runs WHERE run_id = ?", run) else { return nil }
        return try RunPlace(row, run: run)
    }

    static func placeMismatch(run: String, recorded: RunPlace, given: RunPlace) -> String {
        if recorded.workspace != given.workspace {
            return "run \(run) ran in workspace \(recorded.workspace), not \(given.workspace)"
        }
        return "the workspace \(given.workspace) of run \(run) was replaced: it is not the directory the run used (device \(recorded.device), inode \(recorded.inode), born \(recorded.born); now device \(given.device), inode \(given.inode), born \(given.born))"
    }
}
