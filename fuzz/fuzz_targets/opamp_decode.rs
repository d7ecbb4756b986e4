//! libFuzzer entry for `gitamp_fuzz::opamp_decode` (see that function for what it exercises).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gitamp_fuzz::opamp_decode(data));
