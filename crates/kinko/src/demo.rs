//! `kinko demo`: the platform on a seeded store, for a first look. Seeding is idempotent
//! (fixed ids), so running the demo twice shows the same money, not twice as much.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use kinko_core::{Clock, Money, SystemClock};
use kinko_ledger::{
    AccountFlags, AccountId, CreateAccountResult, CreateTransferResult, LEDGER_JPY, Ledger,
    NewAccount, TransferId, TransferRequest, WriterConfig,
};
use secrecy::ExposeSecret;

use crate::StoreArgs;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// TCP port; 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The sandbox bank's port (it hosts every partner bank); default the demo's port + 10,
    /// or a free one when the demo's port is 0.
    #[arg(long)]
    pub bank_port: Option<u16>,
    /// The sandbox bank's own SQLite directory; default `sandbox-bank` inside the SQLite data
    /// directory, or `./kinko-bank-data` with PostgreSQL.
    #[arg(long, value_name = "DIR")]
    pub bank_data_dir: Option<std::path::PathBuf>,
    /// Serve the seeded store only, without making the ready wallet and operators.
    #[arg(long)]
    pub no_walkthrough: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Account codes of the chart of accounts (DESIGN §4) used by the seed.
const CODE_SETTLEMENT: u16 = 10;
const CODE_WALLET: u16 = 20;
const CODE_PAYABLE: u16 = 30;
const CODE_CHARGE: u16 = 1;
const CODE_PAYMENT: u16 = 2;

struct SeedAccount {
    name: &'static str,
    id: u128,
    code: u16,
    flags: AccountFlags,
}

const SEED_ACCOUNTS: [SeedAccount; 4] = [
    SeedAccount {
        name: "みずほ銀行 settlement (0001)",
        id: 0x0192_0000_0000_7000_8000_0000_0000_0001,
        code: CODE_SETTLEMENT,
        flags: AccountFlags::NONE,
    },
    SeedAccount {
        name: "wallet: 山田花子 (hanako)",
        id: 0x0192_0000_0000_7000_8000_0000_0000_0002,
        code: CODE_WALLET,
        flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
    },
    SeedAccount {
        name: "wallet: 佐藤太郎 (taro)",
        id: 0x0192_0000_0000_7000_8000_0000_0000_0003,
        code: CODE_WALLET,
        flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
    },
    SeedAccount {
        name: "merchant payable: 金庫カフェ",
        id: 0x0192_0000_0000_7000_8000_0000_0000_0004,
        code: CODE_PAYABLE,
        flags: AccountFlags::NONE,
    },
];

/// (transfer id, debit index, credit index, yen, code)
const SEED_TRANSFERS: [(u128, usize, usize, u64, u16); 3] = [
    (
        0x0192_0000_0000_7000_9000_0000_0000_0001,
        0,
        1,
        10_000,
        CODE_CHARGE,
    ),
    (
        0x0192_0000_0000_7000_9000_0000_0000_0002,
        0,
        2,
        5_000,
        CODE_CHARGE,
    ),
    (
        0x0192_0000_0000_7000_9000_0000_0000_0003,
        1,
        3,
        1_200,
        CODE_PAYMENT,
    ),
];

fn account_id(raw: u128) -> anyhow::Result<AccountId> {
    Ok(AccountId::from_u128(raw)?)
}

