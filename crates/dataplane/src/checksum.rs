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

/// The checksum `csum` of data in which the 16-bit words `old` became `new` (RFC 1624,
/// equation 3): no need to read the rest of the data again. `old` and `new` are of the
/// same, even length.
#[inline]
pub(crate) fn update(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc = u64::from(!csum);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        acc += u64::from(!u16::from_be_bytes([o[0], o[1]]));
        acc += u64::from(u16::from_be_bytes([n[0], n[1]]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_equals_a_recomputation() {
        let mut data: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(37)).collect();
        let before = checksum(0, &data);
        let old = data[10..16].to_vec();
        data[10..16].copy_from_slice(&[0xc6, 0x12, 0xff, 0xff, 0x1f, 0x90]);
        assert_eq!(update(before, &old, &data[10..16]), checksum(0, &data));
    }
}
