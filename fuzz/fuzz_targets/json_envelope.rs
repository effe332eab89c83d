#![no_main]
//! Fuzz target `json_envelope`: see `framehub_fuzz::checks::json_envelope` for what it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| framehub_fuzz::checks::json_envelope(data));
