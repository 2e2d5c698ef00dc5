//! The pages' two languages: Japanese first, English second. A page asks its `Lang` for a
//! text by key; error messages are keyed by the stable error code the API answers with, so a
//! page and the API never disagree on what went wrong. `every_key_in_the_templates_exists`
//! checks that every key a template names is in the table.

/// The language of a page: the `kinko_lang` cookie (set by the switch), else the first of
/// `ja`/`en` in `Accept-Language` by its q-value, else Japanese.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Ja,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ja => "ja",
            Lang::En => "en",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "ja" => Some(Lang::Ja),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The language the switch offers.
    pub fn other(self) -> Self {
        match self {
            Lang::Ja => Lang::En,
            Lang::En => Lang::Ja,
        }
    }

    /// The language's name in itself, as the switch shows it.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Ja => "日本語",
            Lang::En => "English",
        }
    }

    /// Picks from an `Accept-Language` value: the highest q among `ja*` and `en*`.
    pub fn from_accept_language(value: &str) -> Option<Self> {
        let mut best: Option<(u16, Lang)> = None;
        for entry in value.split(',').take(20) {
            let mut parts = entry.trim().split(';');
            let tag = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let quality = parts
                .find_map(|part| part.trim().strip_prefix("q="))
                .map_or(1000, |q| {
                    q.parse::<f32>()
                        .map_or(0, |q| (q.clamp(0.0, 1.0) * 1000.0) as u16)
                });
            let lang = match tag.split('-').next() {
                Some("ja") => Lang::Ja,
                Some("en") => Lang::En,
                _ => continue,
            };
            if quality > 0 && best.is_none_or(|(seen, _)| quality > seen) {
                best = Some((quality, lang));
            }
        }
        best.map(|(_, lang)| lang)
    }

    /// The text for `key`; the key itself when the table lacks it (a test keeps that from
    /// happening for the templates' keys).
    pub fn t(self, key: &str) -> &'static str {
        match all_texts().find(|(name, ..)| *name == key) {
            Some((_, ja, en)) => match self {
                Lang::Ja => ja,
                Lang::En => en,
            },
            None => {
                tracing::warn!(key, "a page asked for a text that is not in the table");
                "…"
            }
        }
    }

    /// A readable message for an error code, in this language.
    pub fn error(self, code: &str) -> String {
        let code = if code.starts_with("QR_") {
            "QR_INVALID"
        } else {
            code
        };
        if all_texts().any(|(name, ..)| *name == code) {
            self.t(code).to_owned()
        } else {
            format!("{} ({code})", self.t("error.generic"))
        }
    }
}

/// Every text: this table, then the later pages' (`texts.rs`).
pub fn all_texts() -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str)> {
    TEXTS.iter().chain(super::texts::TEXTS)
}

