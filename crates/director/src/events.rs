//! What happened, for the status page: the last [`KEPT`] events (health transitions,
//! changes of the configuration and what made them, VRRP transitions, VIP conflicts, real
//! servers' MAC moves, announcements, the sync daemon's roles). Written by the control
//! side's threads (never a worker), read by the status page; the lock is held for a push
//! or a copy, never across anything that waits.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Events kept.
pub const KEPT: usize = 200;

/// What kind of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A real server went down or up, or a service lost or regained its quorum.
    Health,
    /// A change of the configuration (and what made it).
    Change,
    /// A VIP that follows VRRP came or went.
    Vrrp,
    /// A host answers for a VIP.
    Conflict,
    /// A real server's MAC moved.
    Mac,
    /// `--announce`: a VIP announced or withdrawn.
    Announce,
    /// The sync daemon's roles.
    Sync,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Its number, from 1 (the page asks for what came after the last it has).
    pub seq: u64,
    /// When, in seconds since the Unix epoch.
    pub at: f64,
    /// What kind.
    pub kind: Kind,
    /// What happened, in one line.
    pub text: String,
}

/// The last [`KEPT`] events.
#[derive(Debug, Default)]
pub struct Events {
    inner: Mutex<(u64, VecDeque<Event>)>,
}

impl Events {
    /// Records an event now.
    pub fn push(&self, kind: Kind, text: impl Into<String>) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.push_at(at, kind, text.into());
    }

    /// Records an event at `at` (seconds since the epoch).
    pub fn push_at(&self, at: f64, kind: Kind, text: String) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let seq = g.0;
        if g.1.len() == KEPT {
            g.1.pop_front();
        }
        g.1.push_back(Event {
            seq,
            at,
            kind,
            text,
        });
    }

    /// The events after `seq` (0: all kept), oldest first.
    pub fn since(&self, seq: u64) -> Vec<Event> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.iter().filter(|e| e.seq > seq).cloned().collect()
    }

    /// The number of the last event (0: none yet).
    pub fn last(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_200_are_kept_and_numbered() {
        let e = Events::default();
        for i in 0..250 {
            e.push_at(f64::from(i), Kind::Change, format!("change {i}"));
        }
        let all = e.since(0);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].seq, 51);
        assert_eq!(all[0].text, "change 50");
        assert_eq!(e.last(), 250);
        assert_eq!(e.since(248).len(), 2);
        assert!(e.since(250).is_empty());
    }
}
