#![no_main]
//! Fuzz target `config`: see `framehub_fuzz::config::config` for what it checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| framehub_fuzz::config::config(data));
