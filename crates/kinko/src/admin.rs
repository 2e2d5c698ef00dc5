//! `kinko admin`: administration from the machine itself, for what cannot be done through the
//! console before anyone can sign in to it — creating the first operator.

use std::io::{BufRead, Read};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kinko_core::{Clock, SystemClock};
use kinko_identity::operator::{self, CreatedBy, NewOperator, Role};
use kinko_identity::password::{check_new_password, hash_password};
use kinko_identity::secrets::SecretBox;
use kinko_store::sql::{Database, Tx};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::StoreArgs;

/// The audit reason written for operators created here.
pub const CLI_REASON: &str = "bootstrap via CLI";
/// A password line longer than this is not a password (and is not read into memory whole).
const PASSWORD_LINE_BYTES_MAX: u64 = 4_096;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create an operator. Reads the password from standard input (one line) and prints the
    /// TOTP secret once, for the operator's authenticator app.
    CreateOperator(CreateOperatorArgs),
}

#[derive(Args)]
pub struct CreateOperatorArgs {
    /// The operator's e-mail address (their sign-in name).
    #[arg(long)]
    email: String,
    /// admin, analyst, support or bank_partner.
    #[arg(long, value_parser = ["admin", "analyst", "support", "bank_partner"])]
    role: String,
    /// The 4-digit bank code; required for bank_partner, refused otherwise.
    #[arg(long, value_name = "CODE")]
    bank_code: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(command: AdminCommand) -> anyhow::Result<ExitCode> {
    match command {
        AdminCommand::CreateOperator(args) => create_operator(&args),
    }
}

/// One line from standard input, without its line ending; bounded in length.
fn read_password() -> anyhow::Result<SecretString> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .take(PASSWORD_LINE_BYTES_MAX)
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("no password on standard input: pipe or type one line");
    }
    Ok(SecretString::from(password.to_owned()))
}

fn create_operator(args: &CreateOperatorArgs) -> anyhow::Result<ExitCode> {
    let role = Role::parse(&args.role, args.bank_code.as_deref())?;
    let email = operator::normalize_email(&args.email)?;
    let password = read_password()?;
    check_new_password(&password, &email).context("the password was refused")?;
    let location = args.store.location()?;
    let secret_box = SecretBox::from_environment(&location)?;
    let password_hash = hash_password(&password)?;
    let database =
        Database::open(&location).with_context(|| format!("opening {}", location.describe()))?;
    let now_ms = i64::try_from(SystemClock.now_ms()).context("the clock is past year 292M")?;
    let created = database.transaction(|tx: &mut dyn Tx| {
        operator::create_operator(
            tx,
            now_ms,
            CreatedBy::Cli,
            CLI_REASON,
            &NewOperator {
                email: &email,
                password_hash: password_hash.clone(),
                role: role.clone(),
            },
            &secret_box,
        )
    })?;
    println!("operator {} created: role {}", created.id, role.as_str());
    println!("Add this to the operator's authenticator app now; it is not shown again:");
    println!("  {}", created.enrolment.otpauth_url().expose_secret());
    println!(
        "  secret (base32): {}",
        created.enrolment.secret_base32().expose_secret()
    );
    Ok(ExitCode::SUCCESS)
}
