//! Merchant-presented codes: golden payloads, the JPQR rules, D11 tampering, property tests and
//! a no-panic sweep over random input.

use kinko_core::{ErrorCode, Money};
use kinko_qr::{
    AMOUNT_YEN_MAX, ForeignAccount, MerchantDetails, MerchantQr, Payment, QrError, QrReference,
    decode, encode,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

const MERCHANT_ID: u128 = 0x0191d8a4_5e2b_7c3a_9f10_3b5c2e8d4a71;

/// Computed outside Rust (Python, bit by bit) so that the golden payloads test the CRC too.
const STATIC_PAYLOAD: &str = "00020101021126520008jp.kinko01360191d8a4-5e2b-7c3a-9f10-3b5c2e8d4a715204581253033925802JP5918KINKO CAFE SHIBUYA6010SHIBUYA-KU6107150000262130309STORE-00164260002JA0109キンコカフェ渋谷店0203渋谷区6304A250";
const DYNAMIC_PAYLOAD: &str = "00020101021226520008jp.kinko01360191d8a4-5e2b-7c3a-9f10-3b5c2e8d4a71520458125303392540412805802JP5918KINKO CAFE SHIBUYA6010SHIBUYA-KU6107150000262290309STORE-0010512ORDER-7F3K2Q64260002JA0109キンコカフェ渋谷店0203渋谷区63044FB0";
/// The example in EMV QRCPS MPM: Chinese text in the language template, lengths in
/// characters, CRC A13A over the UTF-8 bytes.
const EMVCO_EXAMPLE: &str = "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678520441115802CN5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京540523.7253031565502016233030412340603***0708A60086670902ME91320016A0112233449988770708123456786304A13A";

const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_3740);

fn cafe() -> MerchantDetails {
    MerchantDetails {
        merchant_id: MERCHANT_ID,
        category_code: 5812,
        name: "KINKO CAFE SHIBUYA".to_owned(),
        city: "SHIBUYA-KU".to_owned(),
        postal_code: "1500002".to_owned(),
        name_ja: "キンコカフェ渋谷店".to_owned(),
        city_ja: Some("渋谷区".to_owned()),
        store_label: Some("STORE-001".to_owned()),
        terminal_label: None,
        foreign_accounts: Vec::new(),
    }
}

fn dynamic_payment() -> Payment {
    Payment::Dynamic {
        amount_yen: 1280,
        reference: "ORDER-7F3K2Q".to_owned(),
    }
}

fn code(details: MerchantDetails, payment: Payment) -> MerchantQr {
    MerchantQr::new(details, payment).unwrap_or_else(|e| panic!("{e}"))
}

/// One data object, its length in characters.
fn tlv(id: u8, value: &str) -> String {
    format!("{id:02}{:02}{value}", value.chars().count())
}

/// `body` followed by a correct CRC field.
fn with_crc(body: &str) -> String {
    let covered = format!("{body}6304");
    let crc = CRC16.checksum(covered.as_bytes());
    format!("{covered}{crc:04X}")
}

/// The static payload's fields, to rebuild it with one field changed.
fn static_fields() -> Vec<(u8, String)> {
    let account = tlv(0, "jp.kinko") + &tlv(1, "0191d8a4-5e2b-7c3a-9f10-3b5c2e8d4a71");
    let language = tlv(0, "JA") + &tlv(1, "キンコカフェ渋谷店");
    vec![
        (0, "01".to_owned()),
        (1, "11".to_owned()),
        (26, account),
        (52, "5812".to_owned()),
        (53, "392".to_owned()),
        (58, "JP".to_owned()),
        (59, "KINKO CAFE SHIBUYA".to_owned()),
        (60, "SHIBUYA-KU".to_owned()),
        (61, "1500002".to_owned()),
        (64, language),
    ]
}

fn payload_of(fields: &[(u8, String)]) -> String {
    with_crc(
        &fields
            .iter()
            .map(|(id, value)| tlv(*id, value))
            .collect::<String>(),
    )
}

/// The static fields with `id` replaced by `value` (or removed when `None`), added at the end
/// when absent.
fn static_with(id: u8, value: Option<&str>) -> String {
    let mut fields: Vec<(u8, String)> = static_fields()
        .into_iter()
        .filter(|(field, _)| *field != id)
        .collect();
    if let Some(value) = value {
        let at = fields
            .iter()
            .position(|(field, _)| *field > id)
            .unwrap_or(fields.len());
        fields.insert(at, (id, value.to_owned()));
    }
    payload_of(&fields)
}

