//! Messages to users: the outbox, the gateways that deliver it, and the choice of gateway.
//!
//! A message is written to `notify_outbox` in the same transaction as the change that causes
//! it ([`enqueue`]), so a message exists exactly when the change committed: no code is sent for
//! a sign-up that rolled back, and no lock goes unannounced. A worker ([`deliver_pending`])
//! later hands unsent messages to the e-mail or SMS gateway, at least once, with bounded
//! retries. In the sandbox the gateways deliver nowhere and the messages stay readable in the
//! outbox ([`read_outbox`]) for the demo and the tests; production refuses the sandbox
//! ([`choose_mode`]).
//!
//! Destinations, subjects and bodies (which carry one-time codes) are personal data: they are
//! never logged and never shown by `Debug`. Logs carry the message id, its purpose and an
//! outcome code.

use std::fmt;
use std::time::Duration;

use kinko_core::{ErrorCode, ErrorKind};
use kinko_ledger::StoreError;
use kinko_store::sql::{Database, Dialect, Row, Tx, Value};
use secrecy::{ExposeSecret, SecretString};

kinko_core::typed_id!(
    /// An outbox message.
    MessageId
);

/// A delivery is tried at most this many times; then the message is left for an operator.
pub const DELIVERY_ATTEMPTS_MAX: i64 = 5;
/// The wait before retrying after the first attempt; it doubles with each attempt (1, 2, 4,
/// 8 min). It is also the lease that keeps a second sender off a message being sent, so it is
/// well above the SMTP timeout.
pub const RETRY_DELAY_MS: i64 = 60_000;
/// Messages one [`deliver_pending`] call handles at most.
pub const DELIVERY_BATCH_MAX: usize = 100;
/// Messages one [`read_outbox`] call returns at most.
pub const READ_OUTBOX_MAX: usize = 100;
/// Bounds on what a message may hold (an e-mail address is at most 254 octets; the bodies we
/// write are a few lines).
pub const DESTINATION_BYTES_MAX: usize = 320;
pub const SUBJECT_CHARS_MAX: usize = 200;
pub const BODY_CHARS_MAX: usize = 10_000;
/// Each SMTP command must answer within this, so a hung server cannot hold a worker.
pub const SMTP_TIMEOUT_MS: u64 = 10_000;

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "email" => Some(Channel::Email),
            "sms" => Some(Channel::Sms),
            _ => None,
        }
    }
}

/// A message to enqueue. `purpose` names why it is sent (`verify_email`, `account_locked`…) and
/// is the only part of it that may be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub channel: Channel,
    pub destination: String,
    pub purpose: String,
    /// Empty for SMS.
    pub subject: String,
    pub body: String,
}

impl fmt::Debug for Message {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Message")
            .field("channel", &self.channel)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

/// A message as stored in the outbox.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: MessageId,
    pub channel: Channel,
    pub destination: String,
    pub purpose: String,
    pub subject: String,
    pub body: String,
    pub created_at_ms: i64,
    pub sent_at_ms: Option<i64>,
    pub attempts: i64,
}

impl fmt::Debug for OutboxMessage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("OutboxMessage")
            .field("id", &self.id)
            .field("channel", &self.channel)
            .field("purpose", &self.purpose)
            .field("created_at_ms", &self.created_at_ms)
            .field("sent_at_ms", &self.sent_at_ms)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("the message is empty or too large to send")]
    MessageInvalid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Equal when the codes are; storage errors compare by message.
impl PartialEq for NotifyError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (NotifyError::Store(left), NotifyError::Store(right)) => left.message == right.message,
            _ => self.code() == other.code(),
        }
    }
}

impl ErrorCode for NotifyError {
    fn code(&self) -> &'static str {
        match self {
            NotifyError::MessageInvalid => "NOTIFY_MESSAGE_INVALID",
            NotifyError::Store(_) => "NOTIFY_STORAGE_FAILED",
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            // Messages are written by our own code, so a bad one is a bug.
            NotifyError::MessageInvalid => ErrorKind::Internal,
            NotifyError::Store(_) => ErrorKind::Internal,
        }
    }
}

fn id_at(now_ms: i64) -> u128 {
    let now_ms = u64::try_from(now_ms).unwrap_or(0);
    let timestamp = uuid::Timestamp::from_unix(
        uuid::NoContext,
        now_ms / 1_000,
        u32::try_from((now_ms % 1_000) * 1_000_000).unwrap_or(0),
    );
    uuid::Uuid::new_v7(timestamp).as_u128()
}

/// Writes a message to the outbox inside the caller's transaction.
pub fn enqueue(tx: &mut dyn Tx, now_ms: i64, message: &Message) -> Result<MessageId, NotifyError> {
    let valid = !message.destination.trim().is_empty()
        && message.destination.len() <= DESTINATION_BYTES_MAX
        && !message.purpose.is_empty()
        && message.subject.chars().count() <= SUBJECT_CHARS_MAX
        && !message.body.is_empty()
        && message.body.chars().count() <= BODY_CHARS_MAX;
    if !valid {
        return Err(NotifyError::MessageInvalid);
    }
    let id = MessageId::from_u128(id_at(now_ms))
        .map_err(|_| StoreError::new("generated a zero message id"))?;
    tx.execute(
        "INSERT INTO notify_outbox
            (id, channel, destination, purpose, subject, body, created_at, attempts, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $7)",
        &[
            Value::Uuid(id.as_u128()),
            message.channel.as_str().into(),
            message.destination.as_str().into(),
            message.purpose.as_str().into(),
            message.subject.as_str().into(),
            message.body.as_str().into(),
            Value::Int(now_ms),
        ],
    )?;
    tracing::info!(
        message_id = %id,
        purpose = %message.purpose,
        channel = message.channel.as_str(),
        "message enqueued"
    );
    Ok(id)
}

