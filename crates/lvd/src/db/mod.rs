//! The one seam between domain logic and PostgreSQL. Components implement
//! [`Db`] over `spin:postgres` (`lvd-component`), the worker and tests over
//! tokio-postgres ([`postgres::PgDb`], the `native` feature), which also
//! offers [`CopyIn`], what Spin's interface lacks. Every SQL statement of
//! the product lives in this crate, written once and run against real
//! PostgreSQL through both adapters.
//!
//! Parameters and values are the few types the app needs.
//!
//! JSON crosses as text both ways: `col::text` in selects, `$n::text::jsonb`
//! in writes, and [`Row::json`] parses it here. Spin 4.0.2's host converts
//! `jsonb` with its own serde_json (1.0.132), which refuses some numbers
//! PostgreSQL stores — `1.7976931348623157e308`, which `jsonb` writes back
//! as a 309-digit integer, failed every read of its row with "number out of
//! range" — and may round others; text reaches the component as PostgreSQL
//! wrote it, parsed by the component's own serde_json.
//!
//! Times are stored as `timestamptz` (an instant, whatever the session's time
//! zone) but never cross the boundary as one: Spin 4.0.2's PostgreSQL host
//! (`factor-outbound-pg/src/types.rs`, still so on its main branch) reads
//! `timestamp` and `timestamptz` columns alike as a naive date-time, which
//! tokio-postgres refuses for `timestamptz`, so every such read fails there.
//! Statements therefore select times through [`utc!`] (`col AT TIME ZONE
//! 'UTC'`, a `timestamp` holding the UTC wall clock), which Spin converts, and
//! [`Row::timestamp`] reads that back as UTC. The other way, times are never
//! passed as parameters (Spin maps a `datetime` parameter to `timestamp`):
//! statements compute them with `now()` or take RFC 3339 text cast with
//! `::timestamptz`. Keeping `timestamptz` columns, rather than `timestamp`
//! ones holding UTC, keeps `now()` and comparisons correct in any session
//! time zone; the cost is this one rule for selects, which the local runtime
//! enforces exactly as Spin does.

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use crate::cause::{Cause, ServerError};

#[cfg(feature = "native")]
pub mod postgres;

/// Selects a `timestamptz` column as the `timestamp` of its UTC wall clock,
/// the form Spin's PostgreSQL host can read (see the module docs):
/// `utc!("created_at")` is `"created_at AT TIME ZONE 'UTC'"`. Rows are read
/// by position, so the expression needs no alias, and having none keeps an
/// `ORDER BY created_at` on the column (and its index) rather than on the
/// expression.
#[macro_export]
macro_rules! utc {
    ($column:literal) => {
        concat!($column, " AT TIME ZONE 'UTC'")
    };
}

/// A statement parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    I32(i32),
    I64(i64),
    F64(f64),
    Text(String),
    Bytes(Vec<u8>),
    Uuid(Uuid),
    Json(serde_json::Value),
}

impl From<&str> for Param {
    fn from(v: &str) -> Self {
        Param::Text(v.to_owned())
    }
}
impl From<String> for Param {
    fn from(v: String) -> Self {
        Param::Text(v)
    }
}
impl From<Uuid> for Param {
    fn from(v: Uuid) -> Self {
        Param::Uuid(v)
    }
}
impl From<i32> for Param {
    fn from(v: i32) -> Self {
        Param::I32(v)
    }
}
impl From<i64> for Param {
    fn from(v: i64) -> Self {
        Param::I64(v)
    }
}
impl From<bool> for Param {
    fn from(v: bool) -> Self {
        Param::Bool(v)
    }
}
impl From<Option<&str>> for Param {
    fn from(v: Option<&str>) -> Self {
        v.map_or(Param::Null, Param::from)
    }
}
impl From<Vec<u8>> for Param {
    fn from(v: Vec<u8>) -> Self {
        Param::Bytes(v)
    }
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    I32(i32),
    I64(i64),
    F64(f64),
    Text(String),
    Bytes(Vec<u8>),
    Uuid(Uuid),
    Json(serde_json::Value),
    /// A `timestamp` column, read as UTC (select `timestamptz` through [`utc!`]).
    Timestamp(DateTime<Utc>),
    /// A type the app does not read; named for error messages.
    Other(String),
}

/// One result row, columns in statement order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

