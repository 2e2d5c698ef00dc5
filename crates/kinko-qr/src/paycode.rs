//! Consumer-presented one-time payment codes: the payer's app shows one, the merchant scans it
//! and redeems it through the merchant API.
//!
//! A code is 65 bytes — version (1), wallet id (16), random nonce (16), issued-at and
//! expires-at in ms since the epoch (8 + 8), and an HMAC-SHA256 tag over all of that truncated
//! to 16 bytes — written in unpadded RFC 4648 base32 (104 characters). Base32's alphabet is
//! inside the QR alphanumeric mode (5.5 bits a character), so the QR stays smaller than it
//! would with base64url, which needs byte mode (8 bits).
//!
//! **Why HMAC and not Ed25519**: the server issues the code (the app asks for one when the pay
//! screen opens) and the same server verifies it when the merchant redeems it; nobody else
//! verifies, so a shared-key MAC gives the same assurance. A 16-byte tag instead of a 64-byte
//! signature keeps the code at 104 characters instead of 181: a version 5 QR (37 modules at
//! level M) instead of version 8 (49), which scans faster off a phone screen. A 128-bit tag leaves 2^-128 per forgery
//! attempt. Codes made offline by the phone would need a device key and signatures; Kinko
//! does not do that.
//!
//! **What this module does not do**: single use. [`verify`] checks the tag and the time only;
//! the server must record each redeemed code's [`Claims::nonce`] (unique, kept at least until
//! [`Claims::expires_at_ms`]) in the same transaction as the payment and refuse a second
//! redemption.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use kinko_core::{ErrorCode, ErrorKind};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The longest a code lives; [`verify`] refuses a code claiming longer even with a valid tag.
pub const PAY_CODE_LIFETIME_MS: u64 = 60_000;
/// How far ahead of the verifier's clock an issue time may be (servers' clocks differ a little).
pub const PAY_CODE_CLOCK_SKEW_MS: u64 = 5_000;
/// The length of every code, in base32 characters.
pub const PAY_CODE_CHARS: usize = 104;

const VERSION: u8 = 1;
const TAG_BYTES: usize = 16;
const BODY_BYTES: usize = 1 + 16 + 16 + 8 + 8;
const CODE_BYTES: usize = BODY_BYTES + TAG_BYTES;
/// Binds the tag to this use, so a key shared by mistake with another HMAC use cannot be
/// turned against it.
const DOMAIN: &[u8] = b"kinko/pay-code/v1";

/// The secret that signs and checks codes. Held by the server only; zeroed when dropped and
/// never printed.
pub struct PayCodeKey(Zeroizing<[u8; 32]>);

impl PayCodeKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A fresh key from the operating system's generator.
    pub fn generate() -> Self {
        Self::from_bytes(rand::random())
    }

    fn mac(&self, body: &[u8]) -> Hmac<Sha256> {
        // HMAC pads a short key with zeros to the hash's 64-byte block (RFC 2104 §2), so
        // handing it the padded block is the same MAC, through a constructor that cannot fail.
        let mut block = Zeroizing::new([0u8; 64]);
        block[..32].copy_from_slice(self.0.as_slice());
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&(*block).into());
        mac.update(DOMAIN);
        mac.update(body);
        mac
    }
}

impl std::fmt::Debug for PayCodeKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PayCodeKey(..)")
    }
}

/// What a valid code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// The paying wallet.
    pub wallet: u128,
    /// Random, unique per code: the server's single-use key.
    pub nonce: [u8; 16],
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("not a payment code")]
    Malformed,
    #[error("the payment code is not genuine")]
    BadSignature,
    #[error("the payment code has expired")]
    Expired,
    #[error("the payment code is not valid yet")]
    NotYetValid,
}

impl ErrorCode for CodeError {
    fn code(&self) -> &'static str {
        match self {
            CodeError::Malformed => "PAY_CODE_MALFORMED",
            CodeError::BadSignature => "PAY_CODE_BAD_SIGNATURE",
            CodeError::Expired => "PAY_CODE_EXPIRED",
            CodeError::NotYetValid => "PAY_CODE_NOT_YET_VALID",
        }
    }

    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