const OUTBOX_COLUMNS: &str =
    "id, channel, destination, purpose, subject, body, created_at, sent_at, attempts";

fn outbox_message(row: &Row) -> Result<OutboxMessage, StoreError> {
    let channel = row.text(1)?;
    Ok(OutboxMessage {
        id: MessageId::from_u128(row.uuid(0)?)
            .map_err(|_| StoreError::new("outbox row with a zero id"))?,
        channel: Channel::parse(&channel)
            .ok_or_else(|| StoreError::new("outbox row with an unknown channel"))?,
        destination: row.text(2)?,
        purpose: row.text(3)?,
        subject: row.text(4)?,
        body: row.text(5)?,
        created_at_ms: row.int(6)?,
        sent_at_ms: row.opt_int(7)?,
        attempts: row.int(8)?,
    })
}

/// The latest messages to `destination`, newest first (at most [`READ_OUTBOX_MAX`]). The demo
/// and the tests read sandbox deliveries here.
pub fn read_outbox(
    database: &Database,
    destination: &str,
    limit: usize,
) -> Result<Vec<OutboxMessage>, StoreError> {
    let limit = i64::try_from(limit.min(READ_OUTBOX_MAX)).unwrap_or(0);
    database.transaction(|tx: &mut dyn Tx| {
        tx.query(
            &format!(
                "SELECT {OUTBOX_COLUMNS} FROM notify_outbox WHERE destination = $1
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            ),
            &[destination.into(), Value::Int(limit)],
        )?
        .iter()
        .map(outbox_message)
        .collect()
    })
}

/// Why a gateway did not deliver. No variant carries the server's text: it may quote the
/// destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Worth retrying: the server is down, timed out or answered with a temporary failure.
    #[error("the gateway is unavailable")]
    Unavailable,
    /// Not worth retrying: the server refused the message or its destination for good.
    #[error("the gateway refused the message")]
    Rejected,
    /// No gateway is configured for this channel.
    #[error("no gateway is configured for this channel")]
    NotConfigured,
}

impl ErrorCode for GatewayError {
    fn code(&self) -> &'static str {
        match self {
            GatewayError::Unavailable => "NOTIFY_GATEWAY_UNAVAILABLE",
            GatewayError::Rejected => "NOTIFY_GATEWAY_REJECTED",
            GatewayError::NotConfigured => "NOTIFY_GATEWAY_NOT_CONFIGURED",
        }
    }

    fn kind(&self) -> ErrorKind {
        ErrorKind::Unavailable
    }
}

pub trait EmailGateway: Send + Sync {
    fn send(&self, message: &OutboxMessage) -> Result<(), GatewayError>;

    /// True only for the sandbox, whose outbox *is* the delivery: every other gateway's
    /// delivered (or abandoned) message loses its body, one-time codes included.
    fn keeps_delivered(&self) -> bool {
        false
    }
}

pub trait SmsGateway: Send + Sync {
    fn send(&self, message: &OutboxMessage) -> Result<(), GatewayError>;

    /// See [`EmailGateway::keeps_delivered`].
    fn keeps_delivered(&self) -> bool {
        false
    }
}

/// The sandbox: "delivering" only marks the message sent; it stays readable in the outbox.
#[derive(Debug, Clone, Copy, Default)]
pub struct SandboxGateway;

impl EmailGateway for SandboxGateway {
    fn keeps_delivered(&self) -> bool {
        true
    }

    fn send(&self, message: &OutboxMessage) -> Result<(), GatewayError> {
        tracing::info!(
            message_id = %message.id,
            purpose = %message.purpose,
            "sandbox e-mail kept in the outbox"
        );
        Ok(())
    }
}

impl SmsGateway for SandboxGateway {
    fn keeps_delivered(&self) -> bool {
        true
    }

    fn send(&self, message: &OutboxMessage) -> Result<(), GatewayError> {
        tracing::info!(
            message_id = %message.id,
            purpose = %message.purpose,
            "sandbox SMS kept in the outbox"
        );
        Ok(())
    }
}

/// For a channel with no provider: every delivery fails (and is retried, in case one is
/// configured before the attempts run out).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnconfiguredGateway;

impl EmailGateway for UnconfiguredGateway {
    fn send(&self, _: &OutboxMessage) -> Result<(), GatewayError> {
        Err(GatewayError::NotConfigured)
    }
}

impl SmsGateway for UnconfiguredGateway {
    fn send(&self, _: &OutboxMessage) -> Result<(), GatewayError> {
        Err(GatewayError::NotConfigured)
    }
}

/// The gateway for each channel.
pub struct Gateways {
    pub email: Box<dyn EmailGateway>,
    pub sms: Box<dyn SmsGateway>,
}

impl Gateways {
    /// Builds the gateways a configuration names. Building connects nowhere.
    pub fn from_config(config: &GatewayConfig) -> Result<Self, NotifyConfigError> {
        match config {
            GatewayConfig::Sandbox => {
                warn_sandbox();
                Ok(Self {
                    email: Box::new(SandboxGateway),
                    sms: Box::new(SandboxGateway),
                })
            }
            GatewayConfig::Smtp(smtp) => Ok(Self {
                email: Box::new(SmtpGateway::new(smtp)?),
                // No SMS provider ships yet: SMS stay in the outbox, retried, and an operator
                // sees them fail (`NOTIFY_GATEWAY_NOT_CONFIGURED` in the log).
                sms: Box::new(UnconfiguredGateway),
            }),
        }
    }
}

