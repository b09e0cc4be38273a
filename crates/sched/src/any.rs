//! Any of the schedulers, dispatched without a vtable.

use crate::model::{SchedFlags, SchedKind};
use crate::scheduler::{DestView, Pick, Scheduler};
use crate::{dh, fo, lblc, lblcr, lc, mh, nq, ovf, rr, sed, sh, twos, wlc, wrr};

/// Any of the schedulers, dispatched without a vtable.
#[derive(Clone, Debug)]
pub enum AnyScheduler {
    /// [`rr::Rr`]
    Rr(rr::Rr),
    /// [`wrr::Wrr`]
    Wrr(wrr::Wrr),
    /// [`lc::Lc`]
    Lc(lc::Lc),
    /// [`wlc::Wlc`]
    Wlc(wlc::Wlc),
    /// [`sh::Sh`]
    Sh(sh::Sh),
    /// [`mh::Mh`]
    Mh(mh::Mh),
    /// [`dh::Dh`]
    Dh(dh::Dh),
    /// [`sed::Sed`]
    Sed(sed::Sed),
    /// [`nq::Nq`]
    Nq(nq::Nq),
    /// [`lblc::Lblc`]
    Lblc(lblc::Lblc),
    /// [`lblcr::Lblcr`]
    Lblcr(lblcr::Lblcr),
    /// [`fo::Fo`]
    Fo(fo::Fo),
    /// [`ovf::Ovf`]
    Ovf(ovf::Ovf),
    /// [`twos::Twos`]
    Twos(twos::Twos),
}

/// Calls `$f` on the scheduler inside `$s`, whatever it is.
macro_rules! each {
    ($s:expr, $x:ident => $f:expr) => {
        match $s {
            AnyScheduler::Rr($x) => $f,
            AnyScheduler::Wrr($x) => $f,
            AnyScheduler::Lc($x) => $f,
            AnyScheduler::Wlc($x) => $f,
            AnyScheduler::Sh($x) => $f,
            AnyScheduler::Mh($x) => $f,
            AnyScheduler::Dh($x) => $f,
            AnyScheduler::Sed($x) => $f,
            AnyScheduler::Nq($x) => $f,
            AnyScheduler::Lblc($x) => $f,
            AnyScheduler::Lblcr($x) => $f,
            AnyScheduler::Fo($x) => $f,
            AnyScheduler::Ovf($x) => $f,
            AnyScheduler::Twos($x) => $f,
        }
    };
}

impl AnyScheduler {
    /// A scheduler of `kind` with ipvsadm's `-b` `flags`, built for `dests`.
    pub fn new<D: DestView + ?Sized>(
        kind: SchedKind,
        flags: SchedFlags,
        dests: &D,
    ) -> AnyScheduler {
        let mut s = match kind {
            SchedKind::Rr => AnyScheduler::Rr(rr::Rr::default()),
            SchedKind::Wrr => AnyScheduler::Wrr(wrr::Wrr::default()),
            SchedKind::Lc => AnyScheduler::Lc(lc::Lc),
            SchedKind::Wlc => AnyScheduler::Wlc(wlc::Wlc),
            SchedKind::Sh => AnyScheduler::Sh(sh::Sh::new(flags)),
            SchedKind::Mh => AnyScheduler::Mh(mh::Mh::new(flags)),
            SchedKind::Dh => AnyScheduler::Dh(dh::Dh::default()),
            SchedKind::Sed => AnyScheduler::Sed(sed::Sed),
            SchedKind::Nq => AnyScheduler::Nq(nq::Nq),
            SchedKind::Lblc => AnyScheduler::Lblc(lblc::Lblc::default()),
            SchedKind::Lblcr => AnyScheduler::Lblcr(lblcr::Lblcr::default()),
            SchedKind::Fo => AnyScheduler::Fo(fo::Fo),
            SchedKind::Ovf => AnyScheduler::Ovf(ovf::Ovf),
            SchedKind::Twos => AnyScheduler::Twos(twos::Twos::default()),
        };
        s.rebuild(dests);
        s
    }

    /// Carries the state of `old` (same algorithm) into this freshly built scheduler, so
    /// that a configuration change does not restart rr/wrr from the first server nor
    /// forget lblc/lblcr's assignments; IPVS keeps them across changes too. Allocates
    /// nothing.
    pub fn inherit<D: DestView + ?Sized>(&mut self, old: &AnyScheduler, dests: &D) {
        match (self, old) {
            (AnyScheduler::Rr(new), AnyScheduler::Rr(o)) => {
                *new = o.clone();
                new.rebuild(dests);
            }
            (AnyScheduler::Wrr(new), AnyScheduler::Wrr(o)) => {
                *new = o.clone();
                new.rebuild(dests);
            }
            (AnyScheduler::Lblc(new), AnyScheduler::Lblc(o)) => new.clone_from(o),
            (AnyScheduler::Lblcr(new), AnyScheduler::Lblcr(o)) => new.clone_from(o),
            _ => {}
        }
    }

