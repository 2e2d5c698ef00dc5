//! Merchant-presented codes (EMV QRCPS MPM as profiled by JPQR): the typed value, the encoder
//! and the strict decoder.
//!
//! A [`MerchantQr`] can only be made by [`MerchantQr::new`], which checks every rule, so
//! [`encode`] cannot fail and `decode(&encode(&code)) == Ok(code)` for every code. [`decode`]
//! reads the payload's structure and CRC, then builds the value through the same constructor,
//! so the two sides share one set of field rules.

use std::fmt;

use kinko_core::{ErrorCode, ErrorKind, Money};

use crate::tlv::{self, Element, VALUE_CHARS_MAX};

/// EMV's bound on a whole payload. Counted in bytes, which is stricter than characters when the
/// language template holds Japanese.
pub const PAYLOAD_BYTES_MAX: usize = 512;
/// The globally unique identifier (sub-ID 00) of Kinko's merchant account template, ID 26.
pub const KINKO_GUID: &str = "jp.kinko";
/// The largest amount ID 54 can carry: EMV allows 13 characters, so it is always within `i64`.
pub const AMOUNT_YEN_MAX: i64 = 9_999_999_999_999;

const NAME_CHARS_MAX: usize = 25;
const CITY_CHARS_MAX: usize = 15;
const LABEL_CHARS_MAX: usize = 25;
const POSTAL_CODE_DIGITS: usize = 7;

const ID_PAYLOAD_FORMAT: u8 = 0;
const ID_INITIATION: u8 = 1;
const ID_KINKO_ACCOUNT: u8 = 26;
const ID_CATEGORY: u8 = 52;
const ID_CURRENCY: u8 = 53;
const ID_AMOUNT: u8 = 54;
const ID_COUNTRY: u8 = 58;
const ID_NAME: u8 = 59;
const ID_CITY: u8 = 60;
const ID_POSTAL_CODE: u8 = 61;
const ID_ADDITIONAL: u8 = 62;
const ID_CRC: u8 = 63;
const ID_LANGUAGE: u8 = 64;

const SUB_GUID: u8 = 0;
const SUB_MERCHANT_ID: u8 = 1;
const SUB_STORE_LABEL: u8 = 3;
const SUB_REFERENCE_LABEL: u8 = 5;
const SUB_TERMINAL_LABEL: u8 = 7;
const SUB_LANGUAGE: u8 = 0;
const SUB_NAME_ALT: u8 = 1;
const SUB_CITY_ALT: u8 = 2;

const PAYLOAD_FORMAT: &str = "01";
const INITIATION_STATIC: &str = "11";
const INITIATION_DYNAMIC: &str = "12";
const CURRENCY_JPY: &str = "392";
const COUNTRY_JP: &str = "JP";
const LANGUAGE_JA: &str = "JA";

/// A field of a payload: a top-level ID, or a sub-ID inside a template. Shown as EMV writes
/// it, "54" or "62.05".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub template: Option<u8>,
    pub id: u8,
}

impl Field {
    pub const fn top(id: u8) -> Self {
        Self { template: None, id }
    }

    pub const fn sub(template: u8, id: u8) -> Self {
        Self {
            template: Some(template),
            id,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.template {
            Some(template) => write!(formatter, "{template:02}.{:02}", self.id),
            None => write!(formatter, "{:02}", self.id),
        }
    }
}

/// Why a payload or a code's details were refused. Codes are stable (see [`ErrorCode`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QrError {
    #[error("the payload is {bytes} bytes; at most {PAYLOAD_BYTES_MAX} are allowed")]
    TooLong { bytes: usize },
    #[error("malformed TLV at byte {at_byte}")]
    MalformedTlv { at_byte: usize },
    #[error("the CRC does not match the payload")]
    CrcMismatch,
    #[error("the CRC (ID 63) must be the last field, with nothing after it")]
    CrcNotLast,
    #[error("field {0} is missing")]
    FieldMissing(Field),
    #[error("field {field} is invalid: {reason}")]
    FieldInvalid { field: Field, reason: &'static str },
    #[error("field {0} appears more than once")]
    DuplicateField(Field),
    #[error("field {0} is not one Kinko accepts")]
    UnknownField(Field),
    #[error("not a Kinko code: no Kinko merchant account template (ID 26, {KINKO_GUID})")]
    NotKinko,
}

impl ErrorCode for QrError {
    fn code(&self) -> &'static str {
        match self {
            QrError::TooLong { .. } => "QR_TOO_LONG",
            QrError::MalformedTlv { .. } => "QR_MALFORMED_TLV",
            QrError::CrcMismatch => "QR_CRC_MISMATCH",
            QrError::CrcNotLast => "QR_CRC_NOT_LAST",
            QrError::FieldMissing(_) => "QR_FIELD_MISSING",
            QrError::FieldInvalid { .. } => "QR_FIELD_INVALID",
            QrError::DuplicateField(_) => "QR_DUPLICATE_FIELD",
            QrError::UnknownField(_) => "QR_FIELD_UNKNOWN",
            QrError::NotKinko => "QR_NOT_KINKO",
        }
    }

    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

fn invalid(field: Field, reason: &'static str) -> QrError {
    QrError::FieldInvalid { field, reason }
}

/// Another payment scheme's merchant account information (IDs 02–25 and 27–51), kept as is
/// so that a JPQR sticker shared with other schemes survives a decode and an encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignAccount {
    pub id: u8,
    pub value: String,
}

