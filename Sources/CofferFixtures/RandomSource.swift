/// SplitMix64: small, fast and the same on every machine, so a seed names one volume.
public struct RandomSource: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Fills `buffer` with pseudo-random bytes.
    public mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress else { return }
        let words = buffer.count / 8
        for i in 0..<words { base.storeBytes(of: next(), toByteOffset: i * 8, as: UInt64.self) }
        var last = next()
        for i in (words * 8)..<buffer.count {
            base.storeBytes(of: UInt8(truncatingIfNeeded: last), toByteOffset: i, as: UInt8.self)
            last >>= 8
        }
    }
}