    /// Which algorithm this is.
    pub fn kind(&self) -> SchedKind {
        match self {
            AnyScheduler::Rr(_) => SchedKind::Rr,
            AnyScheduler::Wrr(_) => SchedKind::Wrr,
            AnyScheduler::Lc(_) => SchedKind::Lc,
            AnyScheduler::Wlc(_) => SchedKind::Wlc,
            AnyScheduler::Sh(_) => SchedKind::Sh,
            AnyScheduler::Mh(_) => SchedKind::Mh,
            AnyScheduler::Dh(_) => SchedKind::Dh,
            AnyScheduler::Sed(_) => SchedKind::Sed,
            AnyScheduler::Nq(_) => SchedKind::Nq,
            AnyScheduler::Lblc(_) => SchedKind::Lblc,
            AnyScheduler::Lblcr(_) => SchedKind::Lblcr,
            AnyScheduler::Fo(_) => SchedKind::Fo,
            AnyScheduler::Ovf(_) => SchedKind::Ovf,
            AnyScheduler::Twos(_) => SchedKind::Twos,
        }
    }

    /// For a consistent-hash scheduler (`mh`), its pick for `flow` without changing
    /// anything: the same on every worker and every director with the same
    /// configuration, so it can place a flow that has no entry (a connection another
    /// director opened, or one the full table could not record). `None` for the others.
    pub fn consistent_pick<D: DestView + ?Sized>(
        &self,
        dests: &D,
        flow: &Pick,
    ) -> Option<Option<usize>> {
        match self {
            AnyScheduler::Mh(s) => Some(s.lookup(dests, flow)),
            _ => None,
        }
    }
}

impl Scheduler for AnyScheduler {
    fn rebuild<D: DestView + ?Sized>(&mut self, dests: &D) {
        each!(self, s => s.rebuild(dests))
    }

    #[inline]
    fn pick<D: DestView + ?Sized>(&mut self, dests: &D, flow: &Pick) -> Option<usize> {
        each!(self, s => s.pick(dests, flow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::testutil::{dests, picks};
    use crate::Time;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    /// Whether `kind` always finds a server while one has a weight above 0. `dh` and `sh`
    /// (without `sh-fallback`) hash to one server and refuse when it is unavailable;
    /// `ovf` refuses when every server has more active connections than its weight.
    fn finds_any(kind: SchedKind) -> bool {
        !matches!(kind, SchedKind::Dh | SchedKind::Sh | SchedKind::Ovf)
    }

    proptest! {
        /// Every scheduler picks only servers with weight > 0, and those that always find
        /// one return `None` only when there is none.
        #[test]
        fn picks_only_available(
            weights in prop::collection::vec(0u32..5, 0..10),
            actives in prop::collection::vec(0u32..1000, 10),
            clients in prop::collection::vec((any::<u32>(), any::<u16>(), 0u64..200_000), 1..20),
        ) {
            let mut d = dests(&weights);
            for (c, a) in d.iter_mut().zip(&actives) { c.load.active = *a; }
            let any_available = weights.iter().any(|&w| w > 0);
            for kind in SchedKind::ALL {
                let mut s = AnyScheduler::new(kind, SchedFlags::NONE, &d[..]);
                prop_assert_eq!(s.kind(), kind);
                for &(c, port, secs) in &clients {
                    let flow = Pick {
                        client: Ipv4Addr::from(c).into(),
                        cport: port,
                        vip: Ipv4Addr::new(198, 18, 0, 100).into(),
                        now: Time::from_secs(secs),
                    };
                    match s.pick(&d[..], &flow) {
                        Some(i) => prop_assert!(d[i].weight > 0, "{} picked quiescent {}", kind, i),
                        None => prop_assert!(!any_available || !finds_any(kind), "{} found nothing", kind),
                    }
                }
            }
        }
    }

    #[test]
    fn rr_keeps_its_place_across_a_change() {
        let d = dests(&[1, 1, 1]);
        let mut old = AnyScheduler::new(SchedKind::Rr, SchedFlags::NONE, &d[..]);
        assert_eq!(picks(&mut old, &d, 2), [Some(0), Some(1)]);
        let d4 = dests(&[1, 1, 1, 1]);
        let mut new = AnyScheduler::new(SchedKind::Rr, SchedFlags::NONE, &d4[..]);
        new.inherit(&old, &d4[..]);
        assert_eq!(picks(&mut new, &d4, 3), [Some(2), Some(3), Some(0)]);
    }
}