/// (key, 日本語, English)
pub const TEXTS: &[(&str, &str, &str)] = &[
    (
        "app.tagline",
        "あなたの財布を、手のひらに。",
        "Your wallet, in your hand.",
    ),
    ("nav.home", "ホーム", "Home"),
    ("nav.charge", "チャージ", "Charge"),
    ("nav.pay", "支払う", "Pay"),
    ("nav.send", "送る", "Send"),
    ("nav.history", "履歴", "History"),
    ("nav.banks", "銀行口座", "Bank accounts"),
    ("nav.sign_out", "ログアウト", "Sign out"),
    ("nav.sign_in", "ログイン", "Sign in"),
    ("nav.sign_up", "新規登録", "Sign up"),
    ("field.email", "メールアドレス", "E-mail address"),
    (
        "field.password",
        "パスワード（12文字以上）",
        "Password (12 characters or more)",
    ),
    ("field.password_plain", "パスワード", "Password"),
    ("field.phone", "携帯電話番号", "Mobile phone number"),
    (
        "field.email_code",
        "メールで届いたコード（8桁）",
        "Code sent by e-mail (8 digits)",
    ),
    (
        "field.sms_code",
        "SMSで届いたコード（8桁）",
        "Code sent by SMS (8 digits)",
    ),
    (
        "field.totp_code",
        "認証アプリの6桁のコード",
        "The 6-digit code of your authenticator app",
    ),
    ("field.amount", "金額（円）", "Amount (yen)"),
    ("field.bank", "銀行", "Bank"),
    ("field.account", "口座", "Account"),
    ("field.handle", "相手のハンドル名", "Recipient's handle"),
    ("field.my_handle", "自分のハンドル名", "My handle"),
    ("field.note", "メモ（任意）", "Note (optional)"),
    (
        "field.qr",
        "QRコードの内容を貼り付け",
        "Paste the QR code's text",
    ),
    (
        "field.qr_photo",
        "またはQRコードの写真",
        "Or a photo of the QR code",
    ),
    (
        "field.kyc_reference",
        "本人確認の受付番号",
        "Identity check reference",
    ),
    ("field.kind", "種類", "Kind"),
    ("signup.title", "新規登録", "Create your wallet"),
    (
        "signup.lead",
        "メールとSMSに確認コードをお送りします。",
        "We send a code to your e-mail and one by SMS.",
    ),
    ("signup.submit", "登録する", "Sign up"),
    (
        "signup.have_account",
        "アカウントをお持ちの方",
        "Already have a wallet?",
    ),
    ("verify.title", "連絡先の確認", "Confirm your contacts"),
    (
        "verify.lead",
        "メールとSMSに届いたコードを入力してください。",
        "Enter the codes we sent to your e-mail and by SMS.",
    ),
    ("verify.submit", "確認する", "Confirm"),
    (
        "verify.done",
        "確認できました。ログインしてください。",
        "Confirmed. Please sign in.",
    ),
    ("signin.title", "ログイン", "Sign in"),
    ("signin.submit", "ログイン", "Sign in"),
    ("signin.no_account", "はじめての方", "New to Kinko?"),
    ("second.title", "二段階認証", "Second factor"),
    (
        "second.lead",
        "認証アプリに表示されているコードを入力してください。",
        "Enter the code your authenticator app shows.",
    ),
    ("second.submit", "確認する", "Confirm"),
    ("home.title", "ホーム", "Home"),
    ("home.balance", "残高", "Balance"),
    ("home.available", "使える金額", "Available"),
    ("home.pending_in", "入金待ち", "Incoming"),
    ("home.steps", "はじめに", "Getting started"),
    (
        "home.step_totp",
        "二段階認証を設定する",
        "Set up your second factor",
    ),
    ("home.step_kyc", "本人確認をする", "Verify your identity"),
    (
        "home.step_link",
        "銀行口座を登録する",
        "Link a bank account",
    ),
    ("home.done", "済", "done"),
    (
        "home.gate",
        "いまお金を動かせない理由",
        "Why money cannot move now",
    ),
    (
        "home.step_up",
        "二段階認証をもう一度",
        "Pass your second factor again",
    ),
    (
        "totp.title",
        "二段階認証の設定",
        "Set up your second factor",
    ),
    (
        "totp.lead",
        "認証アプリでQRコードを読み取るか、キーを入力してから、表示されたコードを入力してください。",
        "Scan the QR code with your authenticator app, or type in the key, then enter the code it shows.",
    ),
    ("totp.key", "キー", "Key"),
    ("totp.start", "設定を始める", "Start"),
    ("totp.submit", "設定する", "Set up"),
    (
        "totp.done",
        "二段階認証を設定しました。",
        "Your second factor is set up.",
    ),
    (
        "totp.recovery",
        "復旧コード（一度だけ表示します。安全な場所に保管してください）",
        "Recovery codes (shown once: keep them somewhere safe)",
    ),
    ("kyc.title", "本人確認", "Identity check"),
    (
        "kyc.lead",
        "本人確認書類の受付番号を入力してください（サンドボックスでは SANDBOX-ID-0001 など）。",
        "Enter your identity check reference (in the sandbox, e.g. SANDBOX-ID-0001).",
    ),
    ("kyc.submit", "送信する", "Submit"),
    (
        "kyc.verified",
        "本人確認が完了しました。",
        "Your identity is verified.",
    ),
    (
        "kyc.review",
        "本人確認を審査しています。",
        "Your identity check is under review.",
    ),
    (
        "kyc.rejected",
        "本人確認ができませんでした。",
        "Your identity could not be verified.",
    ),
    ("links.title", "銀行口座", "Bank accounts"),
    (
        "links.lead",
        "銀行のページでログインし、口座を選んでください。",
        "Sign in at your bank's page and choose the account.",
    ),
    (
        "links.none",
        "登録された口座はありません。",
        "No linked account yet.",
    ),
    ("links.submit", "銀行のページへ", "Go to the bank"),
    (
        "links.going",
        "銀行のページへ移動します…",
        "Taking you to your bank…",
    ),
    ("links.continue", "続ける", "Continue"),
    (
        "links.returning",
        "Kinko に戻っています…",
        "Coming back to Kinko…",
    ),
    ("links.linked", "口座を登録しました", "Account linked"),
    ("charge.title", "チャージ", "Charge"),
    (
        "charge.lead",
        "登録した銀行口座から入金します。",
        "Move money in from a linked bank account.",
    ),
    ("charge.submit", "チャージする", "Charge"),
    (
        "charge.confirm_title",
        "チャージの確認",
        "Confirm the charge",
    ),
    (
        "charge.confirm_lead",
        "大きな金額のため、認証アプリのコードで承認してください：",
        "For an amount this large, approve it with your authenticator code:",
    ),
    (
        "charge.confirm_submit",
        "承認してチャージ",
        "Approve and charge",
    ),
    (
        "charge.no_link",
        "先に銀行口座を登録してください。",
        "Link a bank account first.",
    ),
    ("pay.title", "支払う", "Pay"),
    (
        "pay.lead",
        "お店のQRコードの内容を貼り付けるか、写真を選んでください。",
        "Paste the shop's QR code text, or choose a photo of it.",
    ),
    ("pay.read", "読み取る", "Read"),
    ("pay.confirm_title", "支払先の確認", "Check the payee"),
    ("pay.merchant", "支払先", "Pay to"),
    ("pay.submit", "支払う", "Pay"),
    ("nav.security", "セキュリティ", "Security"),
    (
        "security.title",
        "ログイン中の端末",
        "Where you are signed in",
    ),
    ("security.current", "この端末", "this device"),
    ("security.end", "ログアウトさせる", "Sign it out"),
    (
        "security.ended",
        "その端末をログアウトさせました。",
        "That session is signed out.",
    ),
    ("console.title", "運用コンソール", "Operator console"),
    ("console.banks", "提携銀行", "Partner banks"),
    ("console.linking", "口座登録", "Linking"),
    ("console.charging", "チャージ", "Charging"),
    ("console.on", "受付中", "on"),
    ("console.off", "停止中", "off"),
    ("console.turn_off", "停止する", "turn off"),
    ("console.turn_on", "再開する", "turn on"),
    (
        "console.reason",
        "理由（10文字以上、監査ログに残ります）",
        "Reason (10 characters or more, kept in the audit log)",
    ),
    ("console.switched", "切り替えました。", "Switched."),
    ("paycode.title", "支払いコード", "Pay code"),
    ("paycode.show", "支払いコードを表示", "Show my pay code"),
    (
        "paycode.lead",
        "お店のレジで読み取ってもらってください。一度だけ使えます。",
        "Let the shop's till scan it. It works once.",
    ),
    ("paycode.seconds", "有効期限（秒）", "Valid for (seconds)"),
    ("send.title", "送る", "Send"),
    (
        "send.lead",
        "ハンドル名で相手に送金します。",
        "Send money to a handle.",
    ),
    ("send.submit", "送る", "Send"),
    ("handle.submit", "ハンドル名を設定", "Set my handle"),
    (
        "handle.done",
        "ハンドル名を設定しました",
        "Your handle is set",
    ),
    ("history.title", "履歴", "History"),
    (
        "history.none",
        "まだ取引はありません。",
        "No movements yet.",
    ),
    ("history.csv", "CSVでダウンロード", "Download as CSV"),
    ("history.filter", "絞り込む", "Filter"),
    ("history.all", "すべて", "All"),
    ("history.older", "さらに表示", "Older"),
    ("history.when", "日時", "When"),
    ("history.what", "内容", "What"),
    ("history.status", "状態", "Status"),
    ("kind.charge", "チャージ", "Charge"),
    ("kind.withdrawal", "出金", "Withdrawal"),
    ("kind.payment", "支払い", "Payment"),
    ("kind.refund", "返金", "Refund"),
    ("kind.transfer_in", "受け取り", "Received"),
    ("kind.transfer_out", "送金", "Sent"),
    ("status.posted", "完了", "Done"),
    ("status.pending", "処理中", "In progress"),
    ("status.rejected", "不成立", "Refused"),
    ("status.voided", "取消", "Cancelled"),
    ("result.title", "結果", "Result"),
    ("result.done", "完了しました", "Done"),
    (
        "result.pending",
        "銀行の応答を待っています",
        "Waiting for the bank",
    ),
    (
        "result.rejected",
        "お取引できませんでした",
        "The movement was refused",
    ),
    ("result.back", "ホームへ戻る", "Back to home"),
    ("error.title", "エラー", "Error"),
    (
        "error.generic",
        "処理できませんでした。時間をおいてもう一度お試しください。",
        "That did not work. Please try again later.",
    ),
    (
        "error.form",
        "入力内容を確認してください。",
        "Please check what you entered.",
    ),
    (
        "error.amount",
        "金額は1円以上の整数で入力してください。",
        "Enter the amount as a whole number of yen above zero.",
    ),
    (
        "error.csrf",
        "ページの有効期限が切れました。もう一度お試しください。",
        "This page expired. Please try again.",
    ),
    (
        "error.not_found",
        "ページが見つかりません。",
        "There is no page here.",
    ),
    (
        "error.photo",
        "写真からQRコードを読み取れませんでした。",
        "No QR code could be read from the photo.",
    ),
    (
        "IDENTITY_LOGIN_FAILED",
        "メールアドレスまたはパスワードが違います。",
        "The e-mail address or password is wrong.",
    ),
    (
        "IDENTITY_EMAIL_INVALID",
        "メールアドレスの形式が正しくありません。",
        "That is not a valid e-mail address.",
    ),
    (
        "IDENTITY_PHONE_INVALID",
        "携帯電話番号の形式が正しくありません。",
        "That is not a valid mobile phone number.",
    ),
    (
        "IDENTITY_PHONE_IN_USE",
        "この電話番号は使えません。",
        "This phone number cannot be used.",
    ),
    (
        "IDENTITY_EMAIL_IN_USE",
        "このメールアドレスは使えません。",
        "This e-mail address cannot be used.",
    ),
    (
        "PASSWORD_TOO_SHORT",
        "パスワードは12文字以上にしてください。",
        "The password needs 12 characters or more.",
    ),
    (
        "PASSWORD_TOO_LONG",
        "パスワードが長すぎます。",
        "The password is too long.",
    ),
    (
        "PASSWORD_TOO_COMMON",
        "よく使われるパスワードは使えません。",
        "That password is too common.",
    ),
    (
        "PASSWORD_EQUALS_EMAIL",
        "メールアドレスと同じパスワードは使えません。",
        "The password cannot be your e-mail address.",
    ),
    ("CODE_INVALID", "コードが違います。", "The code is wrong."),
    (
        "CODE_EXPIRED",
        "コードの有効期限が切れました。",
        "The code has expired.",
    ),
    (
        "RATE_LIMITED",
        "試行回数が多すぎます。しばらく待ってからお試しください。",
        "Too many tries. Please wait a while.",
    ),
    (
        "IDENTITY_SECOND_FACTOR_INVALID",
        "コードが違います。",
        "The code is wrong.",
    ),
    (
        "IDENTITY_SECOND_FACTOR_REQUIRED",
        "先に二段階認証を設定してください。",
        "Set up your second factor first.",
    ),
    (
        "IDENTITY_SECOND_FACTOR_EXISTS",
        "二段階認証はすでに設定されています。",
        "Your second factor is already set up.",
    ),
    (
        "IDENTITY_KYC_REQUIRED",
        "先に本人確認をしてください。",
        "Verify your identity first.",
    ),
    (
        "IDENTITY_OUTGOING_FROZEN",
        "安全のため、現在お金を動かせません。",
        "For your safety, money cannot move from this wallet now.",
    ),
    (
        "IDENTITY_NOT_ACTIVE",
        "アカウントが有効ではありません。",
        "This account is not active.",
    ),
    (
        "SESSION_STEP_UP_REQUIRED",
        "お金を動かす前に、二段階認証をもう一度行ってください。",
        "Pass your second factor again before moving money.",
    ),
    (
        "SESSION_INVALID",
        "ログインしてください。",
        "Please sign in.",
    ),
    (
        "SESSION_EXPIRED",
        "ログインの有効期限が切れました。",
        "Your session has expired.",
    ),
    (
        "SESSION_CSRF_INVALID",
        "ページの有効期限が切れました。もう一度お試しください。",
        "This page expired. Please try again.",
    ),
    (
        "KYC_PROVIDER_UNAVAILABLE",
        "本人確認サービスに接続できません。",
        "The identity check service cannot be reached.",
    ),
    (
        "BANK_LINK_FAILED",
        "口座を登録できませんでした。",
        "The account could not be linked.",
    ),
    (
        "BANK_LINKING_DISABLED",
        "この銀行では現在、口座登録を停止しています。",
        "This bank is not taking new links now.",
    ),
    (
        "BANK_NOT_FOUND",
        "その銀行は提携していません。",
        "That bank is not a partner.",
    ),
    (
        "BANK_UNAVAILABLE",
        "銀行に接続できません。",
        "The bank cannot be reached.",
    ),
    (
        "BANK_CHARGING_DISABLED",
        "この銀行からのチャージは現在停止しています。",
        "Charging from this bank is suspended now.",
    ),
    (
        "BANK_LINK_NOT_FOUND",
        "その口座は見つかりません。",
        "There is no such account.",
    ),
    (
        "BANK_LINK_INACTIVE",
        "その口座は登録が解除されています。",
        "That account is no longer linked.",
    ),
    (
        "MONEY_AMOUNT_INVALID",
        "金額は1円以上の整数で入力してください。",
        "Enter the amount as a whole number of yen above zero.",
    ),
    (
        "MONEY_LIMIT_EXCEEDED",
        "上限を超えるためお取引できません。",
        "This is over a limit.",
    ),
    (
        "MONEY_NEW_LINK_WAIT",
        "登録したばかりの口座からは、しばらくチャージできません。",
        "A newly linked account cannot be charged from yet.",
    ),
    (
        "MONEY_PAYOUT_ACCOUNT_WAIT",
        "登録したばかりの口座へは、しばらく出金できません。",
        "Money cannot go to a newly linked account yet.",
    ),
    (
        "MONEY_HANDLE_INVALID",
        "ハンドル名は英小文字・数字・_ の3〜20文字です。",
        "A handle is 3–20 letters a–z, digits and _.",
    ),
    (
        "MONEY_HANDLE_TAKEN",
        "このハンドル名は使われています。",
        "This handle is taken.",
    ),
    (
        "MONEY_RECIPIENT_NOT_FOUND",
        "そのハンドル名の相手はいません。",
        "No wallet has this handle.",
    ),
    (
        "MONEY_RECIPIENT_INVALID",
        "自分には送れません。",
        "You cannot send money to yourself.",
    ),
    (
        "MONEY_NOTE_INVALID",
        "メモは100文字までです。",
        "The note is at most 100 characters.",
    ),
    (
        "MONEY_CONFIRMATION_INVALID",
        "承認の有効期限が切れました。最初からやり直してください。",
        "The approval expired. Please start again.",
    ),
    (
        "MONEY_CONFIRMATION_CODE_INVALID",
        "コードが違います。",
        "The code is wrong.",
    ),
    (
        "MONEY_CONFIRMATION_RATE_LIMITED",
        "試行回数が多すぎます。しばらく待ってからお試しください。",
        "Too many tries. Please wait a while.",
    ),
    (
        "MONEY_FILTER_INVALID",
        "絞り込みの条件が正しくありません。",
        "That filter is not valid.",
    ),
    (
        "MONEY_CURSOR_INVALID",
        "そのページはありません。",
        "There is no such page.",
    ),
    (
        "IDEMPOTENCY_KEY_REUSED",
        "このフォームはすでに送信されています。",
        "This form was already sent.",
    ),
    (
        "MERCHANT_NOT_FOUND",
        "このQRコードのお店は見つかりません。",
        "The shop of this QR code is unknown.",
    ),
    (
        "MERCHANT_INACTIVE",
        "このお店は現在支払いを受け付けていません。",
        "This shop does not take payments now.",
    ),
    (
        "PAYMENT_AMOUNT_MISMATCH",
        "QRコードの金額が正しくありません。支払わないでください。",
        "The QR code's amount is wrong. Do not pay.",
    ),
    (
        "PAYMENT_AMOUNT_REQUIRED",
        "金額を入力してください。",
        "Enter the amount.",
    ),
    (
        "PAYMENT_REQUEST_UNAVAILABLE",
        "この支払いは終了しているか、期限切れです。",
        "This payment is already paid or expired.",
    ),
    (
        "QR_INVALID",
        "QRコードを読み取れませんでした。",
        "The QR code could not be read.",
    ),
    ("NOT_FOUND", "見つかりません。", "Not found."),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_preferred_of_japanese_and_english() {
        assert_eq!(Lang::from_accept_language("ja,en;q=0.8"), Some(Lang::Ja));
        assert_eq!(
            Lang::from_accept_language("en-US,en;q=0.9,ja;q=0.8"),
            Some(Lang::En)
        );
        assert_eq!(
            Lang::from_accept_language("fr, ja;q=0.3, en;q=0.5"),
            Some(Lang::En)
        );
        assert_eq!(Lang::from_accept_language("de, fr"), None);
        assert_eq!(
            Lang::from_accept_language("en;q=0, ja;q=0.1"),
            Some(Lang::Ja)
        );
    }

    #[test]
    fn every_key_has_both_languages_once() {
        let texts: Vec<_> = all_texts().collect();
        for (index, (key, ja, en)) in texts.iter().enumerate() {
            assert!(!ja.is_empty() && !en.is_empty(), "{key}");
            assert!(
                texts[index + 1..].iter().all(|(other, ..)| other != key),
                "{key} twice"
            );
        }
    }

    #[test]
    fn an_unknown_error_code_is_still_a_sentence_with_its_code() {
        assert_eq!(
            Lang::En.error("SOMETHING_NEW"),
            "That did not work. Please try again later. (SOMETHING_NEW)"
        );
        assert_eq!(Lang::Ja.error("CODE_INVALID"), "コードが違います。");
    }

    /// Every `t("…")` in a template names a key of the table, so no page shows "…".
    #[test]
    fn every_key_in_the_templates_exists() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/pages/templates");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{error}")) {
            let path = entry.unwrap_or_else(|error| panic!("{error}")).path();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{error}"));
            for piece in text.split("t(\"").skip(1) {
                let key = piece.split('"').next().unwrap_or_default();
                assert!(
                    all_texts().any(|(name, ..)| *name == key),
                    "{}: no text for {key}",
                    path.display()
                );
                checked += 1;
            }
        }
        assert!(checked > 50, "only {checked} keys found");
    }
}