fn warn_sandbox() {
    tracing::warn!(
        "NOTIFICATION SANDBOX ACTIVE: e-mails and SMS are NOT delivered; they stay in the \
         notify_outbox table. Never run like this in production (set KINKO_NOTIFY=smtp)."
    );
}

/// What one [`deliver_pending`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub sent: usize,
    /// Failed this time; tried again after the back-off unless attempts ran out.
    pub failed: usize,
    /// Failed for the last time: attempts ran out or the gateway refused for good.
    pub abandoned: usize,
}

/// Delivers up to `limit` (≤ [`DELIVERY_BATCH_MAX`]) due messages, oldest first.
///
/// Each message is first claimed in a short transaction that counts the attempt and pushes its
/// next try into the future (the lease), then sent with no database connection held, then
/// marked sent. So several workers, even in several processes, do not send one message twice
/// unless a send outlasts the lease; a crash between sending and marking sends it again later
/// (at least once); and a message is tried at most [`DELIVERY_ATTEMPTS_MAX`] times.
pub fn deliver_pending(
    database: &Database,
    now_ms: i64,
    gateways: &Gateways,
    limit: usize,
) -> Result<DeliveryReport, StoreError> {
    let limit = i64::try_from(limit.min(DELIVERY_BATCH_MAX)).unwrap_or(0);
    let claimed = database.transaction(|tx: &mut dyn Tx| {
        // PostgreSQL workers skip rows another worker is claiming, so they share the work
        // instead of queueing on the same rows; SQLite's writers are serialised anyway.
        let lock = match tx.dialect() {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let due = tx.query(
            &format!(
                "SELECT {OUTBOX_COLUMNS} FROM notify_outbox
                 WHERE sent_at IS NULL AND attempts < $1 AND next_attempt_at <= $2
                 ORDER BY created_at, id LIMIT $3{lock}"
            ),
            &[
                Value::Int(DELIVERY_ATTEMPTS_MAX),
                Value::Int(now_ms),
                Value::Int(limit),
            ],
        )?;
        let mut claimed = Vec::with_capacity(due.len());
        for row in &due {
            let mut message = outbox_message(row)?;
            let delay_ms = RETRY_DELAY_MS.saturating_mul(1 << message.attempts.clamp(0, 16));
            // Compare-and-set on the attempt count: if another worker claimed it meanwhile,
            // this changes nothing and the message is skipped.
            let changed = tx.execute(
                "UPDATE notify_outbox SET attempts = attempts + 1, next_attempt_at = $3
                 WHERE id = $1 AND attempts = $2 AND sent_at IS NULL",
                &[
                    Value::Uuid(message.id.as_u128()),
                    Value::Int(message.attempts),
                    Value::Int(now_ms.saturating_add(delay_ms)),
                ],
            )?;
            if changed == 1 {
                message.attempts += 1;
                claimed.push(message);
            }
        }
        Ok::<_, StoreError>(claimed)
    })?;

    let mut report = DeliveryReport::default();
    for message in &claimed {
        let (outcome, keeps) = match message.channel {
            Channel::Email => (
                gateways.email.send(message),
                gateways.email.keeps_delivered(),
            ),
            Channel::Sms => (gateways.sms.send(message), gateways.sms.keeps_delivered()),
        };
        // Once a message has left (or never will), its body — which may hold a one-time code
        // — is not kept: a database reader finds no code of the past (issue 13, item 6).
        let body = if keeps { "body" } else { "''" };
        match outcome {
            Ok(()) => {
                database.transaction(|tx: &mut dyn Tx| {
                    tx.execute(
                        &format!(
                            "UPDATE notify_outbox SET sent_at = $2, body = {body} WHERE id = $1"
                        ),
                        &[Value::Uuid(message.id.as_u128()), Value::Int(now_ms)],
                    )
                })?;
                report.sent += 1;
                tracing::info!(
                    message_id = %message.id,
                    purpose = %message.purpose,
                    attempts = message.attempts,
                    "message delivered"
                );
            }
            Err(error) => {
                let last =
                    error == GatewayError::Rejected || message.attempts >= DELIVERY_ATTEMPTS_MAX;
                if last {
                    // A refusal for good is not retried: spend the remaining attempts.
                    database.transaction(|tx: &mut dyn Tx| {
                        tx.execute(
                            &format!(
                                "UPDATE notify_outbox SET attempts = $2, body = {body} WHERE id = $1"
                            ),
                            &[
                                Value::Uuid(message.id.as_u128()),
                                Value::Int(DELIVERY_ATTEMPTS_MAX),
                            ],
                        )
                    })?;
                    report.abandoned += 1;
                    tracing::error!(
                        message_id = %message.id,
                        purpose = %message.purpose,
                        attempts = message.attempts,
                        code = error.code(),
                        "message abandoned"
                    );
                } else {
                    report.failed += 1;
                    tracing::warn!(
                        message_id = %message.id,
                        purpose = %message.purpose,
                        attempts = message.attempts,
                        code = error.code(),
                        "delivery failed; will retry"
                    );
                }
            }
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (no fallback to plain text).
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// No encryption: only for a relay on the same host; refused in production.
    None,
}

impl SmtpTls {
    fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// Login to the SMTP server.
#[derive(Debug)]
pub struct SmtpCredentials {
    pub username: String,
    pub password: SecretString,
}

#[derive(Debug)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// `None` for a relay that needs no login.
    pub credentials: Option<SmtpCredentials>,
    pub from: lettre::message::Mailbox,
    pub tls: SmtpTls,
}

/// Which gateways deliver notifications.
#[derive(Debug)]
pub enum GatewayConfig {
    Sandbox,
    Smtp(SmtpConfig),
}

pub use crate::environment::Environment;

/// The notification mode, as `KINKO_NOTIFY` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyMode {
    Sandbox,
    Smtp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyConfigError {
    #[error(
        "KINKO_NOTIFY=sandbox is refused when KINKO_ENV=production: messages would never reach users"
    )]
    SandboxInProduction,
    #[error("KINKO_NOTIFY must be set (to smtp) when KINKO_ENV=production")]
    NotConfigured,
    #[error("KINKO_NOTIFY must be sandbox or smtp, not {0:?}")]
    UnknownMode(String),
    #[error("{0} must be set when KINKO_NOTIFY=smtp")]
    SettingMissing(&'static str),
    #[error("{name} is invalid: {reason}")]
    SettingInvalid { name: &'static str, reason: String },
    #[error(
        "KINKO_SMTP_TLS=none is refused when KINKO_ENV=production: codes would cross the network in clear"
    )]
    PlaintextInProduction,
}

impl ErrorCode for NotifyConfigError {
    fn code(&self) -> &'static str {
        match self {
            NotifyConfigError::SandboxInProduction => "NOTIFY_SANDBOX_IN_PRODUCTION",
            NotifyConfigError::NotConfigured => "NOTIFY_NOT_CONFIGURED",
            NotifyConfigError::UnknownMode(_) => "NOTIFY_UNKNOWN_MODE",
            NotifyConfigError::SettingMissing(_) => "NOTIFY_SMTP_SETTING_MISSING",
            NotifyConfigError::SettingInvalid { .. } => "NOTIFY_SMTP_SETTING_INVALID",
            NotifyConfigError::PlaintextInProduction => "NOTIFY_SMTP_PLAINTEXT_IN_PRODUCTION",
        }
    }

    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// The rule: production must name a real gateway; the sandbox is never allowed there, with no
/// exception. In a sandbox an unset `KINKO_NOTIFY` means the sandbox gateways.
pub fn choose_mode(
    environment: Environment,
    notify: Option<&str>,
) -> Result<NotifyMode, NotifyConfigError> {
    let mode = match notify.map(|value| value.trim().to_ascii_lowercase()) {
        None => None,
        Some(value) if value.is_empty() => None,
        Some(value) if value == "sandbox" => Some(NotifyMode::Sandbox),
        Some(value) if value == "smtp" => Some(NotifyMode::Smtp),
        Some(_) => {
            return Err(NotifyConfigError::UnknownMode(
                notify.unwrap_or_default().to_owned(),
            ));
        }
    };
    match (environment, mode) {
        (Environment::Production, None) => Err(NotifyConfigError::NotConfigured),
        (Environment::Production, Some(NotifyMode::Sandbox)) => {
            Err(NotifyConfigError::SandboxInProduction)
        }
        (_, Some(mode)) => Ok(mode),
        (Environment::Sandbox, None) => Ok(NotifyMode::Sandbox),
    }
}

impl GatewayConfig {
    /// Reads the configuration of `environment` (decided by [`crate::environment`]) from the
    /// process environment: `KINKO_NOTIFY` and, for SMTP, `KINKO_SMTP_HOST`, `KINKO_SMTP_PORT`, `KINKO_SMTP_TLS`
    /// (`starttls`|`tls`|`none`), `KINKO_SMTP_USERNAME`, `KINKO_SMTP_PASSWORD`,
    /// `KINKO_SMTP_FROM`.
    pub fn from_env(environment: Environment) -> Result<Self, NotifyConfigError> {
        Self::from_lookup(environment, |name| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(NotifyConfigError::SettingInvalid {
                name,
                reason: "not UTF-8".to_owned(),
            }),
        })
    }

    /// The same, from any source of variables (tests pass a map).
    pub fn from_lookup(
        environment: Environment,
        lookup: impl Fn(&'static str) -> Result<Option<String>, NotifyConfigError>,
    ) -> Result<Self, NotifyConfigError> {
        match choose_mode(environment, lookup("KINKO_NOTIFY")?.as_deref())? {
            NotifyMode::Sandbox => {
                warn_sandbox();
                Ok(GatewayConfig::Sandbox)
            }
            NotifyMode::Smtp => smtp_config(environment, &lookup).map(GatewayConfig::Smtp),
        }
    }
}

fn smtp_config(
    environment: Environment,
    lookup: &impl Fn(&'static str) -> Result<Option<String>, NotifyConfigError>,
) -> Result<SmtpConfig, NotifyConfigError> {
    let present = |name: &'static str| -> Result<Option<String>, NotifyConfigError> {
        Ok(lookup(name)?.filter(|value| !value.trim().is_empty()))
    };
    let required = |name: &'static str| -> Result<String, NotifyConfigError> {
        present(name)?.ok_or(NotifyConfigError::SettingMissing(name))
    };
    let invalid = |name: &'static str, reason: &str| NotifyConfigError::SettingInvalid {
        name,
        reason: reason.to_owned(),
    };

    let host = required("KINKO_SMTP_HOST")?.trim().to_owned();
    let tls = match present("KINKO_SMTP_TLS")?
        .map(|value| value.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("starttls") => SmtpTls::Starttls,
        Some("tls") => SmtpTls::Tls,
        Some("none") => SmtpTls::None,
        Some(_) => return Err(invalid("KINKO_SMTP_TLS", "must be starttls, tls or none")),
    };
    if tls == SmtpTls::None && environment == Environment::Production {
        return Err(NotifyConfigError::PlaintextInProduction);
    }
    let port = match present("KINKO_SMTP_PORT")? {
        None => tls.default_port(),
        Some(port) => match port.trim().parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(invalid("KINKO_SMTP_PORT", "must be a port number 1-65535")),
        },
    };
    let credentials = match (
        present("KINKO_SMTP_USERNAME")?,
        present("KINKO_SMTP_PASSWORD")?,
    ) {
        (None, None) => None,
        (Some(username), Some(password)) => Some(SmtpCredentials {
            username,
            password: SecretString::from(password),
        }),
        _ => {
            return Err(invalid(
                "KINKO_SMTP_USERNAME",
                "KINKO_SMTP_USERNAME and KINKO_SMTP_PASSWORD go together",
            ));
        }
    };
    let from = required("KINKO_SMTP_FROM")?
        .trim()
        .parse::<lettre::message::Mailbox>()
        .map_err(|_| invalid("KINKO_SMTP_FROM", "must be an e-mail address"))?;
    Ok(SmtpConfig {
        host,
        port,
        credentials,
        from,
        tls,
    })
}

