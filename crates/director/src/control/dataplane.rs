//! What the control side asks of the dataplane, in three narrow traits, one per part:
//!
//! - [`Configure`], for the write side only: install a snapshot, steer, advertise a VIP,
//!   send frames of its own, set timeouts.
//! - [`Observe`], for the read model (and the write side's statistics): shared counters and
//!   the connection table, read without stopping a worker for longer than a piece.
//! - [`Probe`], for diagnostics: frames sent and their answers heard, flows explained.
//!
//! The live dataplane implements them in `crate::workers`; the write side's tests use a
//! double over real worker tables.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use xdpvs_dataplane::engine::Explained;
use xdpvs_dataplane::stats::TrafficTotals;
use xdpvs_dataplane::{NatSource, Services};
use xdpvs_sched::conn::{DestRef, Listed};
use xdpvs_sched::tcp::Timeouts;
use xdpvs_sched::{Load, ServiceKey};

use super::check::Heard;

/// Why the dataplane did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataplaneError {
    /// A worker thread is gone.
    #[error("worker {0} is gone")]
    WorkerGone(usize),
    /// A worker did not acknowledge a snapshot in time.
    #[error("worker {worker} did not take the new configuration within {seconds} s")]
    InstallTimeout {
        /// Which worker.
        worker: usize,
        /// How long it was given.
        seconds: u64,
    },
    /// The XDP program's maps could not be updated.
    #[error("updating the XDP program's maps failed: {0}")]
    Steer(String),
    /// A worker did not answer a request for a piece of its tables in time.
    #[error("worker {0} did not answer in time")]
    AnswerTimeout(usize),
    /// `xdpvs check` could not listen for the answers to its probes.
    #[error("opening a packet socket on the interface to hear the real servers' answers failed ({0}): xdpvs check needs CAP_NET_RAW (run the director as root, or add CAP_NET_RAW to its capabilities)")]
    ListenSocket(String),
}

/// What the write side changes: the workers' snapshot, the XDP program's services, and
/// frames of its own on the wire.
pub trait Configure {
    /// Hands a new snapshot to every worker and waits until all run with it.
    fn install(&mut self, services: &Services) -> Result<(), DataplaneError>;
    /// Makes the XDP program steer exactly these services, and the replies of exactly
    /// these NAT real servers.
    fn steer(&mut self, keys: &[ServiceKey], nat: &[NatSource]) -> Result<(), DataplaneError>;
    /// Tells the LAN that a VIP is at the director (gratuitous ARP, unsolicited
    /// neighbour advertisement).
    fn advertise(&mut self, vip: IpAddr);
    /// Sends frames of the director's own (ARP requests, neighbour solicitations).
    fn send(&mut self, frames: &[Vec<u8>]);
    /// Applies idle timeouts on every worker (from their next batch on).
    fn set_timeouts(&mut self, timeouts: Timeouts);
}

/// What any part may read of the dataplane, from shared counters and bounded requests.
pub trait Observe {
    /// ActiveConn/InActConn of a real server, summed over workers.
    fn load(&self, dest: DestRef) -> Load;
    /// Persistence templates pointing at a real server, summed over workers.
    fn persistent(&self, dest: DestRef) -> u64;
    /// The counters of a service slot, summed over workers.
    fn service_traffic(&self, slot: u32) -> TrafficTotals;
    /// The counters of a real-server slot, summed over workers.
    fn dest_traffic(&self, slot: u32) -> TrafficTotals;
    /// Connection-table capacity over all workers (ipvsadm's "size").
    fn capacity(&self) -> usize;
    /// Hands every worker's connection-table entries to `sink`, a bounded piece at a
    /// time (a worker answers one piece between two batches); stops early when `sink`
    /// returns false.
    fn list_connections(
        &self,
        sink: &mut dyn FnMut(&[Listed]) -> bool,
    ) -> Result<(), DataplaneError>;
}

/// What diagnostics ask of the dataplane.
pub trait Probe {
    /// Sends `frames` out of the interface and gathers for `listen` what comes back
    /// (`xdpvs check`): TCP and ICMP packets to the director's own addresses, and the
    /// hosts that claimed a VIP meanwhile.
    fn probe(&self, frames: &[Vec<u8>], listen: Duration) -> Result<Heard, DataplaneError> {
        self.probe_until(frames, listen, &|_| false)
    }
    /// [`Probe::probe`] that stops listening as soon as `done` says what was heard is
    /// enough (a forwarding check's SYN-ACK).
    fn probe_until(
        &self,
        frames: &[Vec<u8>],
        listen: Duration,
        done: &dyn Fn(&Heard) -> bool,
    ) -> Result<Heard, DataplaneError>;
    /// Each worker's answer to where `client`'s flow to `key` goes, from its own tables
    /// (`xdpvs explain`); `None` from a worker without the service.
    fn explain(
        &self,
        key: &ServiceKey,
        client: SocketAddr,
    ) -> Result<Vec<Option<Explained>>, DataplaneError>;
}
