//! Connection states and timeouts.
//!
//! A direct-routing director sees only the client's half of a TCP conversation, so it
//! follows IPVS's *input-only* transition table (the one IPVS uses for DR and tunnel
//! connections). Events are taken from the TCP flags with IPVS's priority
//! RST > SYN > FIN > ACK; a segment with none of them closes the entry, as in IPVS.

use std::fmt;
use std::time::Duration;

/// The state of a connection-table entry (TCP states as IPVS names them, plus UDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum State {
    /// New, nothing seen yet.
    None = 0,
    /// ESTABLISHED: the only state counted as ActiveConn.
    Established,
    /// SYN_SENT
    SynSent,
    /// SYN_RECV: a SYN was forwarded.
    SynRecv,
    /// FIN_WAIT: the client sent FIN.
    FinWait,
    /// TIME_WAIT
    TimeWait,
    /// CLOSE: RST seen (or a segment without flags).
    Close,
    /// CLOSE_WAIT
    CloseWait,
    /// LAST_ACK
    LastAck,
    /// LISTEN
    Listen,
    /// SYNACK
    SynAck,
    /// A UDP flow.
    Udp,
}

impl State {
    /// Number of states (for timeout tables).
    pub const COUNT: usize = 12;
    /// Every state, by discriminant.
    pub const ALL: [State; State::COUNT] = [
        State::None,
        State::Established,
        State::SynSent,
        State::SynRecv,
        State::FinWait,
        State::TimeWait,
        State::Close,
        State::CloseWait,
        State::LastAck,
        State::Listen,
        State::SynAck,
        State::Udp,
    ];

    /// The state with discriminant `v` (`None` for out-of-range values).
    pub const fn from_u8(v: u8) -> State {
        if (v as usize) < State::COUNT {
            State::ALL[v as usize]
        } else {
            State::None
        }
    }

    /// The name ipvsadm prints (`ESTABLISHED`, `SYN_RECV`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            State::None => "NONE",
            State::Established => "ESTABLISHED",
            State::SynSent => "SYN_SENT",
            State::SynRecv => "SYN_RECV",
            State::FinWait => "FIN_WAIT",
            State::TimeWait => "TIME_WAIT",
            State::Close => "CLOSE",
            State::CloseWait => "CLOSE_WAIT",
            State::LastAck => "LAST_ACK",
            State::Listen => "LISTEN",
            State::SynAck => "SYNACK",
            State::Udp => "UDP",
        }
    }

    /// Counted as ActiveConn (ESTABLISHED) rather than InActConn.
    pub const fn is_active(self) -> bool {
        matches!(self, State::Established)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// TCP flag bits as they stand in byte 13 of the TCP header.
pub mod flags {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// ACK
    pub const ACK: u8 = 0x10;
}

use State::{
    Close as CL, CloseWait as CW, Established as ES, FinWait as FW, LastAck as LA, Listen as LI,
    SynRecv as SR, SynSent as SS, TimeWait as TW,
};

/// Next state by event (rows: syn, fin, ack, rst) and current TCP state (columns, in
/// discriminant order NONE..SYNACK). IPVS's input-only table.
const INPUT_ONLY: [[State; 11]; 4] = [
    //NONE ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
    [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR], // syn
    [CL, FW, SS, TW, FW, TW, CL, CW, LA, LI, TW], // fin
    [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES], // ack
    [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, CL], // rst
];

/// IPVS's input table: a client's segment of a connection whose replies cross the
/// director too (NAT).
const INPUT: [[State; 11]; 4] = [
    //NONE ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
    [SR, ES, ES, SR, SR, SR, SR, SR, SR, SR, SR], // syn
    [CL, CW, SS, TW, TW, TW, CL, CW, LA, LI, TW], // fin
    [CL, ES, SS, ES, FW, TW, CL, CW, CL, LI, ES], // ack
    [CL, CL, CL, SR, CL, CL, CL, CL, LA, LI, SR], // rst
];

/// IPVS's output table: the real server's segment (a NAT reply).
const OUTPUT: [[State; 11]; 4] = [
    //NONE ES  SS  SR  FW  TW  CL  CW  LA  LI  SA
    [SS, ES, SS, SR, SS, SS, SS, SS, SS, LI, SR], // syn
    [TW, FW, SS, TW, FW, TW, CL, TW, LA, LI, TW], // fin
    [ES, ES, SS, ES, FW, TW, CL, CW, LA, ES, ES], // ack
    [CL, CL, SS, CL, CL, TW, CL, CL, CL, CL, CL], // rst
];

/// Which way a segment goes, for the state machine (IPVS's three tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the client, on a connection whose replies never cross the director (direct
    /// routing).
    InputOnly,
    /// From the client, on a connection whose replies cross the director (NAT).
    Input,
    /// From the real server (a NAT reply).
    Output,
}

/// The TCP state after an inbound segment with `tcp_flags` (byte 13 of the header) on
/// a connection whose replies never cross the director.
#[inline]
pub fn next_state(current: State, tcp_flags: u8) -> State {
    next_state_dir(current, tcp_flags, Dir::InputOnly)
}

