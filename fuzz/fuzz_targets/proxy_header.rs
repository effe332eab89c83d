#![no_main]
//! Fuzz target `proxy_header`: see `framehub_fuzz::checks::proxy_header` for what it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| framehub_fuzz::checks::proxy_header(data));