/// What a merchant code says about the merchant. Inputs to [`MerchantQr::new`], which checks
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantDetails {
    /// Kinko's merchant id (ID 26, sub-ID 01, written as a lowercase hyphenated UUID).
    pub merchant_id: u128,
    /// ISO 18245 merchant category code (ID 52), 0–9999, written with 4 digits.
    pub category_code: u16,
    /// ID 59: printable ASCII, at most 25 characters.
    pub name: String,
    /// ID 60: printable ASCII, at most 15 characters.
    pub city: String,
    /// ID 61: a Japanese postal code, 7 digits without the hyphen.
    pub postal_code: String,
    /// ID 64 sub-ID 01: the name in Japanese, at most 25 characters.
    pub name_ja: String,
    /// ID 64 sub-ID 02: the city in Japanese, at most 15 characters.
    pub city_ja: Option<String>,
    /// ID 62 sub-ID 03.
    pub store_label: Option<String>,
    /// ID 62 sub-ID 07.
    pub terminal_label: Option<String>,
    /// Other schemes' accounts; [`MerchantQr::new`] sorts them by ID.
    pub foreign_accounts: Vec<ForeignAccount>,
}

/// Static codes (a sticker: the payer types the amount) and dynamic ones (shown for one sale,
/// amount inside).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payment {
    /// Point of initiation "11"; no ID 54.
    Static,
    /// Point of initiation "12"; ID 54 holds the amount and ID 62 sub-ID 05 (reference label)
    /// names the payment request in Kinko's records.
    Dynamic { amount_yen: i64, reference: String },
}

/// What the server must look up to act on a scanned code. The code itself is not trusted for
/// anything but this key: names, amount and category come from Kinko's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrReference<'a> {
    /// A static code: find the merchant; refuse if unknown or not active.
    Merchant { merchant_id: u128 },
    /// A dynamic code: find the payment request `reference` of `merchant_id` and take its
    /// amount from the record; refuse if the code's amount differs, or the request is unknown,
    /// paid or expired.
    PaymentRequest {
        merchant_id: u128,
        reference: &'a str,
    },
}

/// A valid merchant-presented code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantQr {
    details: MerchantDetails,
    payment: Payment,
}

impl MerchantQr {
    /// Checks every field against EMV and Kinko's JPQR profile, including the encoded length.
    pub fn new(mut details: MerchantDetails, payment: Payment) -> Result<Self, QrError> {
        check_details(&mut details)?;
        if let Payment::Dynamic {
            amount_yen,
            reference,
        } = &payment
        {
            if !(1..=AMOUNT_YEN_MAX).contains(amount_yen) {
                return Err(invalid(
                    Field::top(ID_AMOUNT),
                    "the amount must be 1 to 9999999999999 yen",
                ));
            }
            check_ascii(
                Field::sub(ID_ADDITIONAL, SUB_REFERENCE_LABEL),
                reference,
                LABEL_CHARS_MAX,
            )?;
        }
        let code = Self { details, payment };
        let bytes = encode(&code).len();
        if bytes > PAYLOAD_BYTES_MAX {
            return Err(QrError::TooLong { bytes });
        }
        Ok(code)
    }

    pub fn details(&self) -> &MerchantDetails {
        &self.details
    }

    pub fn payment(&self) -> &Payment {
        &self.payment
    }

    pub fn merchant_id(&self) -> u128 {
        self.details.merchant_id
    }