fn seed(ledger: &Ledger) -> anyhow::Result<()> {
    let accounts = SEED_ACCOUNTS
        .iter()
        .map(|seed| {
            Ok(NewAccount {
                id: account_id(seed.id)?,
                ledger: LEDGER_JPY,
                code: seed.code,
                flags: seed.flags,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for result in ledger.create_accounts_blocking(accounts)? {
        if !matches!(
            result,
            CreateAccountResult::Ok | CreateAccountResult::Exists
        ) {
            bail!("seeding an account failed: {result}");
        }
    }
    let transfers = SEED_TRANSFERS
        .iter()
        .map(|(id, debit, credit, amount, code)| {
            Ok(TransferRequest::single_phase(
                TransferId::from_u128(*id)?,
                account_id(SEED_ACCOUNTS[*debit].id)?,
                account_id(SEED_ACCOUNTS[*credit].id)?,
                *amount,
                LEDGER_JPY,
                *code,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for result in ledger.create_transfers_blocking(transfers)? {
        if !matches!(
            result,
            CreateTransferResult::Ok | CreateTransferResult::Exists
        ) {
            bail!("seeding a transfer failed: {result}");
        }
    }
    Ok(())
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let location = args.store.location()?;
    let payout_wait_hours = crate::serve::payout_wait_hours()?;
    let ledger = crate::start_ledger(&location, WriterConfig::DEFAULT)?;
    seed(&ledger).context("seeding the demo")?;

    let ids = SEED_ACCOUNTS
        .iter()
        .map(|seed| account_id(seed.id))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let accounts = ledger.reader().lookup_accounts(&ids)?;
    // A merchant to pay, with a fresh API key each start (shown once, kept only as a hash).
    let (merchant, merchant_key, merchant_code) = {
        let database = kinko_store::sql::Database::open(&location)
            .with_context(|| format!("opening {}", location.describe()))?;
        let now_ms = i64::try_from(SystemClock.now_ms()).unwrap_or(i64::MAX);
        let (merchant, key) = database
            .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
                kinko_money::merchants::seed_demo(tx, now_ms)
            })
            .map_err(|error| anyhow::anyhow!("seeding the demo merchant: {error}"))?;
        kinko_money::accounts::ensure(
            &ledger,
            &[(
                kinko_money::accounts::payable(merchant.id.as_u128())?,
                kinko_money::accounts::code::PAYABLE,
            )],
        )?;
        let code = merchant
            .static_code()
            .map_err(|error| anyhow::anyhow!("the demo merchant's code: {error}"))?;
        (merchant, key, code)
    };
    // The sandbox bank runs alongside, on its own store and port, so linking works out of the
    // box: Kinko registers there at start like it would with a real bank.
    let bank_data_dir = args
        .bank_data_dir
        .clone()
        .unwrap_or_else(|| match &location {
            kinko_store::StoreLocation::Sqlite { data_dir } => data_dir.join("sandbox-bank"),
            kinko_store::StoreLocation::Postgres { .. } => "kinko-bank-data".into(),
        });
    let bank_port = args.bank_port.unwrap_or(match args.port {
        0 => 0,
        port => port.saturating_add(10),
    });
    let bank = crate::bank_sandbox::SandboxBank::open(
        &kinko_store::StoreLocation::Sqlite {
            data_dir: bank_data_dir,
        },
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bank_port),
    )?;
    let bank_issuer = bank.issuer.clone();
    let bank_customers = bank.customers.clone();
    let bank_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the sandbox bank's runtime")?;
    std::thread::Builder::new()
        .name("sandbox-bank".to_owned())
        .spawn(move || {
            if let Err(error) = bank_runtime.block_on(bank.serve(std::future::pending())) {
                tracing::error!(error = %error, "the sandbox bank stopped");
            }
        })
        .context("starting the sandbox bank")?;
    let run_id = run_id();
    let operators = if args.no_walkthrough {
        None
    } else {
        Some(demo_operators(&location, &run_id)?)
    };
    let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.port);
    crate::serve::serve_with_banks(
        ledger,
        &location,
        // The demo is a sandbox by definition: its eKYC, notifier and outbox are the sandbox's.
        kinko_identity::environment::Environment::Sandbox,
        address,
        Some(bank_issuer.clone()),
        crate::serve::Profile::Demo,
        |address| {
            let site = format!("http://localhost:{}", address.port());
            println!("Kinko demo on {}", location.describe());
            println!("  pages:   {site}/  (sign up, or sign in as the ready wallet below)");
            println!("  health:  {site}/healthz");
            println!("  API:     {site}/api/v1/openapi.json");
            println!(
                "  sandbox outbox (codes sent by e-mail/SMS): {site}/api/v1/sandbox/outbox?destination=…"
            );
            println!("Seeded ledger accounts (JPY):");
            for (seed, account) in SEED_ACCOUNTS.iter().zip(&accounts) {
                let balance = i64::try_from(account.credit_balance_posted()).unwrap_or(i64::MAX);
                println!(
                    "  {:<34} {:>10}",
                    seed.name,
                    Money::yen(balance).to_string()
                );
            }
            println!(
                "  partner banks: {site}/api/v1/banks (the 35 of the seed case; legacy PIN method off at all)"
            );
            println!(
                "  the demo's sandbox policy: no freeze after a first second factor, and a new link at the sandbox's banks may be charged at once; a new link waits {payout_wait_hours} h before its first withdrawal (KINKO_PAYOUT_WAIT_H). `kinko serve` keeps the strict defaults."
            );
            println!(
                "Sandbox bank (hosts all 35, another site than the pages): {bank_issuer}  customer page: {bank_issuer}/customer"
            );
            println!(
                "  bank customers: online id, password, TOTP seed (base32, for an authenticator app), and the wallet eKYC reference whose identity matches:"
            );
            for customer in &bank_customers {
                println!(
                    "  {:<10} {:<22} {}  {} {}  {}",
                    customer.online_id,
                    customer.password,
                    customer.totp_secret_base32(),
                    customer.holder_kana,
                    customer.birth_date,
                    customer
                        .kyc_reference()
                        .unwrap_or("(none: the holder-mismatch case)")
                );
            }
            println!(
                "Merchant {} ({}): API key {}",
                merchant.name_ja,
                merchant.name,
                merchant_key.expose_secret()
            );
            println!("  its static QR code (paste it on {site}/wallet/pay): {merchant_code}");
            let Some((admin, bank_partner)) = operators else {
                println!("Press Ctrl-C to stop.");
                return;
            };
            println!(
                "Operators (password {}; TOTP seed for an authenticator app):",
                crate::walkthrough::DEMO_PASSWORD
            );
            println!(
                "  admin         {}  TOTP {}",
                admin.email, admin.secret_base32
            );
            println!(
                "  bank partner  {}  TOTP {}  (みずほ銀行 0001 only)",
                bank_partner.email, bank_partner.secret_base32
            );
            let kinko_address = address.to_string();
            let bank_address = bank_issuer
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned();
            let customer = bank_customers.first().cloned();
            let spawned = std::thread::Builder::new()
                .name("demo-walkthrough".to_owned())
                .spawn(move || {
                    let Some(customer) = customer else { return };
                    match walk(&kinko_address, &bank_address, &admin, &customer, &run_id) {
                        Ok(wallet) => {
                            println!("Ready wallet (signed up, verified, KYC'd, linked, charged):");
                            println!("  sign in at {site}/signin");
                            println!(
                                "  e-mail {}  password {}  phone {}",
                                wallet.email,
                                crate::walkthrough::DEMO_PASSWORD,
                                wallet.phone
                            );
                            println!("  TOTP seed {}", wallet.secret_base32);
                            println!(
                                "  linked {}  balance {}  handle @{}",
                                wallet.account_label,
                                Money::yen(wallet.balance_yen),
                                wallet.handle
                            );
                        }
                        Err(error) => {
                            eprintln!("the demo walkthrough failed: {error:#}");
                        }
                    }
                    println!("Press Ctrl-C to stop.");
                });
            if let Err(error) = spawned {
                eprintln!("the demo walkthrough did not start: {error}");
            }
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The demo's banks whose new links may be charged at once.
const DEMO_BANKS: [&str; 3] = ["0001", "0009", "9900"];

fn walk(
    kinko_address: &str,
    bank_address: &str,
    admin: &crate::walkthrough::Operator,
    customer: &kinko_bank_sandbox::store::DemoCustomer,
    run_id: &str,
) -> anyhow::Result<crate::walkthrough::ReadyWallet> {
    let mut kinko = crate::walkthrough::Site::new(kinko_address);
    let token = crate::walkthrough::admin_token(&mut kinko, admin)?;
    crate::walkthrough::open_demo_banks(&mut kinko, &token, &DEMO_BANKS)?;
    crate::walkthrough::ready_wallet(&mut kinko, bank_address, customer, "0001", run_id)
}

/// A name for this run (seconds since the epoch, base 36): the demo's people are new each run,
/// so the demo starts on a used store too.
fn run_id() -> String {
    let mut seconds = SystemClock.now_ms() / 1_000;
    let mut id = Vec::new();
    while seconds > 0 {
        let digit = u8::try_from(seconds % 36).unwrap_or(0);
        id.push(if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        });
        seconds /= 36;
    }
    id.reverse();
    String::from_utf8(id).unwrap_or_default()
}

/// An admin and the first bank's partner operator, made as `kinko admin create-operator`
/// makes them, with the demo password.
fn demo_operators(
    location: &kinko_store::StoreLocation,
    run_id: &str,
) -> anyhow::Result<(crate::walkthrough::Operator, crate::walkthrough::Operator)> {
    use kinko_identity::operator::{self, CreatedBy, NewOperator, Role};
    let secret_box = kinko_identity::secrets::SecretBox::from_environment(location)?;
    let password_hash = kinko_identity::password::hash_password(&secrecy::SecretString::from(
        crate::walkthrough::DEMO_PASSWORD.to_owned(),
    ))?;
    let database = kinko_store::sql::Database::open(location)
        .with_context(|| format!("opening {}", location.describe()))?;
    let now_ms = i64::try_from(SystemClock.now_ms()).unwrap_or(i64::MAX);
    let mut made = Vec::new();
    for (name, role) in [
        ("admin", Role::Admin),
        ("bank-0001", Role::parse("bank_partner", Some("0001"))?),
    ] {
        let email = format!("{name}-{run_id}@demo.kinko.example");
        let created = database
            .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
                operator::create_operator(
                    tx,
                    now_ms,
                    CreatedBy::Cli,
                    crate::admin::CLI_REASON,
                    &NewOperator {
                        email: &email,
                        password_hash: password_hash.clone(),
                        role: role.clone(),
                    },
                    &secret_box,
                )
            })
            .map_err(|error| anyhow::anyhow!("creating the demo {name}: {error}"))?;
        made.push(crate::walkthrough::Operator {
            email,
            secret_base32: created.enrolment.secret_base32().expose_secret().to_owned(),
        });
    }
    let bank_partner = made.pop().context("no bank partner")?;
    let admin = made.pop().context("no admin")?;
    Ok((admin, bank_partner))
}
