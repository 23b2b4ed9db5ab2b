//! libFuzzer entry point; the checks are [`scimsync_fuzz::checks::resource_parse`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scimsync_fuzz::checks::resource_parse(data));