    /// The amount a dynamic code states. Informational only: the server charges the amount in
    /// its own record of the payment request (see [`MerchantQr::reference`]).
    pub fn amount(&self) -> Option<Money> {
        match &self.payment {
            Payment::Static => None,
            Payment::Dynamic { amount_yen, .. } => Some(Money::yen(*amount_yen)),
        }
    }

    /// The key the server resolves the merchant and amount by.
    pub fn reference(&self) -> QrReference<'_> {
        let merchant_id = self.details.merchant_id;
        match &self.payment {
            Payment::Static => QrReference::Merchant { merchant_id },
            Payment::Dynamic { reference, .. } => QrReference::PaymentRequest {
                merchant_id,
                reference,
            },
        }
    }
}

/// EMV's "ans" characters: printable ASCII.
fn is_ans(text: &str) -> bool {
    text.bytes().all(|byte| (0x20..=0x7E).contains(&byte))
}

fn check_chars(field: Field, text: &str, chars_max: usize) -> Result<(), QrError> {
    let chars = text.chars().count();
    if chars == 0 || text.trim().is_empty() {
        return Err(invalid(field, "must not be empty or blank"));
    }
    if chars > chars_max {
        return Err(invalid(field, "too long"));
    }
    Ok(())
}

fn check_ascii(field: Field, text: &str, chars_max: usize) -> Result<(), QrError> {
    if !is_ans(text) {
        return Err(invalid(field, "only printable ASCII is allowed"));
    }
    check_chars(field, text, chars_max)
}

/// Text in the language template: any characters but control characters.
fn check_text(field: Field, text: &str, chars_max: usize) -> Result<(), QrError> {
    if text.chars().any(char::is_control) {
        return Err(invalid(field, "control characters are not allowed"));
    }
    check_chars(field, text, chars_max)
}

fn check_details(details: &mut MerchantDetails) -> Result<(), QrError> {
    if details.merchant_id == 0 {
        return Err(invalid(
            Field::sub(ID_KINKO_ACCOUNT, SUB_MERCHANT_ID),
            "the merchant id must not be zero",
        ));
    }
    if details.category_code > 9999 {
        return Err(invalid(Field::top(ID_CATEGORY), "must be 4 digits"));
    }
    check_ascii(Field::top(ID_NAME), &details.name, NAME_CHARS_MAX)?;
    check_ascii(Field::top(ID_CITY), &details.city, CITY_CHARS_MAX)?;
    if details.postal_code.len() != POSTAL_CODE_DIGITS
        || !details
            .postal_code
            .bytes()
            .all(|byte| byte.is_ascii_digit())
    {
        return Err(invalid(
            Field::top(ID_POSTAL_CODE),
            "must be a Japanese postal code: 7 digits, no hyphen",
        ));
    }
    check_text(
        Field::sub(ID_LANGUAGE, SUB_NAME_ALT),
        &details.name_ja,
        NAME_CHARS_MAX,
    )?;
    if let Some(city_ja) = &details.city_ja {
        check_text(
            Field::sub(ID_LANGUAGE, SUB_CITY_ALT),
            city_ja,
            CITY_CHARS_MAX,
        )?;
    }
    if let Some(label) = &details.store_label {
        check_ascii(
            Field::sub(ID_ADDITIONAL, SUB_STORE_LABEL),
            label,
            LABEL_CHARS_MAX,
        )?;
    }
    if let Some(label) = &details.terminal_label {
        check_ascii(
            Field::sub(ID_ADDITIONAL, SUB_TERMINAL_LABEL),
            label,
            LABEL_CHARS_MAX,
        )?;
    }
    details.foreign_accounts.sort_by_key(|account| account.id);
    let mut previous = None;
    for account in &details.foreign_accounts {
        let field = Field::top(account.id);
        if !is_foreign_account_id(account.id) {
            return Err(invalid(field, "not another scheme's merchant account ID"));
        }
        if previous == Some(account.id) {
            return Err(QrError::DuplicateField(field));
        }
        previous = Some(account.id);
        check_ascii(field, &account.value, VALUE_CHARS_MAX)?;
        if names_kinko(&account.value) {
            return Err(invalid(
                field,
                "Kinko's account belongs in ID 26, and only there",
            ));
        }
    }
    Ok(())
}

fn is_foreign_account_id(id: u8) -> bool {
    matches!(id, 2..=25 | 27..=51)
}

/// Whether a template's value carries Kinko's GUID as its sub-ID 00.
fn names_kinko(template: &str) -> bool {
    tlv::parse(template).is_ok_and(|elements| {
        elements
            .iter()
            .any(|element| element.id == SUB_GUID && element.value == KINKO_GUID)
    })
}

