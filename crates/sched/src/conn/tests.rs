use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::tcp::flags::{ACK, FIN, SYN};

const D0: DestRef = DestRef { slot: 0, gen: 1 };
const D1: DestRef = DestRef { slot: 1, gen: 1 };

fn key(client_last: u8, cport: u16) -> ConnKey {
    ConnKey {
        proto: Protocol::Tcp,
        client: Ipv4Addr::new(198, 19, 0, client_last),
        cport,
        vip: Ipv4Addr::new(198, 18, 0, 100),
        vport: 80,
    }
}

fn table(cap: usize) -> ConnTable {
    ConnTable::new(cap, 16, Timeouts::default(), 42).expect("valid capacity")
}

#[test]
fn capacity_is_checked() {
    assert!(ConnTable::<Ipv4Addr>::new(0, 1, Timeouts::default(), 0).is_err());
    assert!(
        ConnTable::<Ipv4Addr>::new(ConnTable::MAX_CAPACITY + 1, 1, Timeouts::default(), 0).is_err()
    );
    let t = table(1000);
    assert!(t.slot_count() * 3 >= 1000 * 4);
    assert_eq!(t.slot_count() % 16, 0);
    assert_eq!(t.memory_bytes(), t.slot_count() * 33);
    // Not a power of two: 10M connections take 13.4M slots, 440 MB with their tags.
    assert_eq!(slots_for(10_000_000), 13_333_344);
    assert!(slots_for(10_000_000) * ENTRY_BYTES < 450_000_000);
    assert!(matches!(
        ConnTable::<Ipv4Addr>::new(10, MAX_DEST_SLOTS + 1, Timeouts::default(), 0),
        Err(ConnTableError::Dests(_))
    ));
}

#[test]
fn insert_lookup_state_and_loads() {
    let mut t = table(100);
    let now = Time::from_secs(1);
    assert_eq!(t.lookup(&key(1, 1000), now), None);
    let i = t
        .insert(&key(1, 1000), D0, State::None, now, None)
        .expect("room");
    assert_eq!(
        t.load(D0),
        Load {
            active: 0,
            inactive: 1
        }
    );
    assert_eq!(t.seen(i, now, Some(SYN)), State::SynRecv);
    assert_eq!(t.seen(i, now, Some(ACK)), State::Established);
    assert_eq!(
        t.load(D0),
        Load {
            active: 1,
            inactive: 0
        }
    );
    let i = t.lookup(&key(1, 1000), now).expect("present");
    assert_eq!(t.entry(i).state(), State::Established);
    assert_eq!(t.entry(i).last_seen_tick(), tick(now));
    assert_eq!(t.seen(i, now, Some(FIN | ACK)), State::FinWait);
    assert_eq!(
        t.load(D0),
        Load {
            active: 0,
            inactive: 1
        }
    );
    t.remove(i, now);
    assert_eq!(t.load(D0), Load::default());
    assert!(t.is_empty());
}

#[test]
fn expiry_follows_state_timeouts() {
    let mut t = table(100);
    let i = t
        .insert(&key(1, 1), D0, State::None, Time::ZERO, None)
        .expect("room");
    t.seen(i, Time::ZERO, Some(SYN)); // SYN_RECV: 60 s
    assert!(t.lookup(&key(1, 1), Time::from_secs(60)).is_some());
    assert!(t.lookup(&key(1, 1), Time::from_secs(121)).is_none());
    assert_eq!(t.len(), 0, "an expired entry met by a lookup is removed");
    assert_eq!(t.load(D0), Load::default());
}

#[test]
fn sweep_is_bounded_and_complete() {
    let mut t = table(1000);
    for c in 0..500u16 {
        t.insert(&key(1, c), D0, State::Udp, Time::ZERO, None)
            .expect("room");
    }
    let later = Time::from_secs(301);
    assert_eq!(t.expire(later, 0), 0);
    let first = t.expire(later, 10);
    assert!(first <= 10);
    let mut total = first;
    for _ in 0..t.slot_count() {
        total += t.expire(later, 64);
    }
    assert_eq!(total, 500);
    assert!(t.is_empty());
    assert_eq!(t.load(D0), Load::default());
}

