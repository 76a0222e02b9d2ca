//! [`Db`] over tokio-postgres, for native code: the worker, and tests that
//! exercise the statements of this crate against real PostgreSQL. Built
//! with the `native` feature only; components use `lvd-component`'s
//! adapter over Spin's `spin:postgres`.
//!
//! It reads values exactly as Spin's host does (see the module docs of
//! [`crate::db`]): a `timestamptz` column is refused as Spin refuses it, so
//! a statement that works here works in a component too. It adds what only
//! native code needs: `COPY ... FROM STDIN` and whole-script batches (a
//! transaction's `BEGIN` and `COMMIT`) on its one connection ([`CopyIn`]),
//! and `COPY ... TO STDOUT` streamed to a writer ([`PgDb::copy_out`]).

use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls};

use super::{CopyIn, Db, DbError, Param, Row, ServerError, Value};

pub struct PgDb {
    client: Client,
}

impl PgDb {
    /// Opens one connection; its driver runs on the current tokio runtime.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        let (client, conn) = tokio_postgres::connect(url, NoTls).await.map_err(error)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "PostgreSQL connection closed");
            }
        });
        Ok(Self { client })
    }

    /// Whether the server closed the connection: open another.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// `COPY ... TO STDOUT`: the statement's output written to `out` as the
    /// server sends it, never held whole (an export may be large). Returns
    /// the bytes written. The other direction is [`CopyIn::copy_in`].
    pub async fn copy_out(&self, sql: &str, out: &mut (impl tokio::io::AsyncWrite + Unpin)) -> Result<u64, DbError> {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let stream = self.client.copy_out(sql).await.map_err(error)?;
        let mut stream = std::pin::pin!(stream);
        let mut written = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(error)?;
            out.write_all(&chunk).await.map_err(|e| DbError::Query(Box::new(e)))?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(|e| DbError::Query(Box::new(e)))?;
        Ok(written)
    }
}

impl PgDb {
    /// The rows of a statement whose every column is selected as text (or
    /// NULL), as the server sends them: a stream that asks for the next rows
    /// only as the caller takes these (tokio-postgres holds one batch of
    /// messages at a time), so memory stays flat whatever the result's
    /// size. For bulk reads of native code (an export).
    pub async fn text_rows(
        &self,
        sql: &str,
        params: &[Param],
    ) -> Result<impl futures_util::Stream<Item = Result<TextRow, DbError>> + use<>, DbError> {
        use futures_util::StreamExt;
        let params: Vec<Box<dyn ToSql + Sync + Send>> = params.iter().map(param).collect();
        let refs = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync));
        let stream = self.client.query_raw(sql, refs).await.map_err(error)?;
        Ok(stream.map(|r| r.map(TextRow).map_err(error)))
    }
}

/// A row of [`PgDb::text_rows`].
pub struct TextRow(tokio_postgres::Row);

impl TextRow {
    /// Column `i`, borrowed from the row: `None` for NULL. A column that
    /// is not text is a [`DbError::Decode`].
    pub fn get(&self, i: usize) -> Result<Option<&str>, DbError> {
        self.0.try_get::<_, Option<&str>>(i).map_err(|e| DbError::Decode(format!("column {i}: {e}")))
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl CopyIn for PgDb {
    async fn batch(&self, sql: &str) -> Result<(), DbError> {
        self.client.batch_execute(sql).await.map_err(error)
    }

    async fn copy_in(&self, sql: &str, chunks: &[&str]) -> Result<u64, DbError> {
        let sink = self.client.copy_in::<_, Bytes>(sql).await.map_err(error)?;
        let mut sink = std::pin::pin!(sink);
        for chunk in chunks {
            sink.send(Bytes::copy_from_slice(chunk.as_bytes())).await.map_err(error)?;
        }
        sink.as_mut().finish().await.map_err(error)
    }
}

impl Db for PgDb {
    async fn query(&self, sql: &str, params: &[Param]) -> Result<Vec<Row>, DbError> {
        let params: Vec<Box<dyn ToSql + Sync + Send>> = params.iter().map(param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        let rows = self.client.query(sql, &refs).await.map_err(error)?;
        Ok(rows.iter().map(|r| Row((0..r.len()).map(|i| value(r, i)).collect())).collect())
    }

    async fn execute(&self, sql: &str, params: &[Param]) -> Result<u64, DbError> {
        let params: Vec<Box<dyn ToSql + Sync + Send>> = params.iter().map(param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        self.client.execute(sql, &refs).await.map_err(error)
    }
}

fn param(p: &Param) -> Box<dyn ToSql + Sync + Send> {
    match p {
        Param::Null => Box::new(Null),
        Param::Bool(v) => Box::new(*v),
        Param::I32(v) => Box::new(*v),
        Param::I64(v) => Box::new(*v),
        Param::F64(v) => Box::new(*v),
        Param::Text(v) => Box::new(v.clone()),
        Param::Bytes(v) => Box::new(v.clone()),
        Param::Uuid(v) => Box::new(*v),
        Param::Json(v) => Box::new(v.clone()),
    }
}

/// SQL NULL of whatever type the statement wants there, as Spin's
/// `db-null` parameter is.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(&self, _: &Type, _: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Any column, for telling NULL apart in a type the app does not read.
struct Raw;

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, _: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Column `i` as Spin's host would hand it over.
fn value(row: &tokio_postgres::Row, i: usize) -> Value {
    fn read<'a, T: FromSql<'a>>(row: &'a tokio_postgres::Row, i: usize, wrap: impl Fn(T) -> Value) -> Value {
        match row.try_get::<_, Option<T>>(i) {
            Ok(Some(v)) => wrap(v),
            Ok(None) => Value::Null,
            Err(e) => Value::Other(e.to_string()),
        }
    }
    let ty = row.columns()[i].type_().clone();
    match ty {
        Type::BOOL => read(row, i, Value::Bool),
        Type::INT2 => read(row, i, |v: i16| Value::I32(i32::from(v))),
        Type::INT4 => read(row, i, Value::I32),
        Type::INT8 => read(row, i, Value::I64),
        Type::FLOAT4 => read(row, i, |v: f32| Value::F64(f64::from(v))),
        Type::FLOAT8 => read(row, i, Value::F64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => read(row, i, Value::Text),
        Type::BYTEA => read(row, i, Value::Bytes),
        Type::UUID => read(row, i, Value::Uuid),
        Type::JSON | Type::JSONB => read(row, i, Value::Json),
        Type::TIMESTAMP => read(row, i, |v: chrono::NaiveDateTime| Value::Timestamp(v.and_utc())),
        // Spin's host fails on these; so does this adapter (module docs).
        other => match row.try_get::<_, Option<Raw>>(i) {
            Ok(None) => Value::Null,
            _ => Value::Other(other.name().to_owned()),
        },
    }
}

/// The driver's error, classified; the error itself is kept as the cause.
fn error(e: tokio_postgres::Error) -> DbError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let cause = Box::new(ServerError { code: code.to_owned(), message: db.message().to_owned() });
        return match code {
            "23505" => DbError::UniqueViolation(cause),
            c if c.starts_with("08") || c.starts_with("57P") => DbError::Unavailable(cause),
            _ => DbError::Query(cause),
        };
    }
    // No server refusal: the connection failed (its cause is an I/O error,
    // or it closed), or the statement never left (a parameter's type).
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io || e.to_string().starts_with("error connecting") {
        DbError::Unavailable(Box::new(e))
    } else {
        DbError::Query(Box::new(e))
    }
}