fn error_code(payload: &str) -> &'static str {
    match decode(payload) {
        Ok(code) => panic!("accepted {payload:?} as {code:?}"),
        Err(error) => error.code(),
    }
}

#[test]
fn encode_writes_the_golden_payloads() {
    assert_eq!(encode(&code(cafe(), Payment::Static)), STATIC_PAYLOAD);
    assert_eq!(encode(&code(cafe(), dynamic_payment())), DYNAMIC_PAYLOAD);
}

#[test]
fn decode_reads_the_golden_payloads() {
    let sticker = decode(STATIC_PAYLOAD).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sticker, code(cafe(), Payment::Static));
    assert_eq!(sticker.amount(), None);
    assert_eq!(
        sticker.reference(),
        QrReference::Merchant {
            merchant_id: MERCHANT_ID
        }
    );

    let sale = decode(DYNAMIC_PAYLOAD).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sale.amount(), Some(Money::yen(1280)));
    assert_eq!(sale.details().name_ja, "キンコカフェ渋谷店");
    assert_eq!(
        sale.reference(),
        QrReference::PaymentRequest {
            merchant_id: MERCHANT_ID,
            reference: "ORDER-7F3K2Q"
        }
    );
}

#[test]
fn the_emvco_example_passes_the_tlv_and_crc_checks_but_is_not_kinkos() {
    // Proves the character-counted lengths and the CRC over UTF-8 agree with EMVCo's own
    // example: a structural or CRC fault would be reported before "not Kinko".
    assert_eq!(error_code(EMVCO_EXAMPLE), "QR_NOT_KINKO");
    let broken_crc = EMVCO_EXAMPLE.replace("6304A13A", "6304A13B");
    assert_eq!(error_code(&broken_crc), "QR_CRC_MISMATCH");
}

#[test]
fn fields_may_come_in_any_order_between_the_indicator_and_the_crc() {
    let mut fields = static_fields();
    fields[1..].reverse();
    assert_eq!(
        decode(&payload_of(&fields)),
        Ok(code(
            MerchantDetails {
                city_ja: None,
                store_label: None,
                ..cafe()
            },
            Payment::Static
        ))
    );
}

#[test]
fn other_schemes_accounts_survive_a_round_trip() {
    let details = MerchantDetails {
        foreign_accounts: vec![
            ForeignAccount {
                id: 29,
                value: tlv(0, "jp.example.pay") + &tlv(1, "M-0042"),
            },
            ForeignAccount {
                id: 4,
                value: "5555444433332222".to_owned(),
            },
        ],
        ..cafe()
    };
    let with_others = code(details, Payment::Static);
    let payload = encode(&with_others);
    assert!(payload.starts_with("0002010102110416555544443333222226"));
    assert_eq!(decode(&payload), Ok(with_others.clone()));
    assert_eq!(
        with_others.details().foreign_accounts[0].id,
        4,
        "sorted by ID"
    );
}

#[test]
fn d11_malformed_tlv_is_refused() {
    for payload in [
        String::new(),
        "0".to_owned(),
        "000201".to_owned(),
        STATIC_PAYLOAD.replacen("0002", "00+2", 1),
        STATIC_PAYLOAD.replacen("5204", "52 4", 1),
        STATIC_PAYLOAD.replacen("5204", "52x4", 1),
        STATIC_PAYLOAD.replacen("5204", "5299", 1),
        format!("{}0", &STATIC_PAYLOAD[..20]),
        with_crc(
            &(static_fields()
                .iter()
                .map(|(id, v)| tlv(*id, v))
                .collect::<String>()
                + "5900"),
        ),
        with_crc(
            &(static_fields()
                .iter()
                .map(|(id, v)| tlv(*id, v))
                .collect::<String>()
                + "62"),
        ),
    ] {
        let code = match decode(&payload) {
            Ok(code) => panic!("accepted {payload:?} as {code:?}"),
            Err(error) => error.code(),
        };
        assert!(
            matches!(
                code,
                "QR_MALFORMED_TLV" | "QR_FIELD_MISSING" | "QR_CRC_MISMATCH"
            ),
            "{payload:?}: {code}"
        );
    }
    // Structure is checked before anything else: a length past the end inside the body.
    assert_eq!(
        error_code(&STATIC_PAYLOAD.replacen("5918KINKO", "5999KINKO", 1)),
        "QR_MALFORMED_TLV"
    );
    // A template whose inside is not TLV.
    assert_eq!(
        error_code(&static_with(62, Some("03x9STORE-001"))),
        "QR_MALFORMED_TLV"
    );
}