#[test]
fn full_table_refuses_and_recovers() {
    let mut t = table(4);
    for c in 0..4 {
        t.insert(&key(1, c), D0, State::Udp, Time::ZERO, None)
            .expect("room");
    }
    assert_eq!(
        t.insert(&key(1, 9), D0, State::Udp, Time::ZERO, None),
        Err(TableFull)
    );
    let i = t.lookup(&key(1, 2), Time::ZERO).expect("present");
    t.remove(i, Time::ZERO);
    assert!(t
        .insert(&key(1, 9), D0, State::Udp, Time::ZERO, None)
        .is_ok());
}

#[test]
fn templates_live_while_they_control_connections() {
    let mut t = table(100);
    let timeout = Duration::from_secs(30);
    let k = key(7, 5555);
    let tpl = t
        .insert_template(&k, 24, D1, timeout, Time::ZERO)
        .expect("room");
    assert_eq!(t.loads().persistent(D1), 1);
    assert_eq!(t.entry(tpl).key().client, Ipv4Addr::new(198, 19, 0, 0));
    let c = t
        .insert(&k, D1, State::None, Time::ZERO, Some(tpl))
        .expect("room");
    assert!(t.entry(c).is_persistent());
    t.seen(c, Time::ZERO, Some(SYN)); // SYN_RECV: lives 60 s
                                      // Another client of the same /24 finds the template.
    let other = key(99, 1);
    let found = t
        .lookup_template(&other, 24, Time::from_secs(10))
        .expect("template");
    assert_eq!(t.entry(found).controlled(), 1);
    // Long after the timeout the template lives on while its connection does.
    let c = t
        .lookup(&k, Time::from_secs(50))
        .expect("SYN_RECV still alive");
    assert_eq!(
        t.seen(c, Time::from_secs(50), Some(ACK)),
        State::Established
    );
    assert!(t
        .lookup_template(&other, 24, Time::from_secs(100))
        .is_some());
    // The connection ends at 100 s: the template lasts 30 s more.
    let c = t.lookup(&k, Time::from_secs(100)).expect("present");
    t.remove(c, Time::from_secs(100));
    assert!(t
        .lookup_template(&other, 24, Time::from_secs(130))
        .is_some());
    assert!(t
        .lookup_template(&other, 24, Time::from_secs(131))
        .is_none());
    assert_eq!(t.loads().persistent(D1), 0);
    assert!(t.is_empty());
}

#[test]
fn client_port_zero_does_not_collide_with_a_template() {
    let mut t = table(100);
    let mut k = key(7, 0);
    k.client = Ipv4Addr::new(198, 19, 0, 7);
    let tpl = t
        .insert_template(&k, 32, D1, Duration::from_secs(30), Time::ZERO)
        .expect("room");
    assert_eq!(t.lookup(&k, Time::ZERO), None);
    let c = t
        .insert(&k, D0, State::None, Time::ZERO, None)
        .expect("room");
    assert_ne!(c, tpl);
    let found = t.lookup_template(&k, 32, Time::ZERO).expect("tpl");
    assert_eq!(t.entry(found).dest(), D1);
}

#[test]
fn reused_dest_slot_starts_from_zero() {
    let mut t = table(100);
    t.insert(&key(1, 1), D0, State::None, Time::ZERO, None)
        .expect("room");
    let new_gen = DestRef { slot: 0, gen: 2 };
    assert_eq!(t.load(new_gen), Load::default());
    let i = t
        .insert(&key(1, 2), new_gen, State::None, Time::ZERO, None)
        .expect("room");
    assert_eq!(
        t.load(new_gen),
        Load {
            active: 0,
            inactive: 1
        }
    );
    assert_eq!(
        t.load(D0),
        Load::default(),
        "old generation no longer counted"
    );
    // Removing the old generation's entry must not disturb the new counts.
    let old = t.lookup(&key(1, 1), Time::ZERO).expect("present");
    t.remove(old, Time::ZERO);
    assert_eq!(
        t.load(new_gen),
        Load {
            active: 0,
            inactive: 1
        }
    );
    let j = t.lookup(&key(1, 2), Time::ZERO).expect("present");
    assert_eq!(j, i);
    t.remove(j, Time::ZERO);
    assert_eq!(t.load(new_gen), Load::default());
}