/// Writes the payload: IDs in ascending order, the language template before the CRC, and the
/// CRC last.
pub fn encode(code: &MerchantQr) -> String {
    let details = &code.details;
    let mut out = String::with_capacity(PAYLOAD_BYTES_MAX);
    tlv::write(&mut out, ID_PAYLOAD_FORMAT, PAYLOAD_FORMAT);
    let initiation = match code.payment {
        Payment::Static => INITIATION_STATIC,
        Payment::Dynamic { .. } => INITIATION_DYNAMIC,
    };
    tlv::write(&mut out, ID_INITIATION, initiation);
    let (before, after): (Vec<&ForeignAccount>, Vec<&ForeignAccount>) = details
        .foreign_accounts
        .iter()
        .partition(|account| account.id < ID_KINKO_ACCOUNT);
    for account in before {
        tlv::write(&mut out, account.id, &account.value);
    }
    let mut kinko = String::new();
    tlv::write(&mut kinko, SUB_GUID, KINKO_GUID);
    let merchant_id = uuid::Uuid::from_u128(details.merchant_id)
        .hyphenated()
        .to_string();
    tlv::write(&mut kinko, SUB_MERCHANT_ID, &merchant_id);
    tlv::write(&mut out, ID_KINKO_ACCOUNT, &kinko);
    for account in after {
        tlv::write(&mut out, account.id, &account.value);
    }
    tlv::write(
        &mut out,
        ID_CATEGORY,
        &format!("{:04}", details.category_code),
    );
    tlv::write(&mut out, ID_CURRENCY, CURRENCY_JPY);
    if let Payment::Dynamic { amount_yen, .. } = code.payment {
        tlv::write(&mut out, ID_AMOUNT, &amount_yen.to_string());
    }
    tlv::write(&mut out, ID_COUNTRY, COUNTRY_JP);
    tlv::write(&mut out, ID_NAME, &details.name);
    tlv::write(&mut out, ID_CITY, &details.city);
    tlv::write(&mut out, ID_POSTAL_CODE, &details.postal_code);
    let mut additional = String::new();
    if let Some(label) = &details.store_label {
        tlv::write(&mut additional, SUB_STORE_LABEL, label);
    }
    if let Payment::Dynamic { reference, .. } = &code.payment {
        tlv::write(&mut additional, SUB_REFERENCE_LABEL, reference);
    }
    if let Some(label) = &details.terminal_label {
        tlv::write(&mut additional, SUB_TERMINAL_LABEL, label);
    }
    if !additional.is_empty() {
        tlv::write(&mut out, ID_ADDITIONAL, &additional);
    }
    let mut language = String::new();
    tlv::write(&mut language, SUB_LANGUAGE, LANGUAGE_JA);
    tlv::write(&mut language, SUB_NAME_ALT, &details.name_ja);
    if let Some(city_ja) = &details.city_ja {
        tlv::write(&mut language, SUB_CITY_ALT, city_ja);
    }
    tlv::write(&mut out, ID_LANGUAGE, &language);
    out.push_str("6304");
    let crc = tlv::crc_hex(&out);
    out.push_str(&crc);
    out
}

/// A set of two-digit IDs, to find duplicates without allocating.
#[derive(Default)]
struct SeenIds(u128);

impl SeenIds {
    /// Records `id`; false if it was already there.
    fn insert(&mut self, id: u8) -> bool {
        let bit = 1u128 << (id % 100);
        let fresh = self.0 & bit == 0;
        self.0 |= bit;
        fresh
    }
}

/// Reads a template's value into its sub-fields, refusing duplicates.
fn parse_template<'a>(element: &Element<'a>) -> Result<Vec<Element<'a>>, QrError> {
    let value_start = element.start + 4;
    let subs = tlv::parse(element.value).map_err(|malformed| QrError::MalformedTlv {
        at_byte: value_start + malformed.at_byte,
    })?;
    let mut seen = SeenIds::default();
    for sub in &subs {
        if !seen.insert(sub.id) {
            return Err(QrError::DuplicateField(Field::sub(element.id, sub.id)));
        }
    }
    Ok(subs)
}

