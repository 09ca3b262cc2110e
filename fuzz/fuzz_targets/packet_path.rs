#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| prism_server::fuzz::packet_path(data));