#[derive(Debug, Clone)]
enum Op {
    /// Look up a key; if absent, insert it as UDP (timeout 300 s) or TCP SYN (60 s).
    Touch { client: u8, port: u16, tcp: bool },
    /// Time passes.
    Advance { secs: u16 },
    /// Sweep with a budget.
    Expire { budget: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..8, 0u16..24, any::<bool>()).prop_map(|(client, port, tcp)| Op::Touch { client, port, tcp }),
        2 => (0u16..200).prop_map(|secs| Op::Advance { secs }),
        2 => (0u16..64).prop_map(|budget| Op::Expire { budget }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The table behaves like a HashMap of live entries: a lookup finds exactly the
    /// entries the model holds alive, the sweep never removes a live entry, inserts fail
    /// only at capacity, an insert into a full table succeeds only by evicting exactly
    /// one half-open TCP connection (never an established one, never a UDP flow), the
    /// table never exceeds capacity, and per-real-server loads equal a recount.
    #[test]
    fn behaves_like_a_hashmap(cap in 1usize..64, seed in any::<u64>(), ops in prop::collection::vec(op(), 1..400)) {
        let mut t = ConnTable::new(cap, 4, Timeouts::default(), seed).expect("valid");
        let timeouts = Timeouts::default();
        // key -> (last_seen, timeout secs, dest, state)
        let mut model: HashMap<ConnKey, (u64, u64, DestRef, State)> = HashMap::new();
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Touch { client, port, tcp } => {
                    let mut k = key(client, port);
                    if !tcp { k.proto = Protocol::Udp; }
                    let live = model.get(&k).is_some_and(|&(seen, to, _, _)| now - seen <= to);
                    let found = t.lookup(&k, Time::from_secs(now));
                    prop_assert_eq!(found.is_some(), live, "lookup of {:?} at {}", k, now);
                    if !live { model.remove(&k); }
                    match found {
                        Some(i) => {
                            let e = t.entry(i);
                            prop_assert_eq!(e.key(), k);
                            let (_, _, d, _) = model[&k];
                            prop_assert_eq!(e.dest(), d);
                            // UDP refresh; TCP segment with ACK keeps SYN_RECV -> ESTABLISHED
                            let st = t.seen(i, Time::from_secs(now), if tcp { Some(ACK) } else { None });
                            let to = timeouts.get(st).as_secs();
                            model.insert(k, (now, to, d, st));
                        }
                        None => {
                            let d = DestRef { slot: u32::from(client % 4), gen: 1 };
                            let (st, flags) = if tcp { (State::None, Some(SYN)) } else { (State::Udp, None) };
                            let full = t.len() == cap;
                            let evictions = t.evictions();
                            match t.insert(&k, d, st, Time::from_secs(now), None) {
                                Ok(i) => {
                                    let st = t.seen(i, Time::from_secs(now), flags);
                                    if full {
                                        prop_assert_eq!(t.evictions(), evictions + 1);
                                        let present: std::collections::HashSet<ConnKey> = t.iter().map(|e| e.key()).collect();
                                        let gone: Vec<ConnKey> = model.keys().filter(|m| !present.contains(m)).copied().collect();
                                        prop_assert_eq!(gone.len(), 1, "one entry evicted: {:?}", gone);
                                        let (_, _, _, gst) = model[&gone[0]];
                                        prop_assert!(gone[0].proto == Protocol::Tcp && matches!(gst, State::SynRecv | State::None), "evicted {:?} in {:?}", gone[0], gst);
                                        model.remove(&gone[0]);
                                    }
                                    model.insert(k, (now, timeouts.get(st).as_secs(), d, st));
                                }
                                Err(TableFull) => prop_assert!(full, "refused below capacity"),
                            }
                        }
                    }
                }
                Op::Advance { secs } => now += u64::from(secs),
                Op::Expire { budget } => {
                    t.expire(Time::from_secs(now), usize::from(budget));
                    let present: HashMap<ConnKey, DestRef> = t.iter().map(|e| (e.key(), e.dest())).collect();
                    for (k, &(seen, to, _, _)) in &model {
                        if !present.contains_key(k) {
                            prop_assert!(now - seen > to, "sweep removed live {:?}", k);
                        }
                    }
                    model.retain(|k, _| present.contains_key(k));
                }
            }
            prop_assert!(t.len() <= cap);
            prop_assert_eq!(t.len(), t.iter().count());
            prop_assert_eq!(t.len(), model.len());
            for slot in 0..4u32 {
                let d = DestRef { slot, gen: 1 };
                let mut want = Load::default();
                for e in t.iter().filter(|e| e.dest() == d) {
                    if e.state().is_active() { want.active += 1 } else { want.inactive += 1 }
                }
                prop_assert_eq!(t.load(d), want);
            }
        }
    }
}

