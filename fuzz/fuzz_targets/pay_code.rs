//! Payment-code verification must never panic, and never accept what the key did not sign
//! (the fuzzer cannot forge a 128-bit tag, so any success is a bug).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = kinko_qr::PayCodeKey::from_bytes([0x5a; 32]);
    assert!(kinko_qr::paycode::verify(&key, text, 1_800_000_000_000).is_err());
});
