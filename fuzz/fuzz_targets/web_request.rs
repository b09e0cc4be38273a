//! The status page's request heads over arbitrary bytes: never a panic; a head that is
//! read has a path that starts with '/' and lower-case header names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xdpvs_director::web::http;

fuzz_target!(|data: &[u8]| {
    let end = http::head_end(data).unwrap_or(data.len());
    if let Ok(h) = http::parse_head(&data[..end]) {
        assert!(h.path.starts_with('/'));
        assert!(h.headers.keys().all(|k| k.chars().all(|c| !c.is_ascii_uppercase())));
        let _ = h.content_length();
    }
});