/// A UDP connection of `k` at time 0 under a /32 template of 30 s to D1: its index.
fn persistent_udp(t: &mut ConnTable, k: &ConnKey) -> usize {
    let tpl = t
        .insert_template(k, 32, D1, Duration::from_secs(30), Time::ZERO)
        .expect("room");
    t.insert(k, D1, State::Udp, Time::ZERO, Some(tpl))
        .expect("room")
}

#[test]
fn a_late_sweep_dates_template_release_from_the_connection_expiry() {
    let mut t = table(100);
    let k = key(7, 5555);
    let c = persistent_udp(&mut t, &k);
    t.seen(c, Time::ZERO, None); // UDP: expires at 300 s
                                 // The sweep only comes round at 1000 s: the template ended at 300 + 30 s.
    let slots = t.slot_count();
    t.expire(Time::from_secs(1000), slots);
    assert!(t.lookup_template(&k, 32, Time::from_secs(1000)).is_none());
    assert!(t.is_empty());
}

#[test]
fn listing_in_pieces_sees_every_entry_once_with_its_time_left() {
    let mut t = table(1000);
    let t0 = Time::from_secs(10);
    for c in 0..300u16 {
        t.insert(
            &key((c % 250) as u8, 1000 + c),
            D0,
            State::SynRecv,
            t0,
            None,
        )
        .expect("room");
    }
    let now = Time::from_secs(12);
    let mut seen = Vec::new();
    let mut cursor = Some(0);
    let mut pieces = 0;
    while let Some(c) = cursor {
        // A small buffer and a small slot budget: many pieces, none larger than asked.
        let mut out = Vec::with_capacity(7);
        cursor = t.list(c, 64, now, &mut out);
        assert!(
            out.len() <= 7 && out.capacity() == 7,
            "the buffer never grows"
        );
        seen.extend(out);
        pieces += 1;
    }
    assert!(pieces > 300 / 7);
    assert_eq!(seen.len(), 300);
    let mut keys: Vec<ConnKey<IpAddr>> = seen.iter().map(|l| l.key).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 300);
    // Exact to a tick of the entries' coarse clock.
    let left = Timeouts::default().get(State::SynRecv) - Duration::from_secs(2);
    let tick = Duration::from_nanos(TICK_NANOS);
    assert!(
        seen.iter().all(|l| l.expires_in.abs_diff(left) <= tick),
        "{:?} left, within a tick of {left:?}",
        seen[0].expires_in
    );
}

fn key6(client: &str, cport: u16) -> ConnKey<Ipv6Addr> {
    ConnKey {
        proto: Protocol::Tcp,
        client: client.parse().expect("address"),
        cport,
        vip: "2001:2::100".parse().expect("address"),
        vport: 80,
    }
}