// ---------------------------------------------------------------------------------------------
// SMTP

/// Sends e-mail through an SMTP server (blocking; run the worker on its own thread).
pub struct SmtpGateway {
    transport: lettre::SmtpTransport,
    from: lettre::message::Mailbox,
}

impl SmtpGateway {
    /// Prepares the transport; connects nowhere until the first message.
    pub fn new(config: &SmtpConfig) -> Result<Self, NotifyConfigError> {
        use lettre::transport::smtp::client::{Tls, TlsParameters};
        let tls_parameters = || {
            TlsParameters::new(config.host.clone()).map_err(|_| NotifyConfigError::SettingInvalid {
                name: "KINKO_SMTP_HOST",
                reason: "not usable as a TLS server name".to_owned(),
            })
        };
        let tls = match config.tls {
            SmtpTls::Starttls => Tls::Required(tls_parameters()?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters()?),
            SmtpTls::None => Tls::None,
        };
        let mut builder = lettre::SmtpTransport::builder_dangerous(config.host.as_str())
            .port(config.port)
            .tls(tls)
            .timeout(Some(Duration::from_millis(SMTP_TIMEOUT_MS)));
        if let Some(credentials) = &config.credentials {
            builder =
                builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                    credentials.username.clone(),
                    credentials.password.expose_secret().to_owned(),
                ));
        }
        Ok(Self {
            transport: builder.build(),
            from: config.from.clone(),
        })
    }
}

