#if canImport(Glibc)
import Glibc
#endif

/// `ward doctor`: each kernel feature, whether it is here, and what ward does without it.
public enum Doctor {
    public static func report(_ f: KernelFeatures) -> String {
        var rows: [(String, String, String)] = []
        rows.append(("seccomp", f.seccomp ? "yes" : "NO",
                     f.seccomp ? "syscall allowlists per tool" : "tools are not syscall-filtered"))
        let ll = f.landlockABI
        rows.append(("landlock", ll > 0 ? "ABI \(ll)" : "NO",
                     ll == 0 ? "tools are not confined to their read/write roots" :
                     ll < 4 ? "paths confined; TCP not restricted by Landlock (seccomp socket filter still applies)" :
                     ll < 6 ? "paths and TCP confined; abstract sockets and signals not scoped" :
                     "paths, TCP, abstract Unix sockets and signals confined"))
        rows.append(("user namespaces", f.userNamespaces ? "yes" : "NO",
                     f.userNamespaces ? "unprivileged runs get a PID namespace per call" : "unprivileged runs cannot kill daemonized descendants"))
        let caps = KernelFeatures.effectiveCapabilities()
        rows.append(("privileged", f.privileged ? "yes (\(caps.count) capabilities)" : (caps.isEmpty ? "no" : "no (\(caps.joined(separator: ", ")))"),
                     f.privileged ? "securebits locked, bounding set emptied, namespaces without a user namespace" :
                     "no capabilities to drop; no_new_privs still set"))
        let c = f.cgroups
        var cgroupState: [String] = []
        if let v2 = c.v2 { cgroupState.append("v2 at \(v2)" + (access(v2, W_OK) == 0 ? " (writable)" : " (read-only)")) }
        if let p = c.v1Pids { cgroupState.append("v1 pids at \(p)" + (access(p, W_OK) == 0 ? " (writable)" : " (read-only)")) }
        if let m = c.v1Memory { cgroupState.append("v1 memory at \(m)" + (access(m, W_OK) == 0 ? " (writable)" : " (read-only)")) }
        let delegated = [c.v2, c.v1Pids].compactMap { $0 }.contains { access($0, W_OK) == 0 }
        rows.append(("cgroups", cgroupState.isEmpty ? "NONE" : cgroupState.joined(separator: "; "),
                     delegated ? "one cgroup per call: whole tree killed (cgroup.kill or pids.max=0), pids/memory limits" :
                     "PID namespace per call to kill the tree; processes via RLIMIT_NPROC, memory via RLIMIT_AS"))
        let width = rows.map(\.0.count).max()! + 2
        let valueWidth = min(rows.map(\.1.count).max()! + 2, 60)
        return rows.map { $0.0.padding(to: width) + $0.1.padding(to: valueWidth) + $0.2 }.joined(separator: "\n")
    }
}
