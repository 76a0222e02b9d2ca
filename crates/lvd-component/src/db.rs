//! `lvd::db::Db` over `spin:postgres` (4.2.0 in the wasi:http 0.3 build,
//! 4.0.0 in the 0.2 one: the same values and errors). The connection opens on first use, so
//! a request that needs no database never touches it. A statement that has
//! not finished (rows read included) within [`deadline::POSTGRES`] is the
//! database unavailable: Spin's client waits for ever on a server that
//! stops answering.

use lvd::db::{Db, DbError, Param, Row, ServerError, Value};

use crate::deadline;
use crate::host::pg::{self, DbValue, ParameterValue};

fn timed_out() -> DbError {
    DbError::Unavailable(format!("no answer within {:?}", deadline::POSTGRES).into())
}

pub struct SpinDb {
    url: String,
    conn: std::cell::OnceCell<pg::Connection>,
}

impl SpinDb {
    pub fn new(url: String) -> Self {
        Self { url, conn: std::cell::OnceCell::new() }
    }

    /// A client for the same database with a connection of its own, for
    /// work that outlives the request (a live stream's task).
    pub fn another(&self) -> Self {
        Self::new(self.url.clone())
    }

    async fn conn(&self) -> Result<&pg::Connection, DbError> {
        if let Some(c) = self.conn.get() {
            return Ok(c);
        }
        let c = pg::open(&self.url).await.map_err(|e| DbError::Unavailable(format!("{e:?}").into()))?;
        Ok(self.conn.get_or_init(|| c))
    }
}

fn param(p: &Param) -> ParameterValue {
    match p {
        Param::Null => ParameterValue::DbNull,
        Param::Bool(v) => ParameterValue::Boolean(*v),
        Param::I32(v) => ParameterValue::Int32(*v),
        Param::I64(v) => ParameterValue::Int64(*v),
        Param::F64(v) => ParameterValue::Floating64(*v),
        Param::Text(v) => ParameterValue::Str(v.clone()),
        Param::Bytes(v) => ParameterValue::Binary(v.clone()),
        Param::Uuid(v) => ParameterValue::Uuid(v.to_string()),
        Param::Json(v) => ParameterValue::Jsonb(serde_json::to_vec(v).expect("JSON serializes")),
    }
}

fn value(v: &DbValue) -> Value {
    match v {
        DbValue::DbNull => Value::Null,
        DbValue::Boolean(b) => Value::Bool(*b),
        DbValue::Int16(n) => Value::I32(i32::from(*n)),
        DbValue::Int32(n) => Value::I32(*n),
        DbValue::Int64(n) => Value::I64(*n),
        DbValue::Floating32(n) => Value::F64(f64::from(*n)),
        DbValue::Floating64(n) => Value::F64(*n),
        DbValue::Str(s) => Value::Text(s.clone()),
        DbValue::Binary(b) => Value::Bytes(b.clone()),
        DbValue::Uuid(s) => s.parse().map(Value::Uuid).unwrap_or_else(|_| Value::Other(format!("uuid {s}"))),
        DbValue::Jsonb(b) => serde_json::from_slice(b).map(Value::Json).unwrap_or_else(|_| Value::Other("jsonb".into())),
        DbValue::Datetime((y, mo, d, h, mi, s, ns)) => chrono::NaiveDate::from_ymd_opt(*y, (*mo).into(), (*d).into())
            .and_then(|date| date.and_hms_nano_opt((*h).into(), (*mi).into(), (*s).into(), *ns))
            .map(|dt| Value::Timestamp(dt.and_utc()))
            .unwrap_or_else(|| Value::Other("datetime".into())),
        other => Value::Other(format!("{other:?}")),
    }
}

/// The host's error, classified; PostgreSQL's own refusal is kept as a
/// [`ServerError`], anything else as the host described it.
fn error(e: pg::PgError) -> DbError {
    use pg::{PgError as E, QueryError};
    match e {
        E::ConnectionFailed(m) => DbError::Unavailable(m.into()),
        E::QueryFailed(QueryError::DbError(d)) => {
            let (code, cause) = (d.code.clone(), Box::new(ServerError { code: d.code, message: d.message }));
            match code.as_str() {
                "23505" => DbError::UniqueViolation(cause),
                // Connection exceptions and shutdowns: the server went away.
                c if c.starts_with("08") || c.starts_with("57P") => DbError::Unavailable(cause),
                _ => DbError::Query(cause),
            }
        }
        E::QueryFailed(QueryError::Text(t)) if t.contains("closed") || t.contains("Connection") => DbError::Unavailable(t.into()),
        other => DbError::Query(format!("{other:?}").into()),
    }
}

impl Db for SpinDb {
    async fn query(&self, sql: &str, params: &[Param]) -> Result<Vec<Row>, DbError> {
        deadline::within(deadline::POSTGRES, self.query_now(sql, params)).await.unwrap_or_else(|| Err(timed_out()))
    }

    async fn execute(&self, sql: &str, params: &[Param]) -> Result<u64, DbError> {
        deadline::within(deadline::POSTGRES, self.execute_now(sql, params)).await.unwrap_or_else(|| Err(timed_out()))
    }
}

impl SpinDb {
    async fn query_now(&self, sql: &str, params: &[Param]) -> Result<Vec<Row>, DbError> {
        let conn = self.conn().await?;
        let rows = pg::query(conn, sql, params.iter().map(param).collect()).await.map_err(error)?;
        Ok(rows.iter().map(|row| Row(row.iter().map(value).collect())).collect())
    }

    async fn execute_now(&self, sql: &str, params: &[Param]) -> Result<u64, DbError> {
        let conn = self.conn().await?;
        pg::execute(conn, sql, params.iter().map(param).collect()).await.map_err(error)
    }
}
