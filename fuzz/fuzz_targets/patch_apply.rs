//! libFuzzer entry point; the checks are [`scimsync_fuzz::checks::patch_apply`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scimsync_fuzz::checks::patch_apply(data));
