// libFuzzer target for ward's JSON reader (every agent request goes through it): any input
// either is refused with an error or parses; what parses has a canonical form that parses
// again to the same canonical form. Built by Scripts/fuzz (not a SwiftPM target).
@_cdecl("LLVMFuzzerTestOneInput")
public func test(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: start, count: count))
    guard let value = try? JSONValue.parse(bytes) else { return 0 }
    let canonical = value.canonical
    guard let again = try? JSONValue.parse(canonical) else { fatalError("canonical form does not parse: \(canonical)") }
    guard again.canonical == canonical else { fatalError("canonical form is not a fixpoint: \(canonical) vs \(again.canonical)") }
    return 0
}
