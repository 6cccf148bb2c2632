import Foundation

/// What /proc says about processes, for tests that look for leftovers or for ward's own
/// helper processes.
public enum Processes {
    /// Children of `parent` whose name (`comm`) is `comm`: zombies only, or the live ones.
    public static func children(of parent: Int32 = getpid(), named comm: String, zombies: Bool) -> Set<Int32> {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return Set(entries.compactMap { name -> Int32? in
            guard let pid = Int32(name), let data = FileManager.default.contents(atPath: "/proc/\(name)/stat") else { return nil }
            let text = String(decoding: data, as: UTF8.self)
            // "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            guard let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")") else { return nil }
            guard text[text.index(after: open)..<close] == comm else { return nil }
            let fields = text[text.index(after: close)...].split(separator: " ")
            return fields.count > 1 && (fields[0] == "Z") == zombies && Int32(fields[1]) == parent ? pid : nil
        })
    }
}
