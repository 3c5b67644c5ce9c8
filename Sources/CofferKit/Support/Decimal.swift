/// Decimal integers written and read as bytes, without a String in between: record lines
/// and CSV cells hold hundreds of thousands of them.
extension Array where Element == UInt8 {
    /// Appends the decimal digits of `value` (with a leading `-` when negative).
    mutating func appendDecimal(_ value: Int64) {
        if value < 0 { append(UInt8(ascii: "-")) }
        appendDecimal(value.magnitude)
    }

    /// Appends raw bytes with one copy: typed as `UInt8`, the append is a `memcpy` (as raw
    /// bytes it went through the generic sequence path, a byte at a time).
    @inline(__always)
    mutating func appendBytes(_ bytes: UnsafeRawBufferPointer) {
        append(contentsOf: bytes.assumingMemoryBound(to: UInt8.self))
    }

    /// Appends the decimal digits of `value`, most significant first.
    mutating func appendDecimal(_ value: UInt64) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0) // 24 bytes: room for UInt64.max's 20
        Swift.withUnsafeMutableBytes(of: &digits) { buffer in
            var rest = value
            var start = buffer.count
            repeat {
                start -= 1
                buffer[start] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            } while rest > 0
            appendBytes(UnsafeRawBufferPointer(rebasing: buffer[start...]))
        }
    }
}

extension FixedWidthInteger {
    /// A JSON integer's decimal digits (an optional leading `-`), exactly, without a String;
    /// `nil` for anything else or a value out of range.
    init?(decimal text: UnsafeRawBufferPointer) {
        var index = 0
        let negative = text.first == UInt8(ascii: "-")
        if negative { index = 1 }
        guard index < text.count else { return nil }
        var value: Self = 0
        while index < text.count {
            let digit = text[index] &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) = negative ? times.subtractingReportingOverflow(Self(digit)) : times.addingReportingOverflow(Self(digit))
            guard !overflow1, !overflow2 else { return nil }
            value = next
            index += 1
        }
        self = value
    }
}