impl EmailGateway for SmtpGateway {
    fn send(&self, message: &OutboxMessage) -> Result<(), GatewayError> {
        use lettre::Transport;
        let to = message
            .destination
            .parse::<lettre::message::Mailbox>()
            .map_err(|_| GatewayError::Rejected)?;
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.as_str())
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(message.body.clone())
            .map_err(|_| GatewayError::Rejected)?;
        match self.transport.send(&email) {
            Ok(_) => Ok(()),
            Err(error) if error.is_permanent() => Err(GatewayError::Rejected),
            Err(_) => Err(GatewayError::Unavailable),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Test support shared by this crate's store tests.

#[cfg(test)]
pub(crate) mod testing {
    use kinko_ledger::StoreError;
    use kinko_store::sql::{Database, Tx, Value};

    /// A fresh database on `backend` ("sqlite" or "postgres"); keep the directory alive.
    pub fn database(backend: &str) -> (Database, kinko_store::testing::Scratch) {
        kinko_store::testing::database(backend)
    }

    /// A minimal `identity_users` row (the service creates real ones); returns its id.
    pub fn insert_user(database: &Database, now_ms: i64) -> u128 {
        let id = uuid::Uuid::now_v7().as_u128();
        database
            .transaction(|tx: &mut dyn Tx| {
                tx.execute(
                    "INSERT INTO identity_users (id, email, phone, password_hash, status, created_at)
                     VALUES ($1, $2, $3, 'x', 'pending', $4)",
                    &[
                        Value::Uuid(id),
                        format!("{id:x}@example.com").into(),
                        format!("+81{}", id % 10_000_000_000).into(),
                        Value::Int(now_ms),
                    ],
                )
            })
            .unwrap_or_else(|error: StoreError| panic!("{error}"));
        id
    }

    /// Runs each named test function on both stores.
    macro_rules! both {
        ($($name:ident),+ $(,)?) => {
            mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
            mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
        };
    }
    pub(crate) use both;
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::testing::{both, database};
    use super::*;

    both!(
        a_rolled_back_transaction_leaves_no_message,
        sandbox_delivery_marks_sent_and_keeps_the_message,
        a_failing_gateway_is_retried_at_most_five_times,
        a_refused_message_is_not_retried,
        a_message_is_delivered_once_by_racing_workers,
        a_delivered_message_keeps_no_code,
    );

    /// Before: every body, one-time codes included, stayed in `notify_outbox` forever.
    fn a_delivered_message_keeps_no_code(backend: &str) {
        static CALLS_SQLITE: AtomicUsize = AtomicUsize::new(0);
        static CALLS_POSTGRES: AtomicUsize = AtomicUsize::new(0);
        let calls = if backend == "sqlite" {
            &CALLS_SQLITE
        } else {
            &CALLS_POSTGRES
        };
        let (database, _dir) = database(backend);
        enqueue_committed(&database, T0_MS, &message("a@example.com", "code 12345678"));
        enqueue_committed(&database, T0_MS, &message("b@example.com", "code 87654321"));
        let delivered = deliver(&database, T0_MS + 10, &gateways(calls, Ok(())));
        assert_eq!(delivered.sent, 2);
        for destination in ["a@example.com", "b@example.com"] {
            let kept = outbox(&database, destination);
            assert_eq!(kept.len(), 1);
            assert_eq!(kept[0].sent_at_ms, Some(T0_MS + 10));
            assert_eq!(kept[0].body, "", "the code left with the message");
        }
        // A message refused for good is not kept either.
        enqueue_committed(&database, T0_MS, &message("c@example.com", "code 11223344"));
        let refused = deliver(
            &database,
            T0_MS + 20,
            &gateways(calls, Err(GatewayError::Rejected)),
        );
        assert_eq!(refused.abandoned, 1);
        assert_eq!(outbox(&database, "c@example.com")[0].body, "");
    }

    const T0_MS: i64 = 1_750_000_000_000;

    fn message(destination: &str, body: &str) -> Message {
        Message {
            channel: Channel::Email,
            destination: destination.to_owned(),
            purpose: "verify_email".to_owned(),
            subject: "Kinko".to_owned(),
            body: body.to_owned(),
        }
    }

    fn enqueue_committed(database: &Database, now_ms: i64, message: &Message) -> MessageId {
        database
            .transaction(|tx: &mut dyn Tx| enqueue(tx, now_ms, message))
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn outbox(database: &Database, destination: &str) -> Vec<OutboxMessage> {
        read_outbox(database, destination, 10).unwrap_or_else(|error| panic!("{error}"))
    }

    fn a_rolled_back_transaction_leaves_no_message(backend: &str) {
        let (database, _dir) = database(backend);
        let outcome: Result<(), NotifyError> = database.transaction(|tx: &mut dyn Tx| {
            enqueue(tx, T0_MS, &message("a@example.com", "code 1"))?;
            // The change the message announces fails after the message was written.
            Err(NotifyError::Store(StoreError::new("the change failed")))
        });
        assert!(outcome.is_err());
        assert!(outbox(&database, "a@example.com").is_empty());

        enqueue_committed(&database, T0_MS, &message("a@example.com", "code 2"));
        let kept = outbox(&database, "a@example.com");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].body, "code 2");
    }

    struct Counting {
        calls: &'static AtomicUsize,
        outcome: Result<(), GatewayError>,
    }

    impl EmailGateway for Counting {
        fn send(&self, _: &OutboxMessage) -> Result<(), GatewayError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.outcome
        }
    }

