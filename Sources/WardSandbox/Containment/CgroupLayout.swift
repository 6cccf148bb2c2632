#if canImport(Glibc)
import Glibc
#endif

/// The cgroup hierarchies this process could contain calls in: a cgroup v2 directory (users'
/// systemd machines; `cgroup.kill` kills a whole tree at once) and the v1 `pids` and
/// `memory` controllers (hybrid machines such as this project's CI).
public struct CgroupLayout: Sendable {
    /// Our own cgroup in the v2 hierarchy, under which ward creates one cgroup per call.
    public var v2: String?
    /// Our own cgroup in the v1 pids hierarchy.
    public var v1Pids: String?
    /// Our own cgroup in the v1 memory hierarchy.
    public var v1Memory: String?

    public init(v2: String? = nil, v1Pids: String? = nil, v1Memory: String? = nil) {
        self.v2 = v2
        self.v1Pids = v1Pids
        self.v1Memory = v1Memory
    }

    /// Reads /proc/self/mountinfo and /proc/self/cgroup.
    public static func detect() -> CgroupLayout {
        var layout = CgroupLayout()
        let memberships = (readSmallFile("/proc/self/cgroup") ?? "").split(separator: "\n").compactMap { line -> (String, String)? in
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { return nil }
            return (String(parts[1]), String(parts[2]))
        }
        func ownPath(controller: String) -> String? {
            memberships.first { $0.0.split(separator: ",").contains(Substring(controller)) || ($0.0.isEmpty && controller.isEmpty) }?.1
        }
        for line in (readSmallFile("/proc/self/mountinfo") ?? "").split(separator: "\n") {
            let halves = line.split(separator: " - ", omittingEmptySubsequences: false)
            guard halves.count == 2 else { continue }
            let left = halves[0].split(separator: " ")
            let right = halves[1].split(separator: " ")
            guard left.count >= 5, right.count >= 3 else { continue }
            let root = String(left[3]), mountPoint = String(left[4])
            let fsType = right[0], superOptions = right[2].split(separator: ",")
            func join(_ own: String?) -> String? {
                guard var own else { return nil }
                if root != "/" {
                    guard own.hasPrefix(root) else { return nil }
                    own = String(own.dropFirst(root.count))
                }
                return own == "/" || own.isEmpty ? mountPoint : mountPoint + own
            }
            if fsType == "cgroup2", layout.v2 == nil {
                layout.v2 = join(ownPath(controller: ""))
            } else if fsType == "cgroup" {
                if superOptions.contains("pids"), layout.v1Pids == nil { layout.v1Pids = join(ownPath(controller: "pids")) }
                if superOptions.contains("memory"), layout.v1Memory == nil { layout.v1Memory = join(ownPath(controller: "memory")) }
            }
        }
        return layout
    }
}

extension CgroupLayout {
    /// Whether a call's memory can be limited as a whole here: a writable memory controller
    /// (v1, or v2 delegated to ward's own cgroup, as `systemd-run --user -p Delegate=yes`
    /// gives an unprivileged user). Without one, `limits.memory` is RLIMIT_AS, which the
    /// kernel applies to each process on its own.
    public var limitsMemoryPerCall: Bool {
        if let v1 = v1Memory, access(v1, W_OK) == 0 { return true }
        guard let v2, access(v2, W_OK) == 0 else { return false }
        return (readSmallFile(v2 + "/cgroup.controllers") ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("memory")
    }
}
