//! Conversions between `spin:postgres@4.2.0` values and tokio-postgres,
//! following Spin's own mapping so that SQL which works here works under Spin
//! and vice versa (e.g. a `datetime` parameter is a `timestamp`; pass
//! `timestamptz` columns a `timestamp` parameter or cast in SQL).

use anyhow::{Context, Result, anyhow};
use bytes::BytesMut;
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use postgres_types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::Row;

use crate::bindings::spin::postgres::postgres::{Column, DbDataType, DbValue, ParameterValue};

pub fn data_type(t: &Type) -> DbDataType {
    match *t {
        Type::BOOL => DbDataType::Boolean,
        Type::BYTEA => DbDataType::Binary,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => DbDataType::Str,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::UUID => DbDataType::Uuid,
        Type::JSONB => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::NUMERIC_ARRAY => DbDataType::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => DbDataType::ArrayStr,
        _ => DbDataType::Other(t.name().to_owned()),
    }
}

pub fn columns(stmt_columns: &[tokio_postgres::Column]) -> Vec<Column> {
    stmt_columns
        .iter()
        .map(|c| Column { name: c.name().to_owned(), data_type: data_type(c.type_()) })
        .collect()
}

fn get<'a, T: postgres_types::FromSql<'a>>(row: &'a Row, i: usize, f: impl FnOnce(T) -> DbValue) -> Result<DbValue> {
    Ok(row.try_get::<_, Option<T>>(i)?.map(f).unwrap_or(DbValue::DbNull))
}

pub fn row(row: &Row) -> Result<Vec<DbValue>> {
    (0..row.len())
        .map(|i| {
            let t = row.columns()[i].type_();
            match *t {
                Type::BOOL => get(row, i, DbValue::Boolean),
                Type::BYTEA => get(row, i, DbValue::Binary),
                Type::FLOAT4 => get(row, i, DbValue::Floating32),
                Type::FLOAT8 => get(row, i, DbValue::Floating64),
                Type::INT2 => get(row, i, DbValue::Int16),
                Type::INT4 => get(row, i, DbValue::Int32),
                Type::INT8 => get(row, i, DbValue::Int64),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR => get(row, i, DbValue::Str),
                Type::TIMESTAMP => get(row, i, |v: NaiveDateTime| DbValue::Datetime(datetime_to_wit(v))),
                Type::TIMESTAMPTZ => get(row, i, |v: chrono::DateTime<chrono::Utc>| {
                    DbValue::Datetime(datetime_to_wit(v.naive_utc()))
                }),
                Type::DATE => get(row, i, |v: NaiveDate| DbValue::Date((v.year(), v.month() as u8, v.day() as u8))),
                Type::TIME => get(row, i, |v: NaiveTime| {
                    DbValue::Time((v.hour() as u8, v.minute() as u8, v.second() as u8, v.nanosecond()))
                }),
                Type::UUID => get(row, i, |v: uuid::Uuid| DbValue::Uuid(v.to_string())),
                Type::JSONB => get(row, i, |v: serde_json::Value| {
                    DbValue::Jsonb(serde_json::to_vec(&v).expect("a JSON value serializes"))
                }),
                Type::NUMERIC => get(row, i, |v: rust_decimal::Decimal| DbValue::Decimal(v.to_string())),
                Type::INT4_ARRAY => get(row, i, DbValue::ArrayInt32),
                Type::INT8_ARRAY => get(row, i, DbValue::ArrayInt64),
                Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => get(row, i, DbValue::ArrayStr),
                _ => Ok(DbValue::Unsupported(Vec::new())),
            }
        })
        .collect()
}

fn datetime_to_wit(v: NaiveDateTime) -> (i32, u8, u8, u8, u8, u8, u32) {
    (v.year(), v.month() as u8, v.day() as u8, v.hour() as u8, v.minute() as u8, v.second() as u8, v.nanosecond())
}

/// A SQL NULL of whatever type the statement expects.
#[derive(Debug)]
struct PgNull;

impl ToSql for PgNull {
    fn to_sql(&self, _: &Type, _: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

pub type SqlParam = Box<dyn ToSql + Send + Sync>;

pub fn parameter(p: &ParameterValue) -> Result<SqlParam> {
    Ok(match p {
        ParameterValue::Boolean(v) => Box::new(*v),
        ParameterValue::Int8(v) => Box::new(*v),
        ParameterValue::Int16(v) => Box::new(*v),
        ParameterValue::Int32(v) => Box::new(*v),
        ParameterValue::Int64(v) => Box::new(*v),
        ParameterValue::Floating32(v) => Box::new(*v),
        ParameterValue::Floating64(v) => Box::new(*v),
        ParameterValue::Str(v) => Box::new(v.clone()),
        ParameterValue::Binary(v) => Box::new(v.clone()),
        ParameterValue::Date((y, m, d)) => Box::new(
            NaiveDate::from_ymd_opt(*y, (*m).into(), (*d).into()).ok_or_else(|| anyhow!("invalid date"))?,
        ),
        ParameterValue::Time((h, m, s, ns)) => Box::new(
            NaiveTime::from_hms_nano_opt((*h).into(), (*m).into(), (*s).into(), *ns)
                .ok_or_else(|| anyhow!("invalid time"))?,
        ),
        ParameterValue::Datetime((y, mo, d, h, mi, s, ns)) => {
            let date = NaiveDate::from_ymd_opt(*y, (*mo).into(), (*d).into()).ok_or_else(|| anyhow!("invalid date"))?;
            let time = NaiveTime::from_hms_nano_opt((*h).into(), (*mi).into(), (*s).into(), *ns)
                .ok_or_else(|| anyhow!("invalid time"))?;
            Box::new(NaiveDateTime::new(date, time))
        }
        ParameterValue::Timestamp(v) => Box::new(*v),
        ParameterValue::Uuid(v) => Box::new(uuid::Uuid::parse_str(v).context("invalid uuid")?),
        ParameterValue::Jsonb(v) => Box::new(serde_json::from_slice::<serde_json::Value>(v).context("invalid JSON")?),
        ParameterValue::Decimal(v) => Box::new(v.parse::<rust_decimal::Decimal>().context("invalid decimal")?),
        ParameterValue::ArrayInt32(v) => Box::new(v.clone()),
        ParameterValue::ArrayInt64(v) => Box::new(v.clone()),
        ParameterValue::ArrayStr(v) => Box::new(v.clone()),
        ParameterValue::ArrayDecimal(v) => Box::new(
            v.iter()
                .map(|d| d.as_deref().map(str::parse::<rust_decimal::Decimal>).transpose())
                .collect::<Result<Vec<_>, _>>()
                .context("invalid decimal")?,
        ),
        ParameterValue::DbNull => Box::new(PgNull),
        ParameterValue::RangeInt32(_)
        | ParameterValue::RangeInt64(_)
        | ParameterValue::RangeDecimal(_)
        | ParameterValue::Interval(_) => anyhow::bail!("range and interval parameters are not supported by this runtime"),
    })
}
