//! The ARP responder over arbitrary frames: never panics, answers only requests for a
//! VIP, and a frame it does not answer is unchanged.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use xdpvs_arp::{reply_in_place, Outcome};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

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
});