    fn gateways(calls: &'static AtomicUsize, outcome: Result<(), GatewayError>) -> Gateways {
        Gateways {
            email: Box::new(Counting { calls, outcome }),
            sms: Box::new(SandboxGateway),
        }
    }

    fn deliver(database: &Database, now_ms: i64, gateways: &Gateways) -> DeliveryReport {
        deliver_pending(database, now_ms, gateways, 10).unwrap_or_else(|error| panic!("{error}"))
    }

    fn sandbox_delivery_marks_sent_and_keeps_the_message(backend: &str) {
        let (database, _dir) = database(backend);
        let sandbox = Gateways::from_config(&GatewayConfig::Sandbox)
            .unwrap_or_else(|error| panic!("{error}"));
        enqueue_committed(&database, T0_MS, &message("a@example.com", "first"));
        enqueue_committed(&database, T0_MS + 1, &message("a@example.com", "second"));
        let sms = Message {
            channel: Channel::Sms,
            subject: String::new(),
            ..message("+819012345678", "sms")
        };
        enqueue_committed(&database, T0_MS + 2, &sms);
        let report = deliver(&database, T0_MS + 10, &sandbox);
        assert_eq!(
            report,
            DeliveryReport {
                sent: 3,
                failed: 0,
                abandoned: 0
            }
        );
        let kept = outbox(&database, "a@example.com");
        assert_eq!(
            kept.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["second", "first"],
            "newest first"
        );
        assert!(
            kept.iter()
                .all(|m| m.sent_at_ms == Some(T0_MS + 10) && m.attempts == 1)
        );
        // Nothing left to send.
        assert_eq!(
            deliver(&database, T0_MS + 20, &sandbox),
            DeliveryReport::default()
        );
        let debug = format!("{:?}", kept[0]);
        assert!(
            !debug.contains("a@example.com") && !debug.contains("second"),
            "{debug}"
        );
    }

