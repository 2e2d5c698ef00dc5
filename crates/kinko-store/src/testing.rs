//! Test support for every crate's store tests: a fresh store per test on either backend.
//! SQLite gets a temporary directory (keep the returned `TempDir` alive); PostgreSQL gets a new
//! database on the server named by `KINKO_TEST_DATABASE_URL` (`scripts/test` starts one). A
//! missing variable fails the test loudly: a suite that skips a store silently proves nothing.

use crate::StoreLocation;
use crate::sql::Database;

/// A fresh, empty store location on `backend` (`"sqlite"` or `"postgres"`).
pub fn location(backend: &str) -> (StoreLocation, Option<tempfile::TempDir>) {
    match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
            (
                StoreLocation::Sqlite {
                    data_dir: dir.path().to_path_buf(),
                },
                Some(dir),
            )
        }
        _ => {
            let admin = std::env::var("KINKO_TEST_DATABASE_URL").unwrap_or_else(|_| {
                panic!("KINKO_TEST_DATABASE_URL is not set: run the suite with scripts/test")
            });
            let url = crate::postgres::testing::fresh_database(&admin)
                .unwrap_or_else(|error| panic!("{error}"));
            (StoreLocation::Postgres { url }, None)
        }
    }
}

/// A fresh database on `backend`, migrated.
pub fn database(backend: &str) -> (Database, Option<tempfile::TempDir>) {
    let (location, dir) = location(backend);
    let database = Database::open(&location).unwrap_or_else(|error| panic!("{error}"));
    (database, dir)
}
