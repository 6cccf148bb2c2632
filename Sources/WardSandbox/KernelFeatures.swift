import CCap
import CWardOS
import CWardSpawn
import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// What this kernel and this process can use, probed once. `ward doctor` prints it.
public struct KernelFeatures: Sendable {
    /// seccomp filters can be loaded.
    public var seccomp: Bool
    /// Landlock ABI version, 0 when absent or disabled.
    public var landlockABI: Int
    /// Unprivileged user namespaces can be created here.
    public var userNamespaces: Bool
    /// We hold CAP_SYS_ADMIN and CAP_SETPCAP (root): securebits and the bounding set can
    /// be locked, namespaces made without a user namespace.
    public var privileged: Bool
    /// Highest capability number of this kernel.
    public var capLast: Int
    /// Where calls are contained for killing and limits.
    public var cgroups: CgroupLayout
    /// seccomp user notification with CONTINUE (5.5+): calls' effects can be traced.
    public var effectTrace: Bool = false

    /// Probes the running kernel.
    public static func probe() -> KernelFeatures {
        KernelFeatures(
            seccomp: ward_seccomp_available() != 0,
            landlockABI: Landlock.abiVersion(),
            userNamespaces: probeUserNamespaces(),
            privileged: hasCapability(CAP_SYS_ADMIN) && hasCapability(CAP_SETPCAP),
            capLast: Int(cap_max_bits()) - 1,
            cgroups: CgroupLayout.detect(),
            effectTrace: ward_trace_available() != 0
        )
    }

    static func hasCapability(_ cap: Int32) -> Bool {
        guard let caps = cap_get_proc() else { return false }
        defer { cap_free(UnsafeMutableRawPointer(caps)) }
        var value = CAP_CLEAR
        guard cap_get_flag(caps, cap_value_t(cap), CAP_EFFECTIVE, &value) == 0 else { return false }
        return value == CAP_SET
    }

    /// The names of the capabilities in our effective set, via libcap.
    public static func effectiveCapabilities() -> [String] {
        guard let caps = cap_get_proc() else { return [] }
        defer { cap_free(UnsafeMutableRawPointer(caps)) }
        var names: [String] = []
        for cap in 0..<Int32(cap_max_bits()) {
            var value = CAP_CLEAR
            if cap_get_flag(caps, cap_value_t(cap), CAP_EFFECTIVE, &value) == 0, value == CAP_SET,
               let name = cap_to_name(cap_value_t(cap)) {
                names.append(String(cString: name))
                cap_free(name)
            }
        }
        return names
    }

    private static func probeUserNamespaces() -> Bool {
        if let v = readSmallFile("/proc/sys/user/max_user_namespaces"), let n = Int(v), n == 0 { return false }
        if let v = readSmallFile("/proc/sys/kernel/unprivileged_userns_clone"), v == "0" { return false }
        return true
    }
}

/// Reads a small text file (proc, sysfs, cgroupfs), trimmed; nil when unreadable.
public func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    guard let bytes = OS.readAll(fd) else { return nil }
    var text = String(decoding: bytes, as: UTF8.self)
    while text.last == "\n" || text.last == " " { text.removeLast() }
    return text
}

/// Writes a small text file (cgroupfs, proc); the errno on failure.
@discardableResult
func writeSmallFile(_ path: String, _ text: String) -> Int32 {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return errno }
    defer { close(fd) }
    let n = text.withCString { write(fd, $0, strlen($0)) }
    return n < 0 ? errno : 0
}
