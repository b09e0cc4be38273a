//! The control protocol's decoder over arbitrary bytes: never panics, and what it
//! accepts it writes back and reads again as the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xdpvs_director::control::proto::{read_message, write_message, Answer, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = read_message::<Request>(&mut &data[..]) {
        let mut again = Vec::new();
        if write_message(&mut again, &req).is_ok() {
            let back: Request = read_message(&mut &again[..]).expect("what we write, we read");
            assert_eq!(back, req);
        }
    }
    let _ = read_message::<Answer>(&mut &data[..]);
});
