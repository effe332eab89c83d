#![no_main]
//! Fuzz target `codec`: see `framehub_fuzz::checks::codec` for what it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| framehub_fuzz::checks::codec(data));
