//! Test support for every crate's store tests: a fresh store per test on either backend.
//! SQLite gets a temporary directory; PostgreSQL gets a new database on the server named by
//! `KINKO_TEST_DATABASE_URL` (`scripts/test` starts one). Either lives as long as the returned
//! [`Scratch`]: a test's PostgreSQL database is dropped with it, so a developer's long-lived
//! cluster does not fill the disk. A missing variable fails the test loudly: a suite that skips
//! a store silently proves nothing.

use std::sync::Arc;

use kinko_core::{Clock, ManualClock};
use kinko_ledger::{Ledger, WriterConfig};

use crate::StoreLocation;
use crate::sql::Database;

/// What a test's store lives in: its SQLite directory, or its PostgreSQL database, removed
/// when this is dropped (keep it alive as long as anything uses the store).
pub struct Scratch {
    dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl Scratch {
    /// The SQLite data directory (`None` on PostgreSQL).
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some((admin, url)) = self.postgres.take()
            && let Err(error) = crate::postgres::testing::drop_database(&admin, &url)
        {
            // Not a test failure: the throwaway cluster of scripts/test goes anyway.
            eprintln!("could not drop the test database {url}: {error}");
        }
    }
}

/// A fresh, empty store location on `backend` (`"sqlite"` or `"postgres"`).
pub fn location(backend: &str) -> (StoreLocation, Scratch) {
    match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
            (
                StoreLocation::Sqlite {
                    data_dir: dir.path().to_path_buf(),
                },
                Scratch {
                    dir: Some(dir),
                    postgres: None,
                },
            )
        }
        _ => {
            let admin = std::env::var("KINKO_TEST_DATABASE_URL").unwrap_or_else(|_| {
                panic!("KINKO_TEST_DATABASE_URL is not set: run the suite with scripts/test")
            });
            let url = crate::postgres::testing::fresh_database(&admin)
                .unwrap_or_else(|error| panic!("{error}"));
            (
                StoreLocation::Postgres { url: url.clone() },
                Scratch {
                    dir: None,
                    postgres: Some((admin, url)),
                },
            )
        }
    }
}

/// A fresh database on `backend`, migrated.
pub fn database(backend: &str) -> (Database, Scratch) {
    let (location, scratch) = location(backend);
    let database = Database::open(&location).unwrap_or_else(|error| panic!("{error}"));
    (database, scratch)
}

/// A ledger on `location` whose time is `clock` (a test moves it by hand).
pub fn start_ledger(location: &StoreLocation, clock: &ManualClock, config: WriterConfig) -> Ledger {
    let (store, reader) =
        crate::open_ledger(location).unwrap_or_else(|error| panic!("open: {error}"));
    let clock: Arc<dyn Clock> = Arc::new(clock.clone());
    Ledger::start(store, reader, clock, config).unwrap_or_else(|error| panic!("{error}"))
}
