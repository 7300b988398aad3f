#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_fuzz::context_token(data));
