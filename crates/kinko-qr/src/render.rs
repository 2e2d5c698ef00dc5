//! QR images of payloads and payment codes, as SVG.
//!
//! SVG only: PNG would pull the `image` crate (about half a minute of build on CI) for what a
//! browser or the app draws from SVG as well. Error correction level M (about 15 % of the
//! code can be lost) survives a scuffed sticker or glare on a screen without making the code
//! much denser.

use kinko_core::{ErrorCode, ErrorKind};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// The smallest side of the image, in pixels, quiet zone included.
pub const SVG_SIDE_MIN_PX: u32 = 240;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("too much data for a QR code")]
    TooLong,
}

impl ErrorCode for RenderError {
    fn code(&self) -> &'static str {
        match self {
            RenderError::TooLong => "QR_RENDER_TOO_LONG",
        }
    }

    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

/// An SVG document of the QR code for `text` (a merchant payload or a payment code), black on
/// white, with the quiet zone. The encoder picks the densest mode: alphanumeric for payment
/// codes, bytes (UTF-8) for payloads.
pub fn svg(text: &str) -> Result<String, RenderError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|_| RenderError::TooLong)?;
    Ok(code
        .render::<svg::Color<'_>>()
        .min_dimensions(SVG_SIDE_MIN_PX, SVG_SIDE_MIN_PX)
        .quiet_zone(true)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_svg_document_and_refuses_what_no_qr_holds() {
        let image = svg("000201010211").unwrap_or_else(|e| panic!("{e}"));
        assert!(image.starts_with("<?xml"));
        assert!(image.contains("<svg") && image.trim_end().ends_with("</svg>"));
        assert!(image.contains("fill=\"#000000\""));
        assert_eq!(svg(&"x".repeat(5_000)), Err(RenderError::TooLong));
    }

    #[test]
    fn a_payment_code_uses_the_alphanumeric_mode_and_stays_small() {
        let key = crate::PayCodeKey::from_bytes([1; 32]);
        let code = crate::paycode::issue(&key, 42, 1_800_000_000_000);
        let width = |text: &str| {
            QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
                .map(|qr| qr.width())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        // 104 characters: version 5 (37 modules) at level M in alphanumeric mode. The same
        // text in lowercase must use byte mode and needs version 6.
        assert_eq!(width(&code), 37);
        assert!(width(&code.to_lowercase()) > width(&code));
        assert!(svg(&code).is_ok());
    }
}