#[test]
fn d11_a_wrong_crc_is_refused() {
    let crc_at = STATIC_PAYLOAD.len() - 4;
    let (body, crc) = STATIC_PAYLOAD.split_at(crc_at);
    let wrong = u16::from_str_radix(crc, 16).unwrap_or_else(|e| panic!("{e}")) ^ 1;
    assert_eq!(error_code(&format!("{body}{wrong:04X}")), "QR_CRC_MISMATCH");
    assert_eq!(
        error_code(&format!("{body}{}", crc.to_lowercase())),
        "QR_FIELD_INVALID",
        "the CRC is uppercase hex"
    );
    // A changed amount without a new CRC.
    assert_eq!(
        error_code(&DYNAMIC_PAYLOAD.replacen("54041280", "54041281", 1)),
        "QR_CRC_MISMATCH"
    );
}

#[test]
fn d11_an_altered_amount_with_a_recomputed_crc_parses_and_keeps_its_reference() {
    // The parser cannot tell: the CRC is not a signature. What stops the attack is that the
    // server charges the amount of the payment request the reference names, which this test
    // shows the tampered code still names.
    let body = &DYNAMIC_PAYLOAD[..DYNAMIC_PAYLOAD.len() - 8];
    let tampered = with_crc(&body.replacen("54041280", "540212", 1));
    let original = decode(DYNAMIC_PAYLOAD).unwrap_or_else(|e| panic!("{e}"));
    let altered = decode(&tampered).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(altered.amount(), Some(Money::yen(12)));
    assert_ne!(altered.amount(), original.amount());
    assert_eq!(altered.reference(), original.reference());
}

#[test]
fn d11_a_static_code_for_an_unknown_merchant_parses_and_names_only_that_merchant() {
    // A swapped sticker: well formed, a merchant id Kinko has never issued. The parser accepts
    // it; the server looks the id up and refuses (here, a registry of one merchant).
    let stranger = 0x0191d8a4_5e2b_7c3a_9f10_000000000bad;
    let swapped = code(
        MerchantDetails {
            merchant_id: stranger,
            ..cafe()
        },
        Payment::Static,
    );
    let scanned = decode(&encode(&swapped)).unwrap_or_else(|e| panic!("{e}"));
    let known_merchants = [MERCHANT_ID];
    let QrReference::Merchant { merchant_id } = scanned.reference() else {
        panic!("a static code names a merchant");
    };
    assert_eq!(merchant_id, stranger);
    assert!(!known_merchants.contains(&merchant_id));
}

#[test]
fn duplicates_are_refused_at_the_top_and_inside_templates() {
    let mut fields = static_fields();
    fields.insert(5, (59, "EVIL CAFE".to_owned()));
    assert_eq!(error_code(&payload_of(&fields)), "QR_DUPLICATE_FIELD");
    let twice = tlv(0, "JA") + &tlv(1, "キンコ") + &tlv(1, "イビル");
    assert_eq!(
        error_code(&static_with(64, Some(&twice))),
        "QR_DUPLICATE_FIELD"
    );
    let account = tlv(0, "jp.kinko")
        + &tlv(1, "0191d8a4-5e2b-7c3a-9f10-3b5c2e8d4a71")
        + &tlv(1, "0191d8a4-5e2b-7c3a-9f10-000000000bad");
    assert_eq!(
        error_code(&static_with(26, Some(&account))),
        "QR_DUPLICATE_FIELD"
    );
}

#[test]
fn the_crc_must_be_last_with_length_04() {
    let mut trailing = STATIC_PAYLOAD.to_owned();
    trailing.push_str("5802JP");
    assert_eq!(error_code(&trailing), "QR_CRC_NOT_LAST");
    assert_eq!(error_code(&format!("{STATIC_PAYLOAD} ")), "QR_CRC_NOT_LAST");
    // A CRC in the middle, correct for what precedes it, followed by more fields.
    let head = with_crc(&tlv(0, "01"));
    assert_eq!(
        error_code(&format!("{head}{}", &STATIC_PAYLOAD[6..])),
        "QR_CRC_NOT_LAST"
    );
    let body = &STATIC_PAYLOAD[..STATIC_PAYLOAD.len() - 8];
    assert_eq!(error_code(&format!("{body}6305A250F")), "QR_FIELD_INVALID");
    assert_eq!(error_code(body), "QR_FIELD_MISSING");
}

