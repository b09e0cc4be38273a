//! The ARP and NDP responders over arbitrary frames: never panic, answer only requests
//! (solicitations) for a VIP, and a frame they do not answer is unchanged.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use xdpvs_arp::{ndp, reply_in_place, Outcome};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x100);

fuzz_target!(|data: &[u8]| {
    let mut frame = data.to_vec();
    let parsed = xdpvs_arp::parse(data);
    match reply_in_place(&mut frame, |ip| ip == VIP, [2, 0, 0, 0, 0, 1]) {
        Outcome::Replied(ip) => {
            assert_eq!(ip, VIP);
            let req = parsed.expect("answered what parses");
            assert!(req.is_request() && req.target_ip == VIP);
            assert_eq!(frame.len(), data.len());
            assert_eq!(xdpvs_arp::parse(&frame).map(|r| r.sender_ip), Ok(VIP));
        }
        Outcome::NotForUs | Outcome::Ignored(_) => assert_eq!(frame, data),
    }
    let mut frame = data.to_vec();
    let ns = ndp::parse_solicitation(data);
    match ndp::advertise_in_place(&mut frame, |a| *a == VIP6, [2, 0, 0, 0, 0, 1]) {
        ndp::Outcome::Advertised(a) => {
            assert_eq!(a, VIP6);
            assert_eq!(ns.expect("answered what parses").target, VIP6);
            assert_eq!(frame.len(), data.len());
            // An advertisement from the VIP now.
            assert_eq!(frame[54], 136);
            assert_eq!(frame[22..38], VIP6.octets());
        }
        ndp::Outcome::Defend(a) => {
            assert_eq!(a, VIP6);
            assert_eq!(frame, data);
        }
        ndp::Outcome::NotForUs | ndp::Outcome::Ignored(_) => assert_eq!(frame, data),
    }
});
