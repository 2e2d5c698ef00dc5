//! What the drill attacks: a running Kinko and its sandbox bank, either given (`--target`,
//! `--bank`, `--demo-log`) or a fresh `kinko demo` the drill starts as a child and stops at
//! the end. The demo's printed output names the operators, the merchant's code and the ready
//! wallet; the sandbox bank's deterministic customers are the leaked list.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use kinko_bank_sandbox::store::DemoCustomer;

use super::DrillArgs;
use super::client::{Actor, Wallet};

/// How long the drill waits for its own demo to be ready (the walkthrough included).
const DEMO_READY_TIMEOUT: Duration = Duration::from_secs(180);

pub struct Target {
    /// `host:port` of Kinko.
    pub kinko: String,
    /// `host:port` of the sandbox bank.
    pub bank: String,
    pub proxy_trusted: bool,
    pub admin_email: String,
    pub admin_totp_seed: String,
    pub merchant_qr: String,
    pub ready_email: String,
    pub ready_totp_seed: String,
    pub ready_handle: String,
    /// The sandbox bank's customers: index 0 is the demo's ready wallet, 1 the drill's honest
    /// user, 4 the mule who lends an identity, 2, 3 and 5 the leaked list's victims.
    pub customers: Vec<DemoCustomer>,
    /// The mule D5 makes, which later attacks use.
    pub mule: Mutex<Option<Mule>>,
    child: Option<Child>,
    _scratch: Option<tempfile::TempDir>,
}

/// The attacker's accomplice: a wallet in the mule's real name, linked to the mule's account.
pub struct Mule {
    pub wallet: Wallet,
    pub link_id: String,
    /// `bank-branch-number` of the mule's account.
    pub account_key: String,
    /// The bank's redirect that completed the link (state, code, iss), for the replay in D10.
    pub callback: (String, String, String),
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            drop(child.kill());
            drop(child.wait());
        }
    }
}

/// The customers whose records leaked (the victims).
pub const VICTIMS: [usize; 3] = [2, 3, 5];
/// The honest user the drill signs up.
pub const HONEST: usize = 1;
/// The mule whose real identity and own account the attacker uses.
pub const MULE: usize = 4;

impl Target {
    pub fn open(args: &DrillArgs) -> anyhow::Result<Self> {
        let customers = kinko_bank_sandbox::store::demo_customers();
        anyhow::ensure!(customers.len() > 5, "the sandbox has too few customers");
        match &args.target {
            Some(url) => {
                let log_path = args.demo_log.as_ref().context("--demo-log is required")?;
                let log = std::fs::read_to_string(log_path)
                    .with_context(|| format!("reading {}", log_path.display()))?;
                let lines: Vec<String> = log.lines().map(str::to_owned).collect();
                let bank = args.bank.as_deref().context("--bank is required")?;
                Self::from_lines(
                    &lines,
                    host_port(url),
                    host_port(bank),
                    args.proxy_trusted,
                    customers,
                    None,
                    None,
                )
            }
            None => Self::start_demo(args, customers),
        }
    }