#[test]
fn fixed_values_of_jpqr_are_enforced() {
    for (id, value) in [
        (0, "02"),
        (1, "13"),
        (1, "1"),
        (52, "581"),
        (52, "58a2"),
        (53, "840"),
        (53, "JPY"),
        (58, "US"),
        (58, "jp"),
        (61, "150-0002"),
        (61, "150000"),
        (59, "カフェ"),
        (59, "   "),
        (60, "SHIBUYA\tKU"),
        (64, &(tlv(0, "EN") + &tlv(1, "KINKO"))),
        (64, &(tlv(0, "JA") + &tlv(1, "キンコ\u{7}"))),
        (
            26,
            &(tlv(0, "jp.kinko") + &tlv(1, "0191D8A4-5E2B-7C3A-9F10-3B5C2E8D4A71")),
        ),
        (
            26,
            &(tlv(0, "jp.kinko") + &tlv(1, "0191d8a45e2b7c3a9f103b5c2e8d4a71")),
        ),
        (
            26,
            &(tlv(0, "jp.kinko") + &tlv(1, "00000000-0000-0000-0000-000000000000")),
        ),
    ] {
        assert_eq!(
            error_code(&static_with(id, Some(value))),
            "QR_FIELD_INVALID",
            "{id:02} = {value:?}"
        );
    }
}

#[test]
fn mandatory_fields_must_be_present() {
    for id in [1, 52, 53, 58, 59, 60, 61, 64] {
        assert_eq!(
            error_code(&static_with(id, None)),
            "QR_FIELD_MISSING",
            "without {id:02}"
        );
    }
    assert_eq!(error_code(&static_with(0, None)), "QR_FIELD_MISSING");
    let mut fields = static_fields();
    fields.swap(0, 1);
    assert_eq!(
        error_code(&payload_of(&fields)),
        "QR_FIELD_INVALID",
        "00 not first"
    );
    assert_eq!(
        error_code(&static_with(64, Some(&tlv(0, "JA")))),
        "QR_FIELD_MISSING",
        "no Japanese name"
    );
    assert_eq!(
        error_code(&static_with(26, Some(&tlv(0, "jp.kinko")))),
        "QR_FIELD_MISSING",
        "no merchant id"
    );
}

#[test]
fn codes_of_other_schemes_and_unknown_fields_are_refused() {
    assert_eq!(error_code(&static_with(26, None)), "QR_NOT_KINKO");
    let other = tlv(0, "jp.example.pay") + &tlv(1, "M-0042");
    assert_eq!(error_code(&static_with(26, Some(&other))), "QR_NOT_KINKO");
    // Kinko's GUID anywhere but 26 is ambiguous.
    let misplaced = tlv(0, "jp.kinko") + &tlv(1, "0191d8a4-5e2b-7c3a-9f10-3b5c2e8d4a71");
    assert_eq!(
        error_code(&static_with(27, Some(&misplaced))),
        "QR_FIELD_INVALID"
    );
    for (id, value) in [(55, "01"), (65, "x"), (80, "0002ab"), (99, "1")] {
        assert_eq!(
            error_code(&static_with(id, Some(value))),
            "QR_FIELD_UNKNOWN"
        );
    }
    assert_eq!(
        error_code(&static_with(62, Some(&tlv(9, "ME")))),
        "QR_FIELD_UNKNOWN"
    );
    let account =
        tlv(0, "jp.kinko") + &tlv(1, "0191d8a4-5e2b-7c3a-9f10-3b5c2e8d4a71") + &tlv(2, "extra");
    assert_eq!(
        error_code(&static_with(26, Some(&account))),
        "QR_FIELD_UNKNOWN"
    );
}