    fn a_failing_gateway_is_retried_at_most_five_times(backend: &str) {
        static CALLS_SQLITE: AtomicUsize = AtomicUsize::new(0);
        static CALLS_POSTGRES: AtomicUsize = AtomicUsize::new(0);
        let calls = if backend == "sqlite" {
            &CALLS_SQLITE
        } else {
            &CALLS_POSTGRES
        };
        let (database, _dir) = database(backend);
        let failing = gateways(calls, Err(GatewayError::Unavailable));
        enqueue_committed(&database, T0_MS, &message("a@example.com", "code"));

        let mut now_ms = T0_MS;
        assert_eq!(deliver(&database, now_ms, &failing).failed, 1);
        // Within the back-off nothing is tried.
        assert_eq!(
            deliver(&database, now_ms + RETRY_DELAY_MS - 1, &failing),
            DeliveryReport::default()
        );
        for _ in 2..DELIVERY_ATTEMPTS_MAX {
            now_ms += 3_600_000;
            assert_eq!(deliver(&database, now_ms, &failing).failed, 1);
        }
        now_ms += 3_600_000;
        assert_eq!(deliver(&database, now_ms, &failing).abandoned, 1);
        // Given up: a day later nothing is tried any more.
        assert_eq!(
            deliver(&database, now_ms + 86_400_000, &failing),
            DeliveryReport::default()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        let kept = outbox(&database, "a@example.com");
        assert_eq!((kept[0].attempts, kept[0].sent_at_ms), (5, None));
    }

    fn a_refused_message_is_not_retried(backend: &str) {
        static CALLS_SQLITE: AtomicUsize = AtomicUsize::new(0);
        static CALLS_POSTGRES: AtomicUsize = AtomicUsize::new(0);
        let calls = if backend == "sqlite" {
            &CALLS_SQLITE
        } else {
            &CALLS_POSTGRES
        };
        let (database, _dir) = database(backend);
        let refusing = gateways(calls, Err(GatewayError::Rejected));
        enqueue_committed(&database, T0_MS, &message("a@example.com", "code"));
        assert_eq!(deliver(&database, T0_MS, &refusing).abandoned, 1);
        assert_eq!(
            deliver(&database, T0_MS + 86_400_000, &refusing),
            DeliveryReport::default()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    fn a_message_is_delivered_once_by_racing_workers(backend: &str) {
        static CALLS_SQLITE: AtomicUsize = AtomicUsize::new(0);
        static CALLS_POSTGRES: AtomicUsize = AtomicUsize::new(0);
        let calls = if backend == "sqlite" {
            &CALLS_SQLITE
        } else {
            &CALLS_POSTGRES
        };
        let (database, _dir) = database(backend);
        for index in 0..20 {
            enqueue_committed(&database, T0_MS + index, &message("a@example.com", "code"));
        }
        let working = gateways(calls, Ok(()));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                // Batches of 3, so the workers overlap on the 20 messages.
                scope.spawn(|| {
                    while deliver_pending(&database, T0_MS + 100, &working, 3)
                        .unwrap_or_else(|error| panic!("{error}"))
                        .sent
                        > 0
                    {}
                });
            }
        });
        // Whatever a worker skipped while another held it is picked up now.
        deliver(&database, T0_MS + 100, &working);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            20,
            "each message sent exactly once"
        );
        assert!(
            outbox(&database, "a@example.com")
                .iter()
                .all(|m| m.sent_at_ms.is_some())
        );
    }

    #[test]
    fn oversized_or_empty_messages_are_refused() {
        let (database, _dir) = database("sqlite");
        for bad in [
            message("", "body"),
            message("a@example.com", ""),
            message("a@example.com", &"x".repeat(BODY_CHARS_MAX + 1)),
            message(&"a".repeat(DESTINATION_BYTES_MAX + 1), "body"),
        ] {
            let outcome = database.transaction(|tx: &mut dyn Tx| enqueue(tx, T0_MS, &bad));
            assert_eq!(outcome, Err(NotifyError::MessageInvalid));
        }
    }

    #[test]
    fn production_never_runs_the_sandbox() {
        use Environment::{Production, Sandbox as NonProduction};
        let table: [(
            Environment,
            Option<&str>,
            Result<NotifyMode, NotifyConfigError>,
        ); 9] = [
            (Production, Some("smtp"), Ok(NotifyMode::Smtp)),
            (Production, Some(" SMTP "), Ok(NotifyMode::Smtp)),
            (
                Production,
                Some("sandbox"),
                Err(NotifyConfigError::SandboxInProduction),
            ),
            (
                Production,
                Some("Sandbox"),
                Err(NotifyConfigError::SandboxInProduction),
            ),
            (Production, None, Err(NotifyConfigError::NotConfigured)),
            (Production, Some(""), Err(NotifyConfigError::NotConfigured)),
            (NonProduction, Some("sandbox"), Ok(NotifyMode::Sandbox)),
            (NonProduction, None, Ok(NotifyMode::Sandbox)),
            (
                NonProduction,
                Some("pigeon"),
                Err(NotifyConfigError::UnknownMode("pigeon".into())),
            ),
        ];
        for (environment, notify, expected) in table {
            assert_eq!(
                choose_mode(environment, notify),
                expected,
                "{environment:?} {notify:?}"
            );
        }
        assert_eq!(
            NotifyConfigError::SandboxInProduction.code(),
            "NOTIFY_SANDBOX_IN_PRODUCTION"
        );
    }

    fn config(variables: &[(&'static str, &str)]) -> Result<GatewayConfig, NotifyConfigError> {
        let map: HashMap<&'static str, String> = variables
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        // The tables name KINKO_ENV where it matters; elsewhere they mean a sandbox.
        let environment =
            crate::environment::parse(Some(map.get("KINKO_ENV").map_or("sandbox", String::as_str)))
                .unwrap_or_else(|error| panic!("{error}"));
        GatewayConfig::from_lookup(environment, |name| Ok(map.get(name).cloned()))
    }

    #[test]
    fn smtp_settings_are_parsed_without_connecting() {
        let parsed = config(&[
            ("KINKO_ENV", "production"),
            ("KINKO_NOTIFY", "smtp"),
            ("KINKO_SMTP_HOST", "smtp.example.com"),
            ("KINKO_SMTP_USERNAME", "kinko"),
            ("KINKO_SMTP_PASSWORD", "hunter2-hunter2"),
            ("KINKO_SMTP_FROM", "Kinko <no-reply@example.com>"),
        ])
        .unwrap_or_else(|error| panic!("{error}"));
        let GatewayConfig::Smtp(smtp) = &parsed else {
            panic!("expected SMTP, got {parsed:?}");
        };
        assert_eq!(
            (smtp.host.as_str(), smtp.port, smtp.tls),
            ("smtp.example.com", 587, SmtpTls::Starttls)
        );
        assert_eq!(smtp.from.email.to_string(), "no-reply@example.com");
        assert_eq!(
            smtp.credentials
                .as_ref()
                .map(|c| (c.username.as_str(), c.password.expose_secret())),
            Some(("kinko", "hunter2-hunter2"))
        );
        assert!(
            !format!("{parsed:?}").contains("hunter2"),
            "the password never shows"
        );
        // Building the gateway prepares TLS but opens no connection.
        let gateways = Gateways::from_config(&parsed).unwrap_or_else(|error| panic!("{error}"));
        let sms = OutboxMessage {
            id: MessageId::from_u128(1).unwrap_or_else(|error| panic!("{error}")),
            channel: Channel::Sms,
            destination: "+819012345678".into(),
            purpose: "verify_phone".into(),
            subject: String::new(),
            body: "code".into(),
            created_at_ms: T0_MS,
            sent_at_ms: None,
            attempts: 1,
        };
        assert_eq!(gateways.sms.send(&sms), Err(GatewayError::NotConfigured));

        let implicit_tls = config(&[
            ("KINKO_NOTIFY", "smtp"),
            ("KINKO_SMTP_HOST", "smtp.example.com"),
            ("KINKO_SMTP_TLS", "tls"),
            ("KINKO_SMTP_FROM", "no-reply@example.com"),
        ]);
        assert!(matches!(
            implicit_tls,
            Ok(GatewayConfig::Smtp(SmtpConfig {
                port: 465,
                tls: SmtpTls::Tls,
                credentials: None,
                ..
            }))
        ));
        let local_relay = config(&[
            ("KINKO_NOTIFY", "smtp"),
            ("KINKO_SMTP_HOST", "localhost"),
            ("KINKO_SMTP_TLS", "none"),
            ("KINKO_SMTP_PORT", "2525"),
            ("KINKO_SMTP_FROM", "no-reply@example.com"),
        ]);
        assert!(matches!(
            local_relay,
            Ok(GatewayConfig::Smtp(SmtpConfig {
                port: 2525,
                tls: SmtpTls::None,
                ..
            }))
        ));
    }

    #[test]
    fn bad_smtp_settings_are_refused() {
        let base = [
            ("KINKO_NOTIFY", "smtp"),
            ("KINKO_SMTP_HOST", "smtp.example.com"),
            ("KINKO_SMTP_FROM", "no-reply@example.com"),
        ];
        let with = |extra: &[(&'static str, &'static str)], without: &str| {
            let mut variables: Vec<(&'static str, &str)> = base
                .iter()
                .copied()
                .filter(|(name, _)| *name != without)
                .collect();
            variables.extend_from_slice(extra);
            config(&variables).map(|_| ()).map_err(|error| error.code())
        };
        assert_eq!(with(&[], ""), Ok(()));
        assert_eq!(
            with(&[], "KINKO_SMTP_HOST"),
            Err("NOTIFY_SMTP_SETTING_MISSING")
        );
        assert_eq!(
            with(&[], "KINKO_SMTP_FROM"),
            Err("NOTIFY_SMTP_SETTING_MISSING")
        );
        assert_eq!(
            with(&[("KINKO_SMTP_FROM", "not an address")], "KINKO_SMTP_FROM"),
            Err("NOTIFY_SMTP_SETTING_INVALID")
        );
        assert_eq!(
            with(&[("KINKO_SMTP_PORT", "0")], ""),
            Err("NOTIFY_SMTP_SETTING_INVALID")
        );
        assert_eq!(
            with(&[("KINKO_SMTP_PORT", "70000")], ""),
            Err("NOTIFY_SMTP_SETTING_INVALID")
        );
        assert_eq!(
            with(&[("KINKO_SMTP_TLS", "maybe")], ""),
            Err("NOTIFY_SMTP_SETTING_INVALID")
        );
        assert_eq!(
            with(&[("KINKO_SMTP_USERNAME", "kinko")], ""),
            Err("NOTIFY_SMTP_SETTING_INVALID")
        );
        assert_eq!(
            with(
                &[("KINKO_ENV", "production"), ("KINKO_SMTP_TLS", "none")],
                ""
            ),
            Err("NOTIFY_SMTP_PLAINTEXT_IN_PRODUCTION")
        );
        assert_eq!(
            with(
                &[("KINKO_ENV", "production"), ("KINKO_NOTIFY", "sandbox")],
                "KINKO_NOTIFY"
            ),
            Err("NOTIFY_SANDBOX_IN_PRODUCTION")
        );
    }
}