/// A database fault. The cause is for logs, never for clients.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The server could not be reached, or went away: the app answers 503.
    #[error("database unavailable")]
    Unavailable(#[source] Cause),
    /// A unique constraint was violated (SQLSTATE 23505).
    #[error("unique violation")]
    UniqueViolation(#[source] Cause),
    /// The server refused the statement.
    #[error("statement refused")]
    Query(#[source] Cause),
    /// A row did not have the shape the statement promised.
    #[error("unexpected row shape: {0}")]
    Decode(String),
}

impl DbError {
    /// PostgreSQL's own refusal (SQLSTATE and message), when that is the cause.
    pub fn server(&self) -> Option<&ServerError> {
        match self {
            DbError::Unavailable(c) | DbError::UniqueViolation(c) | DbError::Query(c) => c.downcast_ref(),
            DbError::Decode(_) => None,
        }
    }
}

#[allow(async_fn_in_trait)]
pub trait Db {
    async fn query(&self, sql: &str, params: &[Param]) -> Result<Vec<Row>, DbError>;
    async fn execute(&self, sql: &str, params: &[Param]) -> Result<u64, DbError>;
}

/// What a native connection adds to [`Db`], for bulk writes: statements
/// run as one batch on the same session (`BEGIN`, `COMMIT`, session setup),
/// and `COPY ... FROM STDIN`. Spin's PostgreSQL interface has neither, so
/// only the worker writes in bulk.
#[allow(async_fn_in_trait)]
pub trait CopyIn: Db {
    /// Runs statements, without parameters, as one simple-query batch.
    async fn batch(&self, sql: &str) -> Result<(), DbError>;
    /// `COPY ... FROM STDIN`, text format: `chunks` are whole lines of COPY
    /// text, sent in order. Returns the rows copied.
    async fn copy_in(&self, sql: &str, chunks: &[&str]) -> Result<u64, DbError>;
}

/// Runs `work` (statements on `db`) in one transaction: committed when it
/// succeeds, rolled back when it fails, so it leaves all or nothing.
pub async fn transaction<T>(db: &impl CopyIn, work: impl Future<Output = Result<T, DbError>>) -> Result<T, DbError> {
    db.batch("BEGIN").await?;
    match work.await {
        Ok(done) => db.batch("COMMIT").await.map(|()| done),
        Err(e) => {
            let _ = db.batch("ROLLBACK").await;
            Err(e)
        }
    }
}

impl Row {
    fn at(&self, i: usize) -> Result<&Value, DbError> {
        self.0.get(i).ok_or_else(|| DbError::Decode(format!("no column {i}")))
    }

    fn mismatch(&self, i: usize, want: &str) -> DbError {
        DbError::Decode(format!("column {i}: expected {want}, found {:?}", self.0.get(i)))
    }

    pub fn uuid(&self, i: usize) -> Result<Uuid, DbError> {
        match self.at(i)? {
            Value::Uuid(v) => Ok(*v),
            _ => Err(self.mismatch(i, "uuid")),
        }
    }

    pub fn text(&self, i: usize) -> Result<String, DbError> {
        match self.at(i)? {
            Value::Text(v) => Ok(v.clone()),
            _ => Err(self.mismatch(i, "text")),
        }
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    pub fn f64(&self, i: usize) -> Result<f64, DbError> {
        match self.at(i)? {
            Value::F64(v) => Ok(*v),
            _ => Err(self.mismatch(i, "double precision")),
        }
    }

    pub fn opt_f64(&self, i: usize) -> Result<Option<f64>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.f64(i).map(Some),
        }
    }

    pub fn bool(&self, i: usize) -> Result<bool, DbError> {
        match self.at(i)? {
            Value::Bool(v) => Ok(*v),
            _ => Err(self.mismatch(i, "bool")),
        }
    }

    pub fn i64(&self, i: usize) -> Result<i64, DbError> {
        match self.at(i)? {
            Value::I64(v) => Ok(*v),
            Value::I32(v) => Ok(i64::from(*v)),
            _ => Err(self.mismatch(i, "integer")),
        }
    }

    pub fn bytes(&self, i: usize) -> Result<Vec<u8>, DbError> {
        match self.at(i)? {
            Value::Bytes(v) => Ok(v.clone()),
            _ => Err(self.mismatch(i, "bytea")),
        }
    }

    /// A JSON value: a `jsonb` selected as text (see the module docs), or a
    /// `jsonb` the host converted itself.
    pub fn json(&self, i: usize) -> Result<serde_json::Value, DbError> {
        match self.at(i)? {
            Value::Text(t) => serde_json::from_str(t).map_err(|e| DbError::Decode(format!("column {i}: not JSON: {e}"))),
            Value::Json(v) => Ok(v.clone()),
            _ => Err(self.mismatch(i, "jsonb")),
        }
    }

    pub fn opt_json(&self, i: usize) -> Result<Option<serde_json::Value>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.json(i).map(Some),
        }
    }

    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.i64(i).map(Some),
        }
    }

    pub fn timestamp(&self, i: usize) -> Result<DateTime<Utc>, DbError> {
        match self.at(i)? {
            Value::Timestamp(v) => Ok(*v),
            _ => Err(self.mismatch(i, "timestamp (a timestamptz selected through utc!)")),
        }
    }

    pub fn opt_timestamp(&self, i: usize) -> Result<Option<DateTime<Utc>>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.timestamp(i).map(Some),
        }
    }
}
