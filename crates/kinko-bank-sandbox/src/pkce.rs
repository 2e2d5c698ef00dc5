//! PKCE with S256 only (RFC 7636): the client proves at the token endpoint that it is the
//! one that started the authorization, so a stolen code is useless on its own.

use subtle::ConstantTimeEq as _;

pub const VERIFIER_LENGTH_MIN: usize = 43;
pub const VERIFIER_LENGTH_MAX: usize = 128;
/// BASE64URL of a 32-byte SHA-256 digest, unpadded.
pub const CHALLENGE_LENGTH: usize = 43;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    #[error("only the S256 code challenge method is accepted")]
    MethodUnsupported,
    #[error("the code challenge is not a base64url SHA-256 digest")]
    ChallengeMalformed,
    #[error("the code verifier is missing")]
    VerifierMissing,
    #[error("the code verifier is not 43–128 unreserved characters")]
    VerifierMalformed,
    #[error("the code verifier does not match the challenge")]
    Mismatch,
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Checks the challenge sent with the pushed request.
pub fn check_challenge(challenge: &str, method: &str) -> Result<(), PkceError> {
    // `plain` would send the secret itself; FAPI 2.0 allows S256 only.
    if method != "S256" {
        return Err(PkceError::MethodUnsupported);
    }
    let well_formed = challenge.len() == CHALLENGE_LENGTH
        && challenge
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'));
    if !well_formed {
        return Err(PkceError::ChallengeMalformed);
    }
    Ok(())
}

/// Checks the verifier sent to the token endpoint against the stored challenge.
pub fn verify(verifier: Option<&str>, challenge: &str) -> Result<(), PkceError> {
    let verifier = verifier.ok_or(PkceError::VerifierMissing)?;
    let well_formed = (VERIFIER_LENGTH_MIN..=VERIFIER_LENGTH_MAX).contains(&verifier.len())
        && verifier.bytes().all(is_unreserved);
    if !well_formed {
        return Err(PkceError::VerifierMalformed);
    }
    let computed = crate::random::sha256_b64url(verifier.as_bytes());
    if bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
        Ok(())
    } else {
        Err(PkceError::Mismatch)
    }
}

/// The S256 challenge for a verifier (what the client computes).
pub fn challenge_for(verifier: &str) -> String {
    crate::random::sha256_b64url(verifier.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_example() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(challenge_for(verifier), challenge);
        assert_eq!(verify(Some(verifier), challenge), Ok(()));
        assert_eq!(check_challenge(challenge, "S256"), Ok(()));
        assert_eq!(
            check_challenge(challenge, "plain"),
            Err(PkceError::MethodUnsupported)
        );
        assert_eq!(verify(None, challenge), Err(PkceError::VerifierMissing));
        assert_eq!(
            verify(Some("short"), challenge),
            Err(PkceError::VerifierMalformed)
        );
        let other = "eBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(verify(Some(other), challenge), Err(PkceError::Mismatch));
    }
}
