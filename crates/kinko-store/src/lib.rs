//! The SQLite and PostgreSQL implementations of the storage traits the Kinko domains define,
//! and their migrations.
//!
//! The backend is chosen by where the data lives: a data directory means the embedded SQLite
//! store (the default, nothing to install); a `postgres://` URL means PostgreSQL. Anything
//! ambiguous refuses to start rather than guess (and, say, create an empty file).

pub mod migrations;
pub mod postgres;
pub mod sql;
pub mod sqlite;
pub mod testing;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kinko_ledger::{LedgerReader, LedgerStore, StoreError};

/// Where the platform keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite { data_dir: PathBuf },
    Postgres { url: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("give either --data-dir or --database-url, not both")]
    Both,
    #[error(
        "the database URL must start with postgres:// or postgresql:// (for SQLite, use --data-dir)"
    )]
    UnknownScheme,
    #[error("the database URL has no host or database after the scheme")]
    Incomplete,
}

impl StoreLocation {
    pub const DEFAULT_DATA_DIR: &'static str = "kinko-data";
    pub const SQLITE_FILE: &'static str = "kinko.sqlite3";

    /// Chooses the backend from the command line: `--database-url` by its scheme, else the
    /// data directory, else `./kinko-data`.
    pub fn choose(
        data_dir: Option<&Path>,
        database_url: Option<&str>,
    ) -> Result<Self, LocationError> {
        match (data_dir, database_url) {
            (Some(_), Some(_)) => Err(LocationError::Both),
            (None, Some(url)) => Self::from_url(url),
            (Some(dir), None) => Ok(StoreLocation::Sqlite {
                data_dir: dir.to_path_buf(),
            }),
            (None, None) => Ok(StoreLocation::Sqlite {
                data_dir: PathBuf::from(Self::DEFAULT_DATA_DIR),
            }),
        }
    }

    fn from_url(url: &str) -> Result<Self, LocationError> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or(LocationError::UnknownScheme)?;
        if rest.is_empty() || rest.starts_with('/') && rest.len() == 1 {
            return Err(LocationError::Incomplete);
        }
        Ok(StoreLocation::Postgres {
            url: url.to_owned(),
        })
    }

    /// The store's name as benchmarks and logs print it.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreLocation::Sqlite { .. } => "sqlite",
            StoreLocation::Postgres { .. } => "postgres",
        }
    }

    /// A description safe to log: no password.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite { data_dir } => format!("sqlite:{}", data_dir.display()),
            StoreLocation::Postgres { url } => match url.split_once('@') {
                Some((_, host)) => format!("postgres://…@{host}"),
                None => url.clone(),
            },
        }
    }
}

/// Applies pending migrations; safe to call from several processes at once.
pub fn migrate(location: &StoreLocation) -> Result<Vec<&'static str>, StoreError> {
    match location {
        StoreLocation::Sqlite { data_dir } => sqlite::migrate(data_dir),
        StoreLocation::Postgres { url } => postgres::migrate(url),
    }
}

/// The ledger writer's store and the shared reader, over one database.
pub type LedgerStores = (Box<dyn LedgerStore>, Arc<dyn LedgerReader>);

/// Opens the ledger's writer store and reader, migrating first.
pub fn open_ledger(location: &StoreLocation) -> Result<LedgerStores, StoreError> {
    migrate(location)?;
    match location {
        StoreLocation::Sqlite { data_dir } => Ok((
            Box::new(sqlite::SqliteLedgerStore::open(data_dir)?),
            Arc::new(sqlite::SqliteLedgerReader::open(data_dir)?),
        )),
        StoreLocation::Postgres { url } => Ok((
            Box::new(postgres::PostgresLedgerStore::connect(url)?),
            Arc::new(postgres::PostgresLedgerReader::connect(url)?),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_is_chosen_by_scheme_and_ambiguity_refuses() {
        assert_eq!(
            StoreLocation::choose(None, None),
            Ok(StoreLocation::Sqlite {
                data_dir: PathBuf::from("kinko-data")
            })
        );
        assert_eq!(
            StoreLocation::choose(None, Some("postgres://u@h/db")).map(|l| l.kind()),
            Ok("postgres")
        );
        assert_eq!(
            StoreLocation::choose(None, Some("postgresql://h/db")).map(|l| l.kind()),
            Ok("postgres")
        );
        assert_eq!(
            StoreLocation::choose(Some(Path::new("d")), Some("postgres://h/db")),
            Err(LocationError::Both)
        );
        for ambiguous in [
            "kinko.db",
            "sqlite://x",
            "mysql://h/db",
            "postgres:/h",
            "/tmp/x",
        ] {
            assert_eq!(
                StoreLocation::choose(None, Some(ambiguous)),
                Err(LocationError::UnknownScheme),
                "{ambiguous}"
            );
        }
        assert_eq!(
            StoreLocation::choose(None, Some("postgres://")),
            Err(LocationError::Incomplete)
        );
    }

    #[test]
    fn descriptions_hide_passwords() {
        let location = StoreLocation::choose(None, Some("postgres://kinko:secret@db:5432/kinko"))
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(!location.describe().contains("secret"));
    }
}