/// The payload's fields, in order, after checking its structure and its CRC.
fn read_checked(payload: &str) -> Result<Vec<Element<'_>>, QrError> {
    if payload.len() > PAYLOAD_BYTES_MAX {
        return Err(QrError::TooLong {
            bytes: payload.len(),
        });
    }
    let mut elements = Vec::new();
    let mut at = 0;
    loop {
        if at >= payload.len() {
            return Err(QrError::FieldMissing(Field::top(ID_CRC)));
        }
        let element =
            tlv::read_element(payload, at).map_err(|malformed| QrError::MalformedTlv {
                at_byte: malformed.at_byte,
            })?;
        at = element.end();
        if element.id != ID_CRC {
            elements.push(element);
            continue;
        }
        if at != payload.len() {
            return Err(QrError::CrcNotLast);
        }
        let crc_field = Field::top(ID_CRC);
        if element.value.len() != 4
            || !element
                .value
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'A'..=b'F'))
        {
            return Err(invalid(
                crc_field,
                "must be 04 and four uppercase hex digits",
            ));
        }
        let covered = payload
            .get(..element.start + 4)
            .ok_or(QrError::MalformedTlv {
                at_byte: element.start,
            })?;
        if tlv::crc_hex(covered) != element.value {
            return Err(QrError::CrcMismatch);
        }
        return Ok(elements);
    }
}

fn digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

fn read_amount(text: &str) -> Result<i64, QrError> {
    let field = Field::top(ID_AMOUNT);
    // Digits only: no sign, no decimal point (yen has no minor unit), no leading zero, so one
    // amount has one spelling.
    if !digits(text) || text.starts_with('0') {
        return Err(invalid(
            field,
            "yen amounts are digits only, without a sign, decimals or leading zeros",
        ));
    }
    match text.parse::<i64>() {
        Ok(amount_yen) if amount_yen <= AMOUNT_YEN_MAX => Ok(amount_yen),
        _ => Err(invalid(field, "the amount must be 1 to 9999999999999 yen")),
    }
}

fn read_kinko_account(element: &Element<'_>) -> Result<u128, QrError> {
    let subs = parse_template(element).map_err(|error| match error {
        // Another scheme's template in ID 26 need not be well-formed for us to say "not ours".
        QrError::MalformedTlv { .. } => QrError::NotKinko,
        other => other,
    })?;
    if !subs
        .iter()
        .any(|sub| sub.id == SUB_GUID && sub.value == KINKO_GUID)
    {
        return Err(QrError::NotKinko);
    }
    let mut merchant_id = None;
    for sub in &subs {
        match sub.id {
            SUB_GUID => {}
            SUB_MERCHANT_ID => merchant_id = Some(sub.value),
            other => return Err(QrError::UnknownField(Field::sub(ID_KINKO_ACCOUNT, other))),
        }
    }
    let field = Field::sub(ID_KINKO_ACCOUNT, SUB_MERCHANT_ID);
    let text = merchant_id.ok_or(QrError::FieldMissing(field))?;
    let parsed = uuid::Uuid::try_parse(text)
        .map_err(|_| invalid(field, "the merchant id must be a UUID"))?;
    // Exactly one spelling per id: lowercase, hyphenated.
    if parsed.hyphenated().to_string() != text {
        return Err(invalid(
            field,
            "the merchant id must be a lowercase hyphenated UUID",
        ));
    }
    Ok(parsed.as_u128())
}