/// A code for `wallet`, valid for [`PAY_CODE_LIFETIME_MS`] from `now_ms`.
pub fn issue(key: &PayCodeKey, wallet: u128, now_ms: u64) -> String {
    issue_with_nonce(key, wallet, rand::random(), now_ms)
}

fn issue_with_nonce(key: &PayCodeKey, wallet: u128, nonce: [u8; 16], now_ms: u64) -> String {
    let mut code = Vec::with_capacity(CODE_BYTES);
    code.push(VERSION);
    code.extend_from_slice(&wallet.to_be_bytes());
    code.extend_from_slice(&nonce);
    code.extend_from_slice(&now_ms.to_be_bytes());
    code.extend_from_slice(&now_ms.saturating_add(PAY_CODE_LIFETIME_MS).to_be_bytes());
    let tag = key.mac(&code).finalize().into_bytes();
    code.extend_from_slice(&tag[..TAG_BYTES]);
    data_encoding::BASE32_NOPAD.encode(&code)
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn u128_at(bytes: &[u8], at: usize) -> Option<u128> {
    Some(u128::from_be_bytes(
        bytes.get(at..at + 16)?.try_into().ok()?,
    ))
}

/// Checks the tag, then the time. Single use is the server's job (see the module docs).
pub fn verify(key: &PayCodeKey, code: &str, now_ms: u64) -> Result<Claims, CodeError> {
    if code.len() != PAY_CODE_CHARS {
        return Err(CodeError::Malformed);
    }
    // Strict: uppercase, no padding, no trailing bits set, so one code has one spelling.
    let bytes = data_encoding::BASE32_NOPAD
        .decode(code.as_bytes())
        .map_err(|_| CodeError::Malformed)?;
    if bytes.len() != CODE_BYTES || bytes.first() != Some(&VERSION) {
        return Err(CodeError::Malformed);
    }
    let (body, tag) = bytes.split_at(BODY_BYTES);
    key.mac(body)
        .verify_truncated_left(tag)
        .map_err(|_| CodeError::BadSignature)?;
    let claims = (|| {
        Some(Claims {
            wallet: u128_at(body, 1)?,
            nonce: body.get(17..33)?.try_into().ok()?,
            issued_at_ms: u64_at(body, 33)?,
            expires_at_ms: u64_at(body, 41)?,
        })
    })()
    .ok_or(CodeError::Malformed)?;
    let lifetime_ms = claims.expires_at_ms.checked_sub(claims.issued_at_ms);
    if claims.wallet == 0 || !matches!(lifetime_ms, Some(1..=PAY_CODE_LIFETIME_MS)) {
        return Err(CodeError::Malformed);
    }
    if claims.issued_at_ms > now_ms.saturating_add(PAY_CODE_CLOCK_SKEW_MS) {
        return Err(CodeError::NotYetValid);
    }
    if now_ms >= claims.expires_at_ms {
        return Err(CodeError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALLET: u128 = 0x0190_0000_0000_7000_8000_0000_0000_0001;
    const NOW_MS: u64 = 1_800_000_000_000;

    fn key() -> PayCodeKey {
        PayCodeKey::from_bytes([7; 32])
    }

    #[test]
    fn the_padded_key_gives_the_same_mac_as_the_plain_key() {
        let mut plain =
            <Hmac<Sha256> as Mac>::new_from_slice(&[7; 32]).unwrap_or_else(|e| panic!("{e}"));
        plain.update(DOMAIN);
        plain.update(b"body");
        assert_eq!(
            key().mac(b"body").finalize().into_bytes(),
            plain.finalize().into_bytes()
        );
    }

    #[test]
    fn a_fresh_code_verifies_with_its_claims() {
        let code = issue(&key(), WALLET, NOW_MS);
        assert_eq!(code.len(), PAY_CODE_CHARS);
        assert!(
            code.bytes()
                .all(|byte| byte.is_ascii_uppercase() || (b'2'..=b'7').contains(&byte))
        );
        let claims = verify(&key(), &code, NOW_MS + 1_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(claims.wallet, WALLET);
        assert_eq!(claims.issued_at_ms, NOW_MS);
        assert_eq!(claims.expires_at_ms, NOW_MS + PAY_CODE_LIFETIME_MS);
    }

    #[test]
    fn two_codes_for_one_wallet_differ_in_nonce() {
        let first = verify(&key(), &issue(&key(), WALLET, NOW_MS), NOW_MS);
        let second = verify(&key(), &issue(&key(), WALLET, NOW_MS), NOW_MS);
        let (first, second) = (
            first.unwrap_or_else(|e| panic!("{e}")),
            second.unwrap_or_else(|e| panic!("{e}")),
        );
        assert_ne!(first.nonce, second.nonce);
    }

    #[test]
    fn expiry_and_clock_skew_are_enforced_at_the_edges() {
        let code = issue(&key(), WALLET, NOW_MS);
        let last_valid_ms = NOW_MS + PAY_CODE_LIFETIME_MS - 1;
        assert!(verify(&key(), &code, last_valid_ms).is_ok());
        assert_eq!(
            verify(&key(), &code, last_valid_ms + 1),
            Err(CodeError::Expired)
        );
        assert!(verify(&key(), &code, NOW_MS - PAY_CODE_CLOCK_SKEW_MS).is_ok());
        assert_eq!(
            verify(&key(), &code, NOW_MS - PAY_CODE_CLOCK_SKEW_MS - 1),
            Err(CodeError::NotYetValid)
        );
    }

    #[test]
    fn another_key_or_any_flipped_bit_is_refused() {
        let code = issue(&key(), WALLET, NOW_MS);
        assert_eq!(
            verify(&PayCodeKey::from_bytes([8; 32]), &code, NOW_MS),
            Err(CodeError::BadSignature)
        );
        let bytes = data_encoding::BASE32_NOPAD
            .decode(code.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        for bit in 0..CODE_BYTES * 8 {
            let mut tampered = bytes.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            let tampered = data_encoding::BASE32_NOPAD.encode(&tampered);
            let outcome = verify(&key(), &tampered, NOW_MS);
            assert!(
                matches!(outcome, Err(CodeError::BadSignature | CodeError::Malformed)),
                "bit {bit}: {outcome:?}"
            );
        }
    }

    #[test]
    fn a_signed_lifetime_over_sixty_seconds_is_refused() {
        // Only a holder of the key could make one; refusing it bounds the damage of a bug in
        // the issuing path.
        let mut body = vec![VERSION];
        body.extend_from_slice(&WALLET.to_be_bytes());
        body.extend_from_slice(&[1; 16]);
        body.extend_from_slice(&NOW_MS.to_be_bytes());
        body.extend_from_slice(&(NOW_MS + PAY_CODE_LIFETIME_MS + 1).to_be_bytes());
        let tag = key().mac(&body).finalize().into_bytes();
        body.extend_from_slice(&tag[..TAG_BYTES]);
        let code = data_encoding::BASE32_NOPAD.encode(&body);
        assert_eq!(verify(&key(), &code, NOW_MS), Err(CodeError::Malformed));
    }

    #[test]
    fn malformed_text_is_refused_without_panicking() {
        let code = issue_with_nonce(&key(), WALLET, [3; 16], NOW_MS);
        for bad in [
            String::new(),
            code.to_lowercase(),
            format!("{code}="),
            code[..PAY_CODE_CHARS - 1].to_owned(),
            format!("{}1", &code[..PAY_CODE_CHARS - 1]),
            "é".repeat(52),
        ] {
            assert!(
                matches!(
                    verify(&key(), &bad, NOW_MS),
                    Err(CodeError::Malformed | CodeError::BadSignature)
                ),
                "{bad}"
            );
        }
        assert_eq!(
            issue_with_nonce(&key(), WALLET, [3; 16], NOW_MS),
            code,
            "the code depends only on its inputs"
        );
    }
}
