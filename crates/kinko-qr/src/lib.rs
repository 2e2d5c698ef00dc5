//! QR payments for Kinko: merchant-presented codes (EMV QRCPS MPM, as profiled by JPQR),
//! consumer-presented one-time payment codes, and QR images of both. Pure: no I/O, no store,
//! no clock (callers pass the time).
//!
//! # Merchant-presented codes
//!
//! A payload is a run of data objects `IDLLvalue`: a two-digit ID, a two-digit length (01–99)
//! and the value; templates (26–51 merchant account information, 62 additional data, 64
//! language) hold data objects of their own. **Lengths count characters** (Unicode scalar
//! values), as EMV says; only the language template may hold non-ASCII text, every other value
//! is printable ASCII. The payload ends with `6304` and a CRC-16/CCITT-FALSE (poly 0x1021,
//! init 0xFFFF) of the UTF-8 bytes up to and including `6304`, in four uppercase hex digits.
//! A whole payload is at most 512 bytes.
//!
//! Kinko writes, and [`decode`] insists on:
//!
//! | ID | content | rule |
//! |---|---|---|
//! | 00 | payload format indicator | `01`, first |
//! | 01 | point of initiation | `11` static (sticker, the payer types the amount), `12` dynamic |
//! | 02–25, 27–51 | other schemes' accounts | kept as they are (a JPQR sticker may serve several schemes) |
//! | 26 | Kinko's account | `00` = [`KINKO_GUID`], `01` = merchant id (lowercase hyphenated UUID) |
//! | 52 | merchant category code | 4 digits |
//! | 53 | currency | `392` (yen) |
//! | 54 | amount | dynamic codes only; digits, no sign, no decimals, no leading zero, 1 to 13 digits |
//! | 58 | country | `JP` |
//! | 59, 60 | name (≤ 25), city (≤ 15) | printable ASCII |
//! | 61 | postal code | 7 digits |
//! | 62 | additional data | `03` store label, `05` reference label (dynamic codes only, required there), `07` terminal label |
//! | 64 | language template | `00` = `JA`, `01` name in Japanese (≤ 25 characters), `02` city in Japanese (≤ 15) |
//! | 63 | CRC | last, length `04` |
//!
//! Any other ID or sub-ID, a duplicate, a length past the end or not two digits, anything
//! after the CRC, a wrong CRC or a lowercase one is refused with a [`QrError`] whose code is
//! stable (`QR_MALFORMED_TLV`, `QR_CRC_MISMATCH`, `QR_CRC_NOT_LAST`, `QR_FIELD_MISSING`,
//! `QR_FIELD_INVALID`, `QR_DUPLICATE_FIELD`, `QR_FIELD_UNKNOWN`, `QR_TOO_LONG`,
//! `QR_NOT_KINKO`). Fields between 00 and 63 may come in any order, as EMV allows; [`encode`]
//! writes them in ascending order. `decode` never panics.
//!
//! The CRC catches accidents, not attacks. It detects every change confined to 16 consecutive
//! bits, so any one ASCII character replaced by another ASCII character; a change that alters
//! the byte length (a Japanese character replaced, say) is caught with probability
//! 1 − 2⁻¹⁶ by the CRC, or by the field rules.
//!
//! # What the server must still check
//!
//! Anyone can print a valid payload with a recomputed CRC. A decoded code is therefore only a
//! key into Kinko's records ([`MerchantQr::reference`]):
//!
//! - **Static code**: look up the merchant by id; refuse an unknown, suspended or closed one
//!   (a swapped sticker names a merchant Kinko knows, so show the payer the merchant's name
//!   *from the records* to confirm before paying).
//! - **Dynamic code**: look up the payment request by merchant id and reference label; charge
//!   the amount in the record, never the amount in the code, and refuse if they differ, or if
//!   the request is unknown, paid or expired. An altered amount with a recomputed CRC passes
//!   [`decode`] and must fail here.
//! - Names, city and category in the code are for display by other apps; Kinko shows its own.
//!
//! # Consumer-presented one-time codes
//!
//! [`paycode::issue`] and [`paycode::verify`]: HMAC-SHA256-signed, base32, at most 60 s of
//! life. The crate checks the tag and the time; **single use is the server's job** (record the
//! nonce when redeeming; see [`paycode`]).
//!
//! # Images
//!
//! [`render::svg`] draws either kind as an SVG QR code.

mod merchant;
pub mod paycode;
pub mod render;
mod tlv;

pub use merchant::{
    AMOUNT_YEN_MAX, Field, ForeignAccount, KINKO_GUID, MerchantDetails, MerchantQr,
    PAYLOAD_BYTES_MAX, Payment, QrError, QrReference, decode, encode,
};
pub use paycode::{Claims, CodeError, PayCodeKey};
