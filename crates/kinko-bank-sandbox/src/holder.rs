//! Holder match: the client says who it believes holds the linked account (kana name and
//! birth date) and the bank answers match or no match, nothing more. The holder's data never
//! leaves the bank, so a token cannot be used to read it, only to confirm it.
//!
//! Kana names are compared the Zengin way, after [`normalize_kana`]: what differs only in how
//! a bank form or keyboard writes the same name matches.

use kinko_store::sql::Tx;
use subtle::ConstantTimeEq as _;

use crate::oauth::{Bank, ResourceGrant};
use crate::resource::{self, ResourceError};
use crate::store;

/// The scope a token needs for holder match.
pub const SCOPE: &str = "holder_match";
/// Bounds on what a client may send; longer is malformed, not a mismatch.
pub const KANA_LENGTH_MAX: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolderMatchRequest {
    pub kana_name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
}

/// The kana name in the form the bank compares, following the Zengin (全銀) transfer
/// character rules where they apply to names:
/// - spaces (ASCII, ideographic U+3000, and half-width) are ignored;
/// - half-width katakana become full-width, with a following ﾞ / ﾟ joined to the kana before
///   it (ｶﾞ → ガ); a separate ゛ / ゜ or a combining U+3099 / U+309A joins the same way;
/// - hiragana become katakana;
/// - small kana become their full-size kana (ァ→ア, ッ→ツ, ャ→ヤ, ヮ→ワ, ヵ→カ, ヶ→ケ), as
///   Zengin has no small kana;
/// - ヰ→イ, ヱ→エ, ヲ→オ (not in the Zengin set);
/// - every long-vowel or hyphen sign (ー ｰ - － ‐ − ‑ –) becomes ー;
/// - full-width Latin letters and digits become ASCII, and letters upper case.
///
/// Anything else passes unchanged, so an unusual character matches only itself.
pub fn normalize_kana(name: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(name.len());
    for character in name.chars() {
        let character = match character {
            ' ' | '\u{3000}' | '\t' => continue,
            '\u{FF9E}' | '\u{309B}' | '\u{3099}' => {
                join_mark(&mut out, DAKUTEN, '゛');
                continue;
            }
            '\u{FF9F}' | '\u{309C}' | '\u{309A}' => {
                join_mark(&mut out, HANDAKUTEN, '゜');
                continue;
            }
            '\u{FF66}'..='\u{FF9D}' => {
                let index = u32::from(character) - 0xFF66;
                HALF_WIDTH
                    .chars()
                    .nth(usize::try_from(index).unwrap_or(usize::MAX))
                    .unwrap_or(character)
            }
            '\u{3041}'..='\u{3096}' => {
                char::from_u32(u32::from(character) + 0x60).unwrap_or(character)
            }
            '\u{FF01}'..='\u{FF5E}' => {
                char::from_u32(u32::from(character) - 0xFEE0).unwrap_or(character)
            }
            other => other,
        };
        let character = match character {
            'ァ' => 'ア',
            'ィ' => 'イ',
            'ゥ' => 'ウ',
            'ェ' => 'エ',
            'ォ' => 'オ',
            'ャ' => 'ヤ',
            'ュ' => 'ユ',
            'ョ' => 'ヨ',
            'ッ' => 'ツ',
            'ヮ' => 'ワ',
            'ヵ' => 'カ',
            'ヶ' => 'ケ',
            'ヰ' => 'イ',
            'ヱ' => 'エ',
            'ヲ' => 'オ',
            'ｰ' | '-' | '－' | '‐' | '−' | '‑' | '–' => 'ー',
            other => other.to_ascii_uppercase(),
        };
        out.push(character);
    }
    out.into_iter().collect()
}

