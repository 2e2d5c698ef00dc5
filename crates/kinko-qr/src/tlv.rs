//! EMV TLV: a two-digit ID, a two-digit length and the value, repeated; and the CRC that ends a
//! payload.
//!
//! Lengths count **characters** (Unicode scalar values), not bytes, as EMV QRCPS says ("the
//! number of characters in the value field"). Only the language template (ID 64) may hold
//! non-ASCII text; everywhere else a character is a byte. Encoder and decoder both count with
//! `str::chars`, so they cannot disagree.

use crc::{CRC_16_IBM_3740, Crc};

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR); the catalogue
/// calls it CRC-16/IBM-3740.
const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);

/// The longest value a two-digit length can announce.
pub const VALUE_CHARS_MAX: usize = 99;

/// One data object as read from a payload; `value` borrows the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    pub id: u8,
    pub value: &'a str,
    /// Byte offset of the ID's first digit in the text that was parsed.
    pub start: usize,
}

/// Where in the parsed text the structure broke (byte offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    pub at_byte: usize,
}

/// Reads two ASCII digits at `at`; anything else (a sign, a space, half of a multi-byte
/// character, the end of the text) is `None`.
fn two_digits(text: &str, at: usize) -> Option<u8> {
    match text.as_bytes().get(at..at.checked_add(2)?)? {
        [tens @ b'0'..=b'9', ones @ b'0'..=b'9'] => Some((tens - b'0') * 10 + (ones - b'0')),
        _ => None,
    }
}

/// The byte length of the first `chars` characters of `text`, or `None` if it has fewer.
fn byte_len_of_chars(text: &str, chars: usize) -> Option<usize> {
    let mut seen = 0;
    for (offset, _) in text.char_indices() {
        if seen == chars {
            return Some(offset);
        }
        seen += 1;
    }
    (seen == chars).then_some(text.len())
}

/// Reads the data object that starts at byte `at` of `text` (a character boundary).
pub fn read_element(text: &str, at: usize) -> Result<Element<'_>, Malformed> {
    let malformed = Malformed { at_byte: at };
    let id = two_digits(text, at).ok_or(malformed)?;
    let value_chars = usize::from(two_digits(text, at + 2).ok_or(malformed)?);
    if value_chars == 0 {
        // EMV lengths run from 01 to 99: an empty field is written by leaving it out.
        return Err(malformed);
    }
    // The four bytes just read are ASCII digits, so `at + 4` is a character boundary.
    let rest = text.get(at + 4..).ok_or(malformed)?;
    let value_bytes = byte_len_of_chars(rest, value_chars).ok_or(malformed)?;
    let value = rest.get(..value_bytes).ok_or(malformed)?;
    Ok(Element {
        id,
        value,
        start: at,
    })
}

/// Parses a whole text (a template's value) into its data objects; the text must end exactly
/// where the last object ends.
pub fn parse(text: &str) -> Result<Vec<Element<'_>>, Malformed> {
    let mut elements = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let element = read_element(text, at)?;
        at = element.end();
        elements.push(element);
    }
    Ok(elements)
}

impl Element<'_> {
    /// Byte offset just past this element.
    pub fn end(&self) -> usize {
        self.start + 4 + self.value.len()
    }
}

/// Appends one data object. The caller has checked that `value` holds 1 to 99 characters.
pub fn write(out: &mut String, id: u8, value: &str) {
    let chars = value.chars().count();
    debug_assert!(id < 100 && (1..=VALUE_CHARS_MAX).contains(&chars));
    out.push_str(&format!("{id:02}{chars:02}"));
    out.push_str(value);
}

/// The CRC of a payload's bytes up to and including "6304", as four uppercase hex digits.
pub fn crc_hex(covered: &str) -> String {
    format!("{:04X}", CRC16.checksum(covered.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_ccitt_false_check_value() {
        assert_eq!(CRC16.checksum(b"123456789"), 0x29B1);
        assert_eq!(crc_hex("123456789"), "29B1");
        assert_eq!(CRC16.checksum(b""), 0xFFFF);
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let mut out = String::new();
        write(&mut out, 1, "カフェ");
        assert_eq!(out, "0103カフェ");
        let element = read_element(&out, 0).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(element.value, "カフェ");
        assert_eq!(element.end(), out.len());
    }

    #[test]
    fn parse_refuses_bad_structure() {
        for (text, at_byte) in [
            ("0", 0),             // ID cut short
            ("01", 0),            // no length
            ("01+2ab", 0),        // sign in the length
            ("01 2ab", 0),        // space in the length
            ("0100", 0),          // zero length
            ("0103ab", 0),        // length past the end
            ("0102ab0", 6),       // trailing half element
            ("a102ab", 0),        // non-digit ID
            ("0102ab01０2ab", 6), // full-width digit in a length
        ] {
            assert_eq!(parse(text), Err(Malformed { at_byte }), "{text}");
        }
        assert_eq!(parse("").map(|elements| elements.len()), Ok(0));
    }

    #[test]
    fn parse_reads_consecutive_elements() {
        let elements = parse("0002ab1001c").unwrap_or_else(|e| panic!("{e:?}"));
        let summary: Vec<(u8, &str, usize)> = elements
            .iter()
            .map(|element| (element.id, element.value, element.start))
            .collect();
        assert_eq!(summary, vec![(0, "ab", 0), (10, "c", 6)]);
    }
}