#[test]
fn amounts_are_plain_positive_yen_and_only_in_dynamic_codes() {
    let dynamic = |amount: &str| {
        let mut fields = static_fields();
        fields[1].1 = "12".to_owned();
        fields.insert(5, (54, amount.to_owned()));
        fields.insert(10, (62, tlv(5, "ORDER-1")));
        payload_of(&fields)
    };
    let accepted = decode(&dynamic("9999999999999")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(accepted.amount(), Some(Money::yen(AMOUNT_YEN_MAX)));
    for amount in [
        "+100",
        "-100",
        "100.00",
        "100.",
        "1e3",
        "0100",
        "0",
        " 100",
        "１００",
        "10000000000000",
        "9223372036854775808",
    ] {
        assert_eq!(
            error_code(&dynamic(amount)),
            "QR_FIELD_INVALID",
            "amount {amount:?}"
        );
    }
    // Static with an amount; dynamic without one, or without a reference.
    assert_eq!(
        error_code(&static_with(54, Some("100"))),
        "QR_FIELD_INVALID"
    );
    assert_eq!(
        error_code(&static_with(62, Some(&tlv(5, "ORDER-1")))),
        "QR_FIELD_INVALID"
    );
    let mut fields = static_fields();
    fields[1].1 = "12".to_owned();
    assert_eq!(error_code(&payload_of(&fields)), "QR_FIELD_MISSING");
    fields.insert(5, (54, "100".to_owned()));
    assert_eq!(error_code(&payload_of(&fields)), "QR_FIELD_MISSING");

    for amount_yen in [0, -1, AMOUNT_YEN_MAX + 1, i64::MAX] {
        let refused = MerchantQr::new(
            cafe(),
            Payment::Dynamic {
                amount_yen,
                reference: "R".to_owned(),
            },
        );
        assert!(
            matches!(refused, Err(QrError::FieldInvalid { .. })),
            "{amount_yen}"
        );
    }
}

#[test]
fn payloads_over_512_bytes_are_refused_before_parsing() {
    let long = format!(
        "{STATIC_PAYLOAD}{}",
        "0".repeat(512 - STATIC_PAYLOAD.len() + 1)
    );
    assert_eq!(error_code(&long), "QR_TOO_LONG");
    // The constructor refuses what would encode too long, so encode never has to.
    let crowded = MerchantDetails {
        foreign_accounts: (2..=7)
            .map(|id| ForeignAccount {
                id,
                value: "9".repeat(99),
            })
            .collect(),
        ..cafe()
    };
    assert!(matches!(
        MerchantQr::new(crowded, Payment::Static),
        Err(QrError::TooLong { .. })
    ));
}

#[test]
fn lengths_count_characters_so_japanese_and_ascii_names_share_the_limit() {
    let at_limit = "あ".repeat(25);
    let accepted = code(
        MerchantDetails {
            name_ja: at_limit.clone(),
            ..cafe()
        },
        Payment::Static,
    );
    assert!(encode(&accepted).contains(&format!("0125{at_limit}")));
    assert!(matches!(
        MerchantQr::new(
            MerchantDetails {
                name_ja: "あ".repeat(26),
                ..cafe()
            },
            Payment::Static
        ),
        Err(QrError::FieldInvalid { .. })
    ));
    // The byte count of the same name, read as a length, is refused.
    let byte_counted = STATIC_PAYLOAD.replacen("0109キンコ", "0127キンコ", 1);
    assert!(decode(&byte_counted).is_err());
}

/// The characters every corruption test writes in place of the original one.
const ASCII_REPLACEMENTS: [char; 12] = ['0', '1', '4', '9', 'A', 'F', 'a', 'z', ' ', '+', '.', '~'];

fn assert_every_corruption_refused(payload: &str, replacements: &[char], skip_non_ascii: bool) {
    for (at, original) in payload.char_indices() {
        if skip_non_ascii && !original.is_ascii() {
            continue;
        }
        for &replacement in replacements {
            if replacement == original {
                continue;
            }
            let mut corrupted = String::with_capacity(payload.len() + 4);
            corrupted.push_str(&payload[..at]);
            corrupted.push(replacement);
            corrupted.push_str(&payload[at + original.len_utf8()..]);
            assert!(
                decode(&corrupted).is_err(),
                "{original:?} at byte {at} → {replacement:?} accepted: {corrupted}"
            );
        }
    }
}

#[test]
fn every_single_character_corruption_of_the_golden_payloads_is_refused() {
    // Here also inside the Japanese text and with non-ASCII replacements, where the guarantee
    // is the CRC's 1 − 2⁻¹⁶ rather than certainty: these payloads are fixed, so the outcome is.
    let mut replacements = ASCII_REPLACEMENTS.to_vec();
    replacements.extend(['カ', 'é', '０', '\u{0}', '𠮷']);
    for payload in [STATIC_PAYLOAD, DYNAMIC_PAYLOAD] {
        assert_every_corruption_refused(payload, &replacements, false);
    }
}

fn ascii_text(chars_max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[ -~]{{1,{chars_max}}}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .prop_filter("not blank", |text| !text.trim().is_empty())
}

fn japanese_text(chars_max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(
        "[ぁ-んァ-ヶ一-龥A-Za-z0-9・ー 𠮷]{{1,{chars_max}}}"
    ))
    .unwrap_or_else(|e| panic!("{e}"))
    .prop_filter("not blank", |text| !text.trim().is_empty())
}