/// ｦ..ﾝ (U+FF66..U+FF9D) in order, full width.
const HALF_WIDTH: &str = "ヲァィゥェォャュョッーアイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン";
/// Base kana followed by its voiced form.
const DAKUTEN: &[(char, char)] = &[
    ('カ', 'ガ'),
    ('キ', 'ギ'),
    ('ク', 'グ'),
    ('ケ', 'ゲ'),
    ('コ', 'ゴ'),
    ('サ', 'ザ'),
    ('シ', 'ジ'),
    ('ス', 'ズ'),
    ('セ', 'ゼ'),
    ('ソ', 'ゾ'),
    ('タ', 'ダ'),
    ('チ', 'ヂ'),
    ('ツ', 'ヅ'),
    ('テ', 'デ'),
    ('ト', 'ド'),
    ('ハ', 'バ'),
    ('ヒ', 'ビ'),
    ('フ', 'ブ'),
    ('ヘ', 'ベ'),
    ('ホ', 'ボ'),
    ('ウ', 'ヴ'),
];
const HANDAKUTEN: &[(char, char)] = &[
    ('ハ', 'パ'),
    ('ヒ', 'ピ'),
    ('フ', 'プ'),
    ('ヘ', 'ペ'),
    ('ホ', 'ポ'),
];

/// Joins a voicing mark to the kana before it, or keeps it as a sign of its own.
fn join_mark(out: &mut Vec<char>, table: &[(char, char)], alone: char) {
    let joined = out
        .last()
        .and_then(|last| table.iter().find(|(base, _)| base == last))
        .map(|(_, voiced)| *voiced);
    match joined {
        Some(voiced) => {
            out.pop();
            out.push(voiced);
        }
        None => out.push(alone),
    }
}

impl Bank {
    /// Whether the holder of the grant's account has this kana name and birth date. Both are
    /// compared in constant time and together, so the answer says nothing of which differed.
    pub fn holder_match(
        &self,
        grant: &ResourceGrant,
        request: &HolderMatchRequest,
    ) -> Result<bool, ResourceError> {
        resource::require_scope(grant, SCOPE)?;
        if request.kana_name.chars().count() > KANA_LENGTH_MAX {
            return Err(ResourceError::RequestInvalid("kana_name"));
        }
        if request.birth_date.len() != 10 {
            return Err(ResourceError::RequestInvalid("birth_date"));
        }
        let account = self
            .database()
            .transaction(|tx: &mut dyn Tx| store::account(tx, grant.account_id))?
            .ok_or(ResourceError::NotFound)?;
        if account.customer_id != grant.customer_id {
            return Err(ResourceError::NotFound);
        }
        let kana_same = normalize_kana(&account.holder_kana)
            .as_bytes()
            .ct_eq(normalize_kana(&request.kana_name).as_bytes());
        let birth_same = account
            .birth_date
            .as_bytes()
            .ct_eq(request.birth_date.trim().as_bytes());
        Ok(bool::from(kana_same & birth_same))
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_kana;

    #[test]
    fn half_width_hiragana_spaces_and_small_kana_normalise_alike() {
        let reference = normalize_kana("ヤマダ タロウ");
        for variant in [
            "ﾔﾏﾀﾞ ﾀﾛｳ",
            "やまだ　たろう",
            "ヤマダタロウ",
            "ﾔﾏﾀ\u{FF9E}ﾀﾛｳ",
            "ヤマタ\u{3099}タロウ",
        ] {
            assert_eq!(normalize_kana(variant), reference, "{variant}");
        }
        assert_eq!(normalize_kana("キャッシュ"), "キヤツシユ");
        assert_eq!(normalize_kana("ｷｬｯｼｭ"), "キヤツシユ");
        assert_eq!(normalize_kana("ﾊﾟｰｸ"), "パーク");
        assert_eq!(normalize_kana("ＡＢＣ－ｃ"), "ABCーC");
        assert_ne!(
            normalize_kana("ヤマダ タロウ"),
            normalize_kana("ヤマダ ジロウ")
        );
        assert_ne!(normalize_kana("ヤマダ"), normalize_kana("ヤマタ"));
    }
}