    fn start_demo(args: &DrillArgs, customers: Vec<DemoCustomer>) -> anyhow::Result<Self> {
        let scratch = tempfile::tempdir().context("a temporary directory")?;
        let stderr = std::fs::File::create(scratch.path().join("demo.log"))?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["demo", "--port", "0", "--bank-data-dir"])
            .arg(scratch.path().join("bank"))
            // The drill is the demo's only proxy: its X-Forwarded-For names each actor's source.
            .env("KINKO_TRUSTED_PROXIES", "127.0.0.1")
            .env("KINKO_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        match &args.database_url {
            Some(url) => command.args(["--database-url", url]),
            None => command.arg("--data-dir").arg(scratch.path().join("data")),
        };
        let mut child = command.spawn().context("starting `kinko demo`")?;
        let stdout = child.stdout.take().context("no stdout from the demo")?;
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = std::time::Instant::now() + DEMO_READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match receiver.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains("Press Ctrl-C");
                    lines.push(line);
                    if done {
                        break;
                    }
                }
                Err(_) => {
                    drop(child.kill());
                    drop(child.wait());
                    let log = std::fs::read_to_string(scratch.path().join("demo.log"))
                        .unwrap_or_default();
                    bail!(
                        "the demo was not ready:\n{}\n{}",
                        lines.join("\n"),
                        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
                    );
                }
            }
        }
        let kinko = host_port(after(&lines, "pages:")?);
        let bank = host_port(after(
            &lines,
            "hosts all 35, another site than the pages): ",
        )?);
        Self::from_lines(
            &lines,
            kinko,
            bank,
            true,
            customers,
            Some(child),
            Some(scratch),
        )
    }

    fn from_lines(
        lines: &[String],
        kinko: String,
        bank: String,
        proxy_trusted: bool,
        customers: Vec<DemoCustomer>,
        child: Option<Child>,
        scratch: Option<tempfile::TempDir>,
    ) -> anyhow::Result<Self> {
        let admin_line = lines
            .iter()
            .find(|line| line.trim_start().starts_with("admin ") && line.contains("TOTP"))
            .ok_or_else(|| anyhow!("no admin in the demo's output"))?;
        let admin_email = first_word(admin_line.trim_start().trim_start_matches("admin"))?;
        let admin_totp_seed = first_word(
            admin_line
                .split_once("TOTP ")
                .map(|(_, rest)| rest)
                .unwrap_or_default(),
        )?;
        let merchant_qr = lines
            .iter()
            .find(|line| line.contains("its static QR code"))
            .and_then(|line| line.split_once("): "))
            .map(|(_, code)| code.trim().to_owned())
            .ok_or_else(|| anyhow!("no merchant code in the demo's output"))?;
        Ok(Self {
            kinko,
            bank,
            proxy_trusted,
            admin_email,
            admin_totp_seed,
            merchant_qr,
            ready_email: after(lines, "e-mail ")?.to_owned(),
            ready_totp_seed: lines
                .iter()
                .find_map(|line| line.trim_start().strip_prefix("TOTP seed "))
                .map(str::trim)
                .ok_or_else(|| anyhow!("no ready wallet's TOTP seed in the demo's output"))?
                .to_owned(),
            ready_handle: after(lines, "handle @")?.to_owned(),
            customers,
            mule: Mutex::new(None),
            child,
            _scratch: scratch,
        })
    }

    pub fn kinko_url(&self) -> String {
        format!("http://{}", self.kinko)
    }

    pub fn bank_url(&self) -> String {
        format!("http://{}", self.bank)
    }

    /// An actor on Kinko from `source` (a documentation address, RFC 5737), or from the
    /// drill's own address when the target does not trust it as a proxy.
    pub fn actor(&self, source: &str) -> Actor {
        Actor::new(&self.kinko, self.proxy_trusted.then(|| source.to_owned()))
    }

    pub fn victims(&self) -> impl Iterator<Item = &DemoCustomer> {
        VICTIMS
            .iter()
            .filter_map(|index| self.customers.get(*index))
    }

    /// The victims' accounts, keyed as the bank's balance sheet keys them.
    pub fn victim_accounts(&self) -> Vec<String> {
        self.victims()
            .flat_map(|customer| customer.accounts.iter())
            .map(|account| {
                format!(
                    "{}-{}-{}",
                    account.bank_code, account.branch, account.number
                )
            })
            .collect()
    }

    pub fn customer(&self, index: usize) -> anyhow::Result<&DemoCustomer> {
        self.customers
            .get(index)
            .ok_or_else(|| anyhow!("no sandbox customer {index}"))
    }
}

fn first_word(text: &str) -> anyhow::Result<String> {
    text.split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("an empty field in the demo's output"))
}

/// The word after `label` on the first line of the demo's output that has it.
fn after<'a>(lines: &'a [String], label: &str) -> anyhow::Result<&'a str> {
    lines
        .iter()
        .find_map(|line| line.split_once(label).map(|(_, rest)| rest))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| anyhow!("no {label:?} in the demo's output"))
}

/// `host:port` of `http://host:port/...`.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest).to_owned()
}