/// Parses and checks a merchant-presented payload. Never panics; every refusal is a
/// [`QrError`] with a stable code.
pub fn decode(payload: &str) -> Result<MerchantQr, QrError> {
    let elements = read_checked(payload)?;
    let mut seen = SeenIds::default();
    for element in &elements {
        if !seen.insert(element.id) {
            return Err(QrError::DuplicateField(Field::top(element.id)));
        }
    }
    match elements.first() {
        Some(first) if first.id == ID_PAYLOAD_FORMAT => {
            if first.value != PAYLOAD_FORMAT {
                return Err(invalid(Field::top(ID_PAYLOAD_FORMAT), "must be 01"));
            }
        }
        _ if seen.0 & 1 != 0 => {
            return Err(invalid(Field::top(ID_PAYLOAD_FORMAT), "must come first"));
        }
        _ => return Err(QrError::FieldMissing(Field::top(ID_PAYLOAD_FORMAT))),
    }
    let find = |id: u8| elements.iter().find(|element| element.id == id);
    // Whose code this is comes before anything else, so another scheme's code is "not
    // Kinko" rather than a list of JPQR complaints.
    let merchant_id = read_kinko_account(find(ID_KINKO_ACCOUNT).ok_or(QrError::NotKinko)?)?;
    let required = |id: u8| {
        find(id)
            .map(|element| element.value)
            .ok_or(QrError::FieldMissing(Field::top(id)))
    };

    let mut foreign_accounts = Vec::new();
    for element in &elements {
        match element.id {
            ID_PAYLOAD_FORMAT | ID_INITIATION | ID_KINKO_ACCOUNT | ID_CATEGORY | ID_CURRENCY
            | ID_AMOUNT | ID_COUNTRY | ID_NAME | ID_CITY | ID_POSTAL_CODE | ID_ADDITIONAL
            | ID_LANGUAGE => {}
            id if is_foreign_account_id(id) => foreign_accounts.push(ForeignAccount {
                id,
                value: element.value.to_owned(),
            }),
            id => return Err(QrError::UnknownField(Field::top(id))),
        }
    }

    let dynamic = match required(ID_INITIATION)? {
        INITIATION_STATIC => false,
        INITIATION_DYNAMIC => true,
        _ => {
            return Err(invalid(
                Field::top(ID_INITIATION),
                "must be 11 (static) or 12 (dynamic)",
            ));
        }
    };
    let category = required(ID_CATEGORY)?;
    if category.len() != 4 || !digits(category) {
        return Err(invalid(Field::top(ID_CATEGORY), "must be 4 digits"));
    }
    let category_code = category
        .parse::<u16>()
        .map_err(|_| invalid(Field::top(ID_CATEGORY), "must be 4 digits"))?;
    if required(ID_CURRENCY)? != CURRENCY_JPY {
        return Err(invalid(Field::top(ID_CURRENCY), "must be 392 (yen)"));
    }
    if required(ID_COUNTRY)? != COUNTRY_JP {
        return Err(invalid(Field::top(ID_COUNTRY), "must be JP"));
    }
    let name = required(ID_NAME)?.to_owned();
    let city = required(ID_CITY)?.to_owned();
    let postal_code = required(ID_POSTAL_CODE)?.to_owned();

    let mut store_label = None;
    let mut reference = None;
    let mut terminal_label = None;
    if let Some(additional) = find(ID_ADDITIONAL) {
        for sub in parse_template(additional)? {
            let value = Some(sub.value.to_owned());
            match sub.id {
                SUB_STORE_LABEL => store_label = value,
                SUB_REFERENCE_LABEL => reference = value,
                SUB_TERMINAL_LABEL => terminal_label = value,
                other => return Err(QrError::UnknownField(Field::sub(ID_ADDITIONAL, other))),
            }
        }
    }

    let language = find(ID_LANGUAGE).ok_or(QrError::FieldMissing(Field::top(ID_LANGUAGE)))?;
    let mut language_code = None;
    let mut name_ja = None;
    let mut city_ja = None;
    for sub in parse_template(language)? {
        let value = Some(sub.value.to_owned());
        match sub.id {
            SUB_LANGUAGE => language_code = value,
            SUB_NAME_ALT => name_ja = value,
            SUB_CITY_ALT => city_ja = value,
            other => return Err(QrError::UnknownField(Field::sub(ID_LANGUAGE, other))),
        }
    }
    let language_field = Field::sub(ID_LANGUAGE, SUB_LANGUAGE);
    if language_code.ok_or(QrError::FieldMissing(language_field))? != LANGUAGE_JA {
        return Err(invalid(language_field, "must be JA"));
    }
    let name_ja = name_ja.ok_or(QrError::FieldMissing(Field::sub(ID_LANGUAGE, SUB_NAME_ALT)))?;

    let reference_field = Field::sub(ID_ADDITIONAL, SUB_REFERENCE_LABEL);
    let payment = match (dynamic, find(ID_AMOUNT), reference) {
        (false, None, None) => Payment::Static,
        (false, Some(_), _) => {
            return Err(invalid(
                Field::top(ID_AMOUNT),
                "a static code carries no amount",
            ));
        }
        (false, None, Some(_)) => {
            return Err(invalid(
                reference_field,
                "a static code carries no reference",
            ));
        }
        (true, None, _) => return Err(QrError::FieldMissing(Field::top(ID_AMOUNT))),
        (true, Some(_), None) => return Err(QrError::FieldMissing(reference_field)),
        (true, Some(amount), Some(reference)) => Payment::Dynamic {
            amount_yen: read_amount(amount.value)?,
            reference,
        },
    };

    let details = MerchantDetails {
        merchant_id,
        category_code,
        name,
        city,
        postal_code,
        name_ja,
        city_ja,
        store_label,
        terminal_label,
        foreign_accounts,
    };
    MerchantQr::new(details, payment)
}
