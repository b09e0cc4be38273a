//! The Internet checksum (RFC 1071), for the few frames the director writes itself.

/// Adds `bytes` to a ones'-complement running sum (an odd last byte is padded with 0).
pub(crate) fn sum_words(mut acc: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for w in &mut chunks {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// The Internet checksum of `bytes`, starting from the running sum `acc`.
pub(crate) fn checksum(acc: u32, bytes: &[u8]) -> u16 {
    let mut s = u64::from(sum_words(acc, bytes));
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}
