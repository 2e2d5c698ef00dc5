//! The merchant payload parser must never panic, and whatever it accepts must survive an
//! encode and a decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(code) = kinko_qr::decode(text) {
        assert_eq!(kinko_qr::decode(&kinko_qr::encode(&code)), Ok(code));
    }
});