fn arb_code() -> impl Strategy<Value = MerchantQr> {
    let foreign =
        proptest::collection::btree_map(prop_oneof![2u8..=25, 27u8..=51], ascii_text(30), 0..=2);
    let details = (
        (1..=u128::MAX, 0..=9999u16, ascii_text(25), ascii_text(15)),
        (
            "[0-9]{7}",
            japanese_text(25),
            proptest::option::of(japanese_text(15)),
        ),
        (
            proptest::option::of(ascii_text(25)),
            proptest::option::of(ascii_text(25)),
            foreign,
        ),
    )
        .prop_map(
            |(
                (merchant_id, category_code, name, city),
                (postal_code, name_ja, city_ja),
                (store_label, terminal_label, foreign),
            )| MerchantDetails {
                merchant_id,
                category_code,
                name,
                city,
                postal_code,
                name_ja,
                city_ja,
                store_label,
                terminal_label,
                foreign_accounts: foreign
                    .into_iter()
                    .map(|(id, value)| ForeignAccount { id, value })
                    .collect(),
            },
        );
    let payment = prop_oneof![
        Just(Payment::Static),
        (1..=AMOUNT_YEN_MAX, ascii_text(25)).prop_map(|(amount_yen, reference)| Payment::Dynamic {
            amount_yen,
            reference
        }),
    ];
    (details, payment).prop_filter_map("fits in 512 bytes", |(details, payment)| {
        MerchantQr::new(details, payment).ok()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_then_decode_gives_the_same_code(code in arb_code()) {
        let payload = encode(&code);
        prop_assert!(payload.len() <= kinko_qr::PAYLOAD_BYTES_MAX);
        prop_assert_eq!(decode(&payload), Ok(code));
    }

    #[test]
    fn decode_never_panics_and_what_it_accepts_round_trips(text in "\\PC{0,600}|[0-9A-Za-z .]{0,600}") {
        if let Ok(code) = decode(&text) {
            prop_assert_eq!(decode(&encode(&code)), Ok(code));
        }
    }
}

proptest! {
    // Each case decodes a few thousand corruptions.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_ascii_single_character_corruption_is_refused(code in arb_code()) {
        // Guaranteed, not probable: an ASCII character swapped for another changes one byte,
        // and CRC-16 detects every burst of up to 16 bits. Non-ASCII originals are skipped
        // because replacing them changes the byte length (see the crate docs).
        assert_every_corruption_refused(&encode(&code), &ASCII_REPLACEMENTS, true);
    }
}

#[test]
fn a_hundred_thousand_random_inputs_never_panic() {
    // Seeded, so a failure reproduces. A third pure noise, a third digit-heavy TLV lookalikes,
    // a third mutations of a valid payload (which reach the deeper checks).
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x4b49_4e4b_4f51_5221);
    let mut accepted = 0;
    for round in 0..100_000u32 {
        let text = match round % 3 {
            0 => {
                let length = rng.random_range(0..600);
                let bytes: Vec<u8> = (0..length).map(|_| rng.random()).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            1 => {
                let length = rng.random_range(0..600);
                (0..length)
                    .map(|_| match rng.random_range(0..10) {
                        0..=6 => char::from(b'0' + rng.random_range(0..10)),
                        7 => 'あ',
                        _ => char::from(rng.random_range(0x20u8..0x7F)),
                    })
                    .collect()
            }
            _ => {
                let mut bytes = DYNAMIC_PAYLOAD.as_bytes().to_vec();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..bytes.len());
                    match rng.random_range(0..3) {
                        0 => bytes[at] = rng.random(),
                        1 => {
                            bytes.remove(at);
                        }
                        _ => bytes.insert(at, rng.random()),
                    }
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        if let Ok(code) = decode(&text) {
            // A mutation can write back the byte it replaced.
            if text != DYNAMIC_PAYLOAD {
                accepted += 1;
            }
            assert_eq!(decode(&encode(&code)), Ok(code), "{text:?}");
        }
    }
    // Random edits of a CRC-protected payload are refused but for the rare CRC collision.
    assert!(accepted < 10, "{accepted} random inputs accepted");
}