#[test]
fn ipv6_entries_are_one_cache_line_and_share_the_workers_loads() {
    assert_eq!(std::mem::size_of::<Entry<Ipv4Addr>>(), 32);
    assert_eq!(std::mem::size_of::<Entry<Ipv6Addr>>(), 64);
    assert_eq!(ENTRY_BYTES, 33);
    assert_eq!(ENTRY_BYTES_V6, 65);
    let v4 = table(100);
    let mut t = ConnTable::<Ipv6Addr>::new(100, 0, Timeouts::default(), 7).expect("valid");
    t.share_loads(v4.loads().clone());
    assert_eq!(t.memory_bytes(), t.slot_count() * 65);
    let now = Time::from_secs(1);
    let i = t
        .insert(&key6("2001:2:1::1", 1000), D0, State::None, now, None)
        .expect("room");
    t.seen(i, now, Some(SYN));
    t.seen(i, now, Some(ACK));
    // The IPv4 table of the same worker reports the IPv6 connection's load.
    assert_eq!(v4.load(D0).active, 1);
    // Addresses differing only in their last bits, or only in their first, are distinct.
    assert_eq!(t.lookup(&key6("2001:2:1::2", 1000), now), None);
    assert_eq!(t.lookup(&key6("2001:3:1::1", 1000), now), None);
    let i = t.lookup(&key6("2001:2:1::1", 1000), now).expect("present");
    assert_eq!(t.entry(i).key(), key6("2001:2:1::1", 1000));
    assert_eq!(t.entry(i).state(), State::Established);
    // Expiry as for IPv4.
    assert_eq!(
        t.lookup(&key6("2001:2:1::1", 1000), Time::from_secs(1_000_000)),
        None
    );
    assert_eq!(v4.load(D0), Load::default());
}

#[test]
fn ipv6_templates_are_keyed_by_the_client_prefix() {
    let mut t = ConnTable::<Ipv6Addr>::new(100, 16, Timeouts::default(), 9).expect("valid");
    let k = key6("2001:2:1:0:aaaa::1", 5000);
    let timeout = Duration::from_secs(30);
    let tpl = t
        .insert_template(&k, 64, D1, timeout, Time::ZERO)
        .expect("room");
    assert_eq!(
        t.entry(tpl).key().client,
        "2001:2:1::".parse::<Ipv6Addr>().expect("valid")
    );
    assert_eq!(t.entry(tpl).prefix_len(), 64);
    // Same /64: found; the next /64: not.
    let same = key6("2001:2:1:0:bbbb::9", 6000);
    let found = t
        .lookup_template(&same, 64, Time::from_secs(1))
        .expect("found");
    assert_eq!(t.entry(found).dest(), D1);
    assert_eq!(
        t.lookup_template(&key6("2001:2:1:1::1", 6000), 64, Time::from_secs(1)),
        None
    );
    // Exact to a tick of the entries' coarse clock.
    let left = t.expires_in(t.entry(found), Time::from_secs(10));
    assert!(
        left.abs_diff(Duration::from_secs(20)) <= Duration::from_nanos(2 * TICK_NANOS),
        "{left:?}"
    );
    assert_eq!(t.lookup_template(&same, 64, Time::from_secs(31)), None);
}

