//! A SYN that finds a connection-table entry: the same connection (a retransmission, or
//! a client reusing its port on purpose) or a new one to schedule afresh?
//!
//! IPVS decides with its `conn_reuse_mode` sysctl (`ip_vs_in_hook`,
//! `is_new_conn_expected`); [`reschedules`] is that decision, plus one rule of ours: a
//! SYN whose entry's real server is out of service is always scheduled afresh.

use xdpvs_sched::tcp::State;

use crate::config::DestStatus;

/// IPVS's `conn_reuse_mode`: what a new TCP connection (a SYN) that finds an entry of an
/// earlier connection on the same ports does.
///
/// - 0: nothing special; it continues the old entry, to the same real server.
/// - bit 1 (1): it is scheduled afresh when the old entry is in TIME_WAIT or CLOSE, or
///   with `expire_nodest_conn` when the old entry's real server is quiescent (weight 0).
/// - bit 2 (2): as bit 1, and also from FIN_WAIT for connections the director sees in
///   one direction only (direct routing, tunnelling): the last state such a director
///   sees of a closed connection.
///
/// As in the kernel, any value other than 0 turns on bit 1's cases (2 behaves as 3).
/// Never for an entry a persistence template controls (the template places the client
/// anyway). The default here is 3, where the kernel's is 1: a direct-routing director
/// only ever sees FIN_WAIT, so with 1 a reused client port sticks to the old real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnReuseMode(u8);

impl ConnReuseMode {
    /// The default: both bits.
    pub const DEFAULT: ConnReuseMode = ConnReuseMode(3);

    /// The mode of sysctl value `v`, if valid (0 to 3).
    pub const fn new(v: u8) -> Option<ConnReuseMode> {
        if v <= 3 {
            Some(ConnReuseMode(v))
        } else {
            None
        }
    }

    /// Its sysctl value.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl Default for ConnReuseMode {
    fn default() -> ConnReuseMode {
        ConnReuseMode::DEFAULT
    }
}

/// What a SYN met on a connection-table entry is told about that entry.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    /// The entry's TCP state.
    pub state: State,
    /// Controlled by a persistence template.
    pub persistent: bool,
    /// The director sees the connection in one direction only (IPVS's
    /// `IP_VS_CONN_F_NOOUTPUT`): every direct-routing connection.
    pub one_way: bool,
    /// Where its real server stands.
    pub dest: DestStatus,
}

/// Whether a TCP SYN (without RST) that found `entry` opens a new connection, scheduled
/// afresh (the entry is forgotten), rather than continuing it.
///
/// Whatever the mode, a real server out of service (its check failed, removed, its MAC
/// lost) gets no new connection: the kernel drops such a SYN unless `expire_nodest_conn`
/// is on, and reschedules it then.
pub fn reschedules(mode: ConnReuseMode, expire_nodest_conn: bool, entry: &Found) -> bool {
    let weight = match entry.dest {
        DestStatus::Up { weight, .. } => weight,
        DestStatus::OutOfService { .. }
        | DestStatus::Draining { .. }
        | DestStatus::Removed
        | DestStatus::Unresolved => return true,
    };
    if mode.get() == 0 {
        return false;
    }
    if expire_nodest_conn && weight == 0 {
        return true;
    }
    if entry.persistent {
        return false;
    }
    match entry.state {
        State::TimeWait | State::Close => true,
        State::FinWait => mode.get() & 2 != 0 && entry.one_way,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: DestStatus = DestStatus::Up {
        mac: [2, 0, 0, 0, 0, 1],
        weight: 1,
    };
    const QUIESCENT: DestStatus = DestStatus::Up {
        mac: [2, 0, 0, 0, 0, 1],
        weight: 0,
    };

    fn found(state: State, dest: DestStatus) -> Found {
        Found {
            state,
            persistent: false,
            one_way: true,
            dest,
        }
    }

    fn mode(v: u8) -> ConnReuseMode {
        ConnReuseMode::new(v).expect("0 to 3")
    }

    /// Every mode against every TCP state, as `is_new_conn_expected` decides.
    #[test]
    fn the_kernels_table() {
        for state in State::ALL {
            let closed = matches!(state, State::TimeWait | State::Close);
            for v in 0..=3 {
                let want = v != 0 && (closed || state == State::FinWait && v & 2 != 0);
                assert_eq!(
                    reschedules(mode(v), false, &found(state, UP)),
                    want,
                    "mode {v}, {state}"
                );
                // Seen both ways (NAT), FIN_WAIT is not the end.
                let both = Found {
                    one_way: false,
                    ..found(state, UP)
                };
                assert_eq!(
                    reschedules(mode(v), false, &both),
                    v != 0 && closed,
                    "mode {v}, {state}, two-way"
                );
                // Persistence-controlled entries stay.
                let persistent = Found {
                    persistent: true,
                    ..found(state, UP)
                };
                assert!(!reschedules(mode(v), false, &persistent));
            }
        }
        assert_eq!(ConnReuseMode::new(4), None);
        assert_eq!(ConnReuseMode::default().get(), 3);
    }

    #[test]
    fn expire_nodest_conn_moves_new_connections_off_a_quiescent_real_server() {
        for v in 1..=3 {
            let persistent = Found {
                persistent: true,
                ..found(State::Established, QUIESCENT)
            };
            assert!(reschedules(mode(v), true, &persistent), "mode {v}");
            assert!(!reschedules(mode(v), false, &persistent), "mode {v}");
            assert!(!reschedules(mode(v), true, &found(State::Established, UP)));
        }
        // Mode 0 turns every special case off, this one too.
        assert!(!reschedules(
            mode(0),
            true,
            &found(State::Established, QUIESCENT)
        ));
    }

    #[test]
    fn a_real_server_out_of_service_gets_no_new_connection_in_any_mode() {
        let mac = [2, 0, 0, 0, 0, 1];
        for dest in [
            DestStatus::OutOfService { mac },
            DestStatus::Draining { mac },
            DestStatus::Removed,
            DestStatus::Unresolved,
        ] {
            for v in 0..=3 {
                for state in State::ALL {
                    let persistent = Found {
                        persistent: true,
                        ..found(state, dest)
                    };
                    assert!(reschedules(mode(v), false, &persistent), "{dest:?} {v}");
                }
            }
        }
    }
}