/// The TCP state after a segment with `tcp_flags` going `dir`.
#[inline]
pub fn next_state_dir(current: State, tcp_flags: u8, dir: Dir) -> State {
    let row = if tcp_flags & flags::RST != 0 {
        3
    } else if tcp_flags & flags::SYN != 0 {
        0
    } else if tcp_flags & flags::FIN != 0 {
        1
    } else if tcp_flags & flags::ACK != 0 {
        2
    } else {
        return State::Close;
    };
    let col = current as usize;
    let table = match dir {
        Dir::InputOnly => &INPUT_ONLY,
        Dir::Input => &INPUT,
        Dir::Output => &OUTPUT,
    };
    if col < 11 {
        table[row][col]
    } else {
        current
    }
}

/// How long an idle entry lives in each state. Defaults are IPVS's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    nanos: [u64; State::COUNT],
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        let s = |secs: u64| secs * 1_000_000_000;
        let mut nanos = [0; State::COUNT];
        for st in State::ALL {
            nanos[st as usize] = s(match st {
                State::None => 2,
                State::Established => 15 * 60,
                State::SynSent => 2 * 60,
                State::SynRecv => 60,
                State::FinWait => 2 * 60,
                State::TimeWait => 2 * 60,
                State::Close => 10,
                State::CloseWait => 60,
                State::LastAck => 30,
                State::Listen => 2 * 60,
                State::SynAck => 2 * 60,
                State::Udp => 5 * 60,
            });
        }
        Timeouts { nanos }
    }
}

impl Timeouts {
    /// The timeout of `state`.
    pub fn get(&self, state: State) -> Duration {
        Duration::from_nanos(self.nanos[state as usize])
    }

    /// The timeout of `state` in nanoseconds (hot path).
    #[inline]
    pub fn nanos(&self, state: State) -> u64 {
        self.nanos[state as usize]
    }

    /// Sets the timeout of `state` (at least 1 ns is kept, so nothing lives forever by
    /// accident and nothing expires before it is seen).
    pub fn set(&mut self, state: State, d: Duration) {
        self.nanos[state as usize] = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
    }

    /// ipvsadm `--set tcp tcpfin udp`: ESTABLISHED, FIN_WAIT and UDP timeouts.
    pub fn with_ipvsadm_set(mut self, tcp: Duration, tcpfin: Duration, udp: Duration) -> Self {
        self.set(State::Established, tcp);
        self.set(State::FinWait, tcpfin);
        self.set(State::Udp, udp);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::flags::*;
    use super::*;

    #[test]
    fn a_normal_connection() {
        let mut s = State::None;
        s = next_state(s, SYN);
        assert_eq!(s, State::SynRecv);
        s = next_state(s, ACK);
        assert_eq!(s, State::Established);
        assert!(s.is_active());
        s = next_state(s, ACK | 0x08);
        assert_eq!(s, State::Established);
        s = next_state(s, FIN | ACK);
        assert_eq!(s, State::FinWait);
        s = next_state(s, ACK);
        assert_eq!(s, State::FinWait);
        assert_eq!(next_state(State::Established, RST | ACK), State::Close);
        assert_eq!(next_state(State::Established, 0), State::Close);
        assert_eq!(next_state(State::SynRecv, FIN), State::TimeWait);
    }

    #[test]
    fn a_nat_connection_is_seen_both_ways() {
        let mut s = State::None;
        for (f, dir, want) in [
            (SYN, Dir::Input, State::SynRecv),
            (SYN | ACK, Dir::Output, State::SynRecv),
            (ACK, Dir::Input, State::Established),
            (FIN | ACK, Dir::Output, State::FinWait),
            (ACK, Dir::Input, State::FinWait),
            (FIN | ACK, Dir::Input, State::TimeWait),
        ] {
            s = next_state_dir(s, f, dir);
            assert_eq!(s, want, "{f:#x} {dir:?}");
        }
        // The client closing first: CLOSE_WAIT, then the server's FIN.
        let s = next_state_dir(State::Established, FIN | ACK, Dir::Input);
        assert_eq!(s, State::CloseWait);
        assert_eq!(next_state_dir(s, FIN | ACK, Dir::Output), State::TimeWait);
        assert_eq!(
            next_state_dir(State::Established, RST, Dir::Output),
            State::Close
        );
    }

    #[test]
    fn ipvs_default_timeouts() {
        let t = Timeouts::default();
        assert_eq!(t.get(State::Established), Duration::from_secs(900));
        assert_eq!(t.get(State::SynRecv), Duration::from_secs(60));
        assert_eq!(t.get(State::FinWait), Duration::from_secs(120));
        assert_eq!(t.get(State::Close), Duration::from_secs(10));
        assert_eq!(t.get(State::Udp), Duration::from_secs(300));
        let t = t.with_ipvsadm_set(
            Duration::from_secs(10),
            Duration::from_secs(5),
            Duration::from_secs(1),
        );
        assert_eq!(t.get(State::Established), Duration::from_secs(10));
        assert_eq!(t.get(State::FinWait), Duration::from_secs(5));
        assert_eq!(t.get(State::Udp), Duration::from_secs(1));
        for s in State::ALL {
            assert_eq!(State::from_u8(s as u8), s);
        }
    }
}
