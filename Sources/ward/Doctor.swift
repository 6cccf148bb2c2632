import Foundation
import WardCore
import WardLedger
import WardSandbox

#if canImport(Glibc)
import Glibc
#endif

/// `ward doctor`: each kernel feature, whether it is here, and what ward does without it.
enum Doctor {
    /// One feature as found on this machine.
    struct Feature: Sendable, Hashable {
        /// Stable identifier for `--json` ("seccomp", "landlock", "user-namespaces", "privileged",
        /// "isolation", "cgroups").
        var key: String
        /// As people read it.
        var name: String
        var available: Bool
        /// What is here: "yes", "ABI 6", the cgroup mounts, … (one item per line for the table).
        var state: [String]
        /// What ward does on this machine.
        var effect: String
        /// What ward does on a machine without the feature.
        var without: String
    }

    static func features(_ f: KernelFeatures) -> [Feature] {
        var rows: [Feature] = []
        let noSeccomp = "tools are not syscall-filtered"
        rows.append(Feature(key: "seccomp", name: "seccomp", available: f.seccomp, state: [f.seccomp ? "yes" : "NO"],
                            effect: f.seccomp ? "syscall allowlists per tool" : noSeccomp, without: noSeccomp))
        let ll = f.landlockABI
        let noLandlock = "tools are not confined to their read/write roots"
        rows.append(Feature(key: "landlock", name: "landlock", available: ll > 0, state: [ll > 0 ? "ABI \(ll)" : "NO"],
                            effect: ll == 0 ? noLandlock :
                                ll < 4 ? "paths confined; TCP not restricted by Landlock (seccomp socket filter still applies)" :
                                ll < 6 ? "paths and TCP confined; abstract sockets and signals not scoped" :
                                "paths, TCP, abstract Unix sockets and signals confined",
                            without: noLandlock))
        let noUserNS = "unprivileged runs cannot kill daemonized descendants"
        rows.append(Feature(key: "user-namespaces", name: "user namespaces", available: f.userNamespaces, state: [f.userNamespaces ? "yes" : "NO"],
                            effect: f.userNamespaces ? "an unprivileged ward's tools run in a user namespace of their own (and a PID namespace where one is needed)" : noUserNS, without: noUserNS))
        let caps = KernelFeatures.effectiveCapabilities()
        let unprivileged = "no capabilities to drop; no_new_privs still set"
        rows.append(Feature(key: "privileged", name: "privileged", available: f.privileged,
                            state: [f.privileged ? "yes (\(caps.count) capabilities)" : (caps.isEmpty ? "no" : "no (\(caps.joined(separator: ", ")))")],
                            effect: (f.privileged ? "securebits locked, bounding set emptied, namespaces without a user namespace" : unprivileged)
                                + "; " + toolIdentity(f),
                            without: unprivileged))
        let isolation = isolation(f)
        rows.append(Feature(key: "isolation", name: "tool isolation", available: isolation.holds, state: [isolation.state],
                            effect: isolation.effect,
                            without: "below Landlock ABI 6: no zygotes, a PID namespace per call; without Landlock: only the PID namespace keeps tools from ward and other calls"))
        let c = f.cgroups
        var cgroupState: [String] = []
        if let v2 = c.v2 { cgroupState.append("v2 at \(v2)" + (access(v2, W_OK) == 0 ? " (writable)" : " (read-only)")) }
        if let p = c.v1Pids { cgroupState.append("v1 pids at \(p)" + (access(p, W_OK) == 0 ? " (writable)" : " (read-only)")) }
        if let m = c.v1Memory { cgroupState.append("v1 memory at \(m)" + (access(m, W_OK) == 0 ? " (writable)" : " (read-only)")) }
        let delegated = [c.v2, c.v1Pids].compactMap { $0 }.contains { access($0, W_OK) == 0 }
        let noCgroups = "PID namespace per call to kill the tree; processes via RLIMIT_NPROC, memory via RLIMIT_AS"
        rows.append(Feature(key: "cgroups", name: "cgroups", available: delegated, state: cgroupState.isEmpty ? ["NONE"] : cgroupState,
                            effect: delegated ? "one cgroup per call: whole tree killed (cgroup.kill or pids.max=0), pids/memory limits" : noCgroups,
                            without: noCgroups))
        let noTrace = "calls run untraced: `ward ledger show` and `ledger effects` have no effects to show"
        rows.append(Feature(key: "effect-trace", name: "effect trace", available: f.effectTrace, state: [f.effectTrace ? "yes" : "NO"],
                            effect: f.effectTrace ? "seccomp user notification: traced calls record the files, programs and sockets they touch" : noTrace,
                            without: noTrace))
        return rows
    }