#[test]
fn a_miss_reads_tags_only_and_a_hit_one_entry() {
    let mut t = table(1000);
    let now = Time::from_secs(1);
    for c in 0..700u16 {
        t.insert(&key((c % 200) as u8, c), D0, State::Udp, now, None)
            .expect("room");
    }
    // Every occupied slot has a tag with its top bit set, every empty slot tag 0.
    let tags = t.memory().tags();
    let entries = t.memory().entries();
    for (tag, e) in tags.iter().zip(entries) {
        assert_eq!(*tag != 0, e.occupied());
        assert!(*tag == 0 || *tag & 0x80 != 0);
    }
    assert_eq!(tags.iter().filter(|&&g| g != 0).count(), 700);
    // The tags tell entries apart: for each entry, the other entries of its probe run
    // that share its tag are few (7 bits: about one in 128).
    let mut compared = 0;
    let mut same_tag = 0;
    for c in 0..700u16 {
        let k = key((c % 200) as u8, c);
        let h = t.hash(&Packed::of(&k, false));
        let mut i = t.home_of(h);
        while tags[i] != 0 {
            compared += 1;
            if tags[i] == tag_of(h) && !entries[i].matches(&Packed::of(&k, false)) {
                same_tag += 1;
            }
            if entries[i].matches(&Packed::of(&k, false)) {
                break;
            }
            i = t.next(i);
        }
    }
    assert!(
        same_tag * 20 < compared,
        "{same_tag} of {compared} tags collide"
    );
    // Deleting keeps tags and entries together (backward shift moves both).
    for c in (0..700u16).step_by(3) {
        let i = t.lookup(&key((c % 200) as u8, c), now).expect("present");
        t.remove(i, now);
    }
    for c in 0..700u16 {
        assert_eq!(
            t.lookup(&key((c % 200) as u8, c), now).is_some(),
            c % 3 != 0
        );
    }
    let tags = t.memory().tags();
    let entries = t.memory().entries();
    assert!(tags
        .iter()
        .zip(entries)
        .all(|(g, e)| (*g != 0) == e.occupied()));
}

#[test]
fn the_coarse_clock_wraps_without_losing_an_entry() {
    // Start just before the 32-bit tick counter wraps (52 days in), cross it.
    let start = Time::from_nanos((u64::from(u32::MAX) - 1000) << 20);
    let mut t = table(100);
    let i = t
        .insert(&key(1, 1), D0, State::None, start, None)
        .expect("room");
    t.seen(i, start, Some(SYN));
    t.seen(i, start, Some(ACK)); // ESTABLISHED: 900 s
    let later = start.after(Duration::from_secs(600));
    assert!(tick(later) < tick(start), "the clock wrapped");
    let i = t.lookup(&key(1, 1), later).expect("alive after the wrap");
    assert_eq!(t.expires_in(t.entry(i), later).as_secs(), 300);
    t.expire(later, t.slot_count());
    assert_eq!(t.len(), 1);
    assert!(t
        .lookup(&key(1, 1), start.after(Duration::from_secs(901)))
        .is_none());
    // A template that controls a connection for longer than half the clock's range
    // keeps a sane age: the sweep dates it back, so its timeout counts from its release.
    let mut t = table(100);
    let k = key(2, 5);
    let c = persistent_udp(&mut t, &k);
    let mut now = Time::ZERO;
    for _ in 0..40 {
        // UDP traffic every day for 40 days (longer than 2^31 ticks, 26 days).
        now = now.after(Duration::from_secs(86_400));
        t.seen(c, now, None);
        t.expire(now, t.slot_count());
    }
    let c = t.lookup(&k, now).expect("connection alive");
    t.remove(c, now);
    assert!(t
        .lookup_template(&k, 32, now.after(Duration::from_secs(29)))
        .is_some());
    assert!(t
        .lookup_template(&k, 32, now.after(Duration::from_secs(31)))
        .is_none());
}

/// The prefetch's guess (its landing slot, judged by tags alone) is the slot a lookup
/// ends on: the connection's own when it is there, else where an insert puts it; short
/// of it only where a slot on the way has the same tag (one in 128).
#[test]
fn landing_is_where_lookup_and_insert_end() {
    let mut t = table(3000);
    let now = Time::from_secs(1);
    let (mut inserts, mut hits) = (0, 0);
    for n in 0..3000u32 {
        let k = key((n % 200) as u8, 1000 + (n / 200) as u16);
        let guess: *const Entry<Ipv4Addr> = t.landing(t.start(&k));
        let at = t.insert(&k, D0, State::None, now, None).expect("room");
        inserts += usize::from(std::ptr::eq(guess, t.entry(at)));
        let k = key((n % 200) as u8, 1000);
        let at = t.lookup(&k, now).expect("inserted");
        hits += usize::from(std::ptr::eq(t.landing(t.start(&k)), t.entry(at)));
    }
    assert!(inserts > 2900, "{inserts} of 3000 inserts guessed");
    assert!(hits > 2900, "{hits} of 3000 lookups guessed");
}
