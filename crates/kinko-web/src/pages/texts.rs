//! The texts of the later pages (withdraw, security, the compensation policy, the console's
//! audit log, risk decisions and dashboard), in the same shape as `i18n::TEXTS`: (key, 日本語,
//! English). Kept apart so neither table grows past a screenful of scrolling.

pub const TEXTS: &[(&str, &str, &str)] = &[
    ("history.dispute", "身に覚えがない", "I didn't do this"),
    (
        "history.disputed",
        "申告を受け付けました。ウォレットからの出金を止め、お金の行き先を保全して調査を始めました。結果はメールでお知らせします。",
        "We have your report. Outgoing money is paused, the money has been traced and held where it went, and we are looking into it. We will e-mail you the outcome.",
    ),
    ("nav.withdraw", "出金", "Withdraw"),
    ("compensation.title", "補償方針", "Compensation policy"),
    ("console.audit", "監査ログ", "Audit log"),
    ("console.chain", "ハッシュチェーン", "Hash chain"),
    ("console.risk", "リスク判定", "Risk decisions"),
    ("console.dashboard", "ダッシュボード", "Dashboard"),
    (
        "console.last_hour",
        "直近1時間の1分ごとの件数",
        "The last hour, per minute",
    ),
    (
        "console.per_minute_max",
        "1分あたりの最大件数",
        "Most in one minute",
    ),
    ("console.charges", "チャージ", "Charges"),
    ("console.payments", "支払い", "Payments"),
    ("console.declines", "拒否", "Declines"),
    (
        "console.risk_none",
        "ルールが反応した判定はまだありません。",
        "No rule has fired yet.",
    ),
    ("console.chain_intact", "改ざんなし", "intact"),
    ("console.chain_broken", "破損あり", "BROKEN"),
    ("console.chain_checked", "検証した件数", "Entries checked"),
    (
        "OPERATOR_FORBIDDEN",
        "この操作の権限がありません。",
        "Your role does not allow this.",
    ),
    ("withdraw.title", "銀行口座へ出金", "Withdraw to your bank"),
    (
        "withdraw.lead",
        "登録した本人名義の口座へ、ウォレットの残高を戻します。",
        "Move money from the wallet back to your own linked account.",
    ),
    ("withdraw.to", "出金先の口座", "To the account"),
    (
        "withdraw.step_up",
        "お金を動かす前に、認証アプリのコードを入力してください。",
        "Enter your authenticator code before moving money.",
    ),
    (
        "withdraw.code",
        "認証アプリのコード（6桁）",
        "Authenticator code (6 digits)",
    ),
    ("withdraw.submit", "出金する", "Withdraw"),
    (
        "MONEY_RISK_DECLINED",
        "安全確認のため、この取引は今はお受けできません。",
        "A safety check holds this movement back: it cannot go ahead now.",
    ),
    ("security.page_title", "セキュリティ", "Security"),
    (
        "security.freeze_title",
        "ウォレットを凍結",
        "Freeze my wallet",
    ),
    (
        "security.freeze_lead",
        "心当たりのない操作があれば、送金・支払い・出金をすぐに止められます。凍結は期間が過ぎるまで解除できません（サポートは除く）。",
        "If something looks wrong, stop payments, transfers and withdrawals now. A freeze lasts until its end (only support can lift it earlier).",
    ),
    ("security.freeze_for", "凍結する期間", "Freeze for"),
    ("security.freeze_day", "24時間", "24 hours"),
    ("security.freeze_week", "7日間", "7 days"),
    ("security.freeze_submit", "今すぐ凍結する", "Freeze now"),
    (
        "security.frozen",
        "ウォレットを凍結しました。お金は出ていきません。",
        "Your wallet is frozen: no money can leave it.",
    ),
    (
        "security.frozen_until",
        "凍結中。お金を動かせるのは次の日時以降です：",
        "Frozen. Money can leave again after:",
    ),
    (
        "security.end_all",
        "この端末以外をすべてログアウト",
        "Sign out everywhere else",
    ),
    (
        "security.ended_all",
        "この端末以外をすべてログアウトさせました。",
        "Every other session is signed out.",
    ),
    ("security.devices", "登録済みの端末", "Known devices"),
    ("security.trusted", "信頼済み", "trusted"),
    ("security.forget", "登録を解除", "Forget it"),
    (
        "security.device_forgotten",
        "その端末の登録を解除しました。",
        "That device is forgotten.",
    ),
    (
        "security.notices",
        "最近のお知らせ",
        "Recent security notices",
    ),
    (
        "security.no_notices",
        "お知らせはありません。",
        "No notices.",
    ),
    (
        "notice.account_locked",
        "アカウントがロックされました",
        "Your account was locked",
    ),
    (
        "notice.account_recovered",
        "アカウントが復旧されました",
        "Your account was recovered",
    ),
    (
        "notice.password_changed",
        "パスワードが変更されました",
        "Your password changed",
    ),
    (
        "notice.second_factor_added",
        "二段階認証が設定されました",
        "A second factor was set up",
    ),
    (
        "notice.bank_link_created",
        "銀行口座が登録されました",
        "A bank account was linked",
    ),
    (
        "notice.bank_link_ended",
        "銀行口座の登録が解除されました",
        "A bank link ended",
    ),
    (
        "notice.bank_link_attempt_elsewhere",
        "あなたの口座を別のウォレットに登録しようとする操作がありました",
        "Someone tried to link your account to another wallet",
    ),
    (
        "notice.bank_fraud_reported",
        "銀行から不正の報告がありました",
        "Your bank reported fraud",
    ),
    (
        "notice.wallet_frozen",
        "ウォレットが凍結されました",
        "Your wallet was frozen",
    ),
];

#[cfg(test)]
mod tests {
    use kinko_identity::service::own_safety::SECURITY_NOTICE_PURPOSES;

    use super::super::Lang;

    /// Every notice the security page may list has a text in both languages.
    #[test]
    fn every_security_notice_has_a_text() {
        for purpose in SECURITY_NOTICE_PURPOSES {
            let key = format!("notice.{purpose}");
            assert!(super::TEXTS.iter().any(|(name, ..)| *name == key), "{key}");
            assert_ne!(Lang::En.t(&key), "…");
        }
    }
}
