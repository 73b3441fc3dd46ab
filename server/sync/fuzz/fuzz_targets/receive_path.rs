//! A sequence of frames from a hostile peer into a real engine: the hub (attacked by a city,
//! with an honest city linked beside it) or a city (attacked by the hub). See
//! `sfs_sync_fuzz::Script` for the input format and `run_script` for the invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sfs_sync_fuzz::{fixture, run_script, Script};

fuzz_target!(|data: &[u8]| {
    run_script(&Script::parse(data, fixture()));
});
