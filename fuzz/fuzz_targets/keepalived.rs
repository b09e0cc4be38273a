//! The keepalived.conf reader over arbitrary text: never panics, errors name a line of
//! the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = xdpvs_director::keepalived::parse(text) {
        let lines = text.lines().count().max(1);
        assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}: {e}", e.line);
        assert!(!e.message.contains('\n'), "{e}");
    }
});
