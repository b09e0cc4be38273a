//! ipvsadm's grammar over arbitrary text, as `xdpvs -R` reads it: never panics, errors
//! are one line naming their line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match xdpvs::ipvsadm::parse_restore(text) {
        Ok(reqs) => assert!(reqs.iter().all(|(line, _)| *line >= 1)),
        Err(e) => {
            let s = e.to_string();
            assert!(s.starts_with("line "), "{s}");
        }
    }
});
