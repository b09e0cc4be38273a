//! Small, fast, deterministic hash functions.
//!
//! Hashing schedulers must place a client identically on every worker, after every
//! restart and on a standby director, so they use fixed functions. The connection table
//! adds a per-table seed (chosen by the shell) so that crafted flows cannot aim at one
//! probe chain.

/// An address as one 32-bit word for the hashing schedulers: an IPv4 address as it is,
/// an IPv6 address folded (its four words xored, as IPVS's source hashing does).
#[inline]
pub fn addr_word(a: std::net::IpAddr) -> u32 {
    match a {
        std::net::IpAddr::V4(a) => u32::from(a),
        std::net::IpAddr::V6(a) => {
            let v = u128::from(a);
            (v as u32) ^ ((v >> 32) as u32) ^ ((v >> 64) as u32) ^ ((v >> 96) as u32)
        }
    }
}

/// Fibonacci hashing of a 32-bit value to `bits` bits (the multiplier is 2^32 / phi).
#[inline]
pub const fn fib32(v: u32, bits: u32) -> u32 {
    v.wrapping_mul(0x61C8_8647) >> (32 - bits)
}

/// A strong 64-bit finaliser (the `splitmix64` mix): every input bit affects every output bit.
#[inline]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Folded 64x64->128 multiply: a fast mix of two words.
#[inline]
pub const fn fold_mul(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fib32_spreads_consecutive_addresses() {
        let mut seen = [false; 256];
        for v in 0..256u32 {
            seen[fib32(0xC612_0000 + v, 8) as usize] = true;
        }
        // Consecutive client addresses land on many different buckets.
        assert!(seen.iter().filter(|&&s| s).count() > 150);
    }

    #[test]
    fn mix64_is_not_identity() {
        assert_ne!(mix64(1), 1);
        assert_ne!(mix64(1), mix64(2));
    }
}