    /// `KernelFeatures.isolation` in words: `holds` is false when some of it is not
    /// separated here.
    static func isolation(_ f: KernelFeatures) -> (holds: Bool, state: String, effect: String) {
        let isolation = f.isolation
        var parts: [String] = []
        var state: [String] = []
        switch isolation.tracing {
        case .landlockDomain:
            state.append("Landlock domain per call")
            parts.append("ptrace, process_vm_*, pidfd_getfd, kcmp reach only the call's own processes (a Landlock domain per call)")
        case .pidNamespace:
            parts.append("ptrace, process_vm_*, pidfd_getfd, kcmp: ward and other calls hidden by a PID namespace per call")
        case .notSeparated:
            parts.append("ptrace, process_vm_*, pidfd_getfd, kcmp NOT separated from ward's uid (no Landlock, no namespaces)")
        }
        switch isolation.signals {
        case .scoped:
            parts.append("signals and abstract sockets scoped; tools start from per-tool zygotes")
        case .pidNamespace:
            state.append("PID namespace per call")
            parts.append("signals not scoped: no zygotes, each call in a PID namespace that hides ward, zygotes and other calls (slower spawn)")
        case .notSeparated:
            parts.append("signals NOT separated: a tool can signal ward and other calls of its uid")
        }
        switch isolation.ward {
        case .nonDumpable: parts.append("ward non-dumpable (tracing it needs CAP_SYS_PTRACE)")
        case .userNamespace: parts.append("tools in a user namespace of their own (tracing ward needs a capability in ward's)")
        case .dumpable: parts.append("ward stays dumpable and tools share its user namespace (unprivileged, no user namespaces)")
        }
        parts.append("tools get oom_score_adj 1000, ward keeps its own")
        return (isolation.holds, state.isEmpty ? "NONE" : state.joined(separator: " + "), parts.joined(separator: "; "))
    }

    /// Who tools run as here, in words.
    static func toolIdentity(_ f: KernelFeatures) -> String {
        if f.privileged {
            return "tools run as " + ((try? ToolIdentity.resolve(nil)).map { "\($0)" } ?? "the --tool-user") + " (--tool-user), never uid 0"
        }
        guard f.userNamespaces else { return "tools keep ward's uid (no user namespaces)" }
        switch ToolIdentity.subordinate() {
        case .success(let identity): return "tools run as \(identity), a subordinate identity of ward's user, not as ward's uid"
        case .failure(let why): return "tools keep ward's uid, in a user namespace of their own (\(why.message)): a .git they write is one your git trusts"
        }
    }

    /// The table for people: columns sized to their longest entry, so every column starts at
    /// one offset. A feature's further state items (cgroup mounts, long paths) go on lines of
    /// their own below, where no column follows, so they do not widen the table.
    static func report(_ f: KernelFeatures) -> String {
        let rows = features(f)
        let header = ("FEATURE", "HERE", "WHAT WARD DOES")
        let nameWidth = max(header.0.count, rows.map(\.name.count).max() ?? 0) + 2
        let stateWidth = max(header.1.count, rows.compactMap(\.state.first).map(\.count).max() ?? 0) + 2
        func line(_ a: String, _ b: String, _ c: String) -> String {
            c.isEmpty ? a.padding(to: nameWidth) + b : a.padding(to: nameWidth) + b.padding(to: stateWidth) + c
        }
        var lines = [line(header.0, header.1, header.2)]
        for row in rows {
            lines.append(line(row.name, row.state.first ?? "", row.effect))
            for more in row.state.dropFirst() { lines.append(line("", more, "")) }
        }
        return lines.joined(separator: "\n")
    }

    /// `ward doctor --json`: `{"features": [{"key", "name", "available", "state", "effect", "without"}]}`.
    static func json(_ f: KernelFeatures) -> JSONValue {
        .object(["features": .array(features(f).map { row in
            .object(["key": .string(row.key), "name": .string(row.name), "available": .bool(row.available),
                     "state": .string(row.state.joined(separator: "; ")), "effect": .string(row.effect), "without": .string(row.without)])
        })])
    }

    /// The ledger's lines: where it is, its schema, how commits wait, and the server's clock.
    static func report(_ h: LedgerHealth) -> String {
        var lines = ["ledger: \(h.backend) at \(h.location)",
                     "  schema version \(h.schemaVersion)\(h.schemaVersion == h.expectedSchemaVersion ? " (current)" : ", this ward writes \(h.expectedSchemaVersion)")",
                     "  durability: \(h.durability)"]
        if let v = h.serverVersion { lines.append("  server: PostgreSQL \(v)") }
        if let skew = h.clockSkewMs, let rt = h.roundTripMs {
            lines.append(String(format: "  clock skew: %+.1f ms (± %.1f ms; leases go by the server's clock, event times by each host's)", skew, rt / 2))
        }
        if let live = h.liveOwners, let lease = h.leaseSeconds {
            lines.append("  live supervisors: \(live) (lease \(lease.formatted()) s)")
        }
        return lines.joined(separator: "\n")
    }

    /// Exit 1 when the ledger needs an operator: a schema this ward does not write, or a clock
    /// more than a second off the server's. Leases are judged by the server's clock, but the
    /// times this host writes into events are its own: runs that move between hosts would
    /// record an order of events their times contradict.
    static func judge(_ h: LedgerHealth?) throws {
        guard let h else { return }
        if h.schemaVersion != h.expectedSchemaVersion {
            throw CLIError(message: "the ledger's schema is version \(h.schemaVersion); this ward writes \(h.expectedSchemaVersion)", exitCode: 1)
        }
        if let skew = h.clockSkewMs, abs(skew) > 1000 {
            throw CLIError(message: String(format: "this host's clock is %.0f ms off the ledger server's: the event times it records would be off as much", skew), exitCode: 1)
        }
    }
}
