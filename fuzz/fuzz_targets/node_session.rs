#![no_main]
//! Fuzz target `node_session`: see `framehub_fuzz::checks::node_session` for what it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| framehub_fuzz::checks::node_session(data));
