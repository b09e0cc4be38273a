//! Fragments follow their flow.
//!
//! Only the first fragment of a datagram carries the ports, so only it can be scheduled.
//! When it is forwarded, the real server it went to is remembered under the datagram's
//! identity (source, destination, protocol, IP ID) in a small table of fixed size; later
//! fragments look it up and go the same way. Entries live [`FRAG_TTL`]; a full set
//! replaces its oldest entry. A later fragment whose first fragment was not seen (it
//! came first, or its entry was replaced or expired) is dropped and counted.
//!
//! Pure and allocation-free after construction; time is passed in.

use std::time::Duration;

use xdpvs_sched::conn::DestRef;
use xdpvs_sched::Time;

/// How long a datagram's fragments are followed after its first fragment.
pub const FRAG_TTL: Duration = Duration::from_secs(2);

/// Entries of a worker's table (datagrams in flight at once).
pub const FRAG_SLOTS: usize = 4096;

/// Entries looked at per datagram (a set).
const WAYS: usize = 4;

/// What identifies the fragments of one datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Source address.
    pub src: u32,
    /// Destination address (a VIP).
    pub dst: u32,
    /// IP identification.
    pub id: u16,
    /// IP protocol.
    pub proto: u8,
}

/// A datagram's identity as the fragment table hashes it (IPv4's [`FragKey`], IPv6's
/// [`crate::ipv6::FragKey6`]).
pub trait FragId: Copy + Default + Eq {
    /// The identity as two words.
    fn words(&self) -> (u64, u64);
}

impl FragId for FragKey {
    #[inline]
    fn words(&self) -> (u64, u64) {
        (
            u64::from(self.src) << 32 | u64::from(self.dst),
            u64::from(self.id) << 8 | u64::from(self.proto),
        )
    }
}

/// Where a datagram's fragments go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragDest {
    /// The real server of its first fragment.
    pub dest: DestRef,
    /// The service's counter slot.
    pub service_slot: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot<K> {
    key: K,
    to: FragDest,
    /// Nanoseconds; 0 when free.
    expires: u64,
}

/// The fragment table of one worker (IPv4 unless said).
#[derive(Debug)]
pub struct FragTable<K = FragKey> {
    slots: Box<[Slot<K>]>,
    sets: usize,
    seed: u64,
}

impl<K: FragId> FragTable<K> {
    /// A table of about `slots` entries (at least one set), hashed with `seed`.
    pub fn new(slots: usize, seed: u64) -> FragTable<K> {
        let sets = (slots / WAYS).max(1).next_power_of_two();
        FragTable {
            slots: vec![Slot::default(); sets * WAYS].into_boxed_slice(),
            sets,
            seed,
        }
    }

    fn set(&self, k: &K) -> usize {
        let (a, b) = k.words();
        let mut h = self.seed ^ a;
        h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= b;
        h = (h ^ h >> 29).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 32;
        (h as usize & (self.sets - 1)) * WAYS
    }

    /// Remembers where the datagram `k` went (its first fragment, at `now`).
    pub fn insert(&mut self, k: K, to: FragDest, now: Time) {
        let base = self.set(&k);
        let now_ns = now.as_nanos();
        let set = &mut self.slots[base..base + WAYS];
        // The same datagram, else a free or expired entry, else the oldest.
        let i = set
            .iter()
            .position(|s| s.expires > now_ns && s.key == k)
            .or_else(|| set.iter().position(|s| s.expires <= now_ns))
            .unwrap_or_else(|| {
                let mut oldest = 0;
                for (j, s) in set.iter().enumerate() {
                    if s.expires < set[oldest].expires {
                        oldest = j;
                    }
                }
                oldest
            });
        set[i] = Slot {
            key: k,
            to,
            expires: now.after(FRAG_TTL).as_nanos().max(1),
        };
    }

    /// Where a later fragment of `k` goes, if its first fragment was seen.
    pub fn lookup(&self, k: &K, now: Time) -> Option<FragDest> {
        let base = self.set(k);
        let now_ns = now.as_nanos();
        self.slots[base..base + WAYS]
            .iter()
            .find(|s| s.expires > now_ns && s.key == *k)
            .map(|s| s.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(i: u32) -> FragKey {
        FragKey {
            src: 0xc613_0000 + i,
            dst: 0xc612_0064,
            id: (i * 7) as u16,
            proto: 17,
        }
    }

    fn to(slot: u32) -> FragDest {
        FragDest {
            dest: DestRef { slot, gen: 1 },
            service_slot: 0,
        }
    }

    #[test]
    fn later_fragments_find_their_first_until_it_expires() {
        let mut t = FragTable::new(64, 1);
        let now = Time::from_secs(10);
        assert_eq!(t.lookup(&key(1), now), None);
        t.insert(key(1), to(3), now);
        assert_eq!(t.lookup(&key(1), now), Some(to(3)));
        assert_eq!(t.lookup(&key(2), now), None);
        let mut other = key(1);
        other.id ^= 1;
        assert_eq!(t.lookup(&other, now), None);
        let late = now.after(FRAG_TTL);
        assert_eq!(t.lookup(&key(1), late), None);
        // A first fragment seen again (a retransmitted datagram) moves it.
        t.insert(key(1), to(4), late);
        assert_eq!(t.lookup(&key(1), late), Some(to(4)));
    }

    proptest! {
        /// Against a model: whatever is found is what was inserted for that key and not
        /// yet expired; the most recent insert of a key is always found while it lives
        /// and the table has not seen more than a set's worth of newer datagrams.
        #[test]
        fn never_a_wrong_destination(ops in prop::collection::vec((0u32..40, 0u32..8, 0u64..3000), 1..300)) {
            let mut t = FragTable::new(16, 7);
            let mut model: std::collections::HashMap<u32, (u32, u64)> = Default::default();
            let mut now = Time::from_secs(1);
            for (k, slot, dt) in ops {
                now = now.after(Duration::from_millis(dt));
                if slot == 0 {
                    if let Some(found) = t.lookup(&key(k), now) {
                        let (want, at) = model[&k];
                        prop_assert_eq!(found, to(want));
                        prop_assert!(now.since(Time::from_nanos(at)) < FRAG_TTL);
                    }
                } else {
                    t.insert(key(k), to(slot), now);
                    model.insert(k, (slot, now.as_nanos()));
                    prop_assert_eq!(t.lookup(&key(k), now), Some(to(slot)));
                }
            }
        }
    }
}
