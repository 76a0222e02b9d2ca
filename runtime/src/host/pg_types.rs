//! Conversions between `spin:postgres@4.2.0` values and tokio-postgres, type
//! by type as Spin 4.0.2 does them (`crates/factor-outbound-pg/src/types.rs`
//! and `types/convert.rs`), failures included, so that SQL which fails under
//! Spin fails here too.
//!
//! The case that matters most: Spin maps both `timestamp` and `timestamptz`
//! columns to `datetime` and reads both as a naive date-time, which
//! tokio-postgres refuses for `timestamptz` ("cannot convert between the Rust
//! type `Option<NaiveDateTime>` and the Postgres type `timestamptz`"). So
//! does this runtime. A `datetime` parameter is a `timestamp`, a `timestamp`
//! parameter (epoch seconds) a `timestamptz`.

use anyhow::{Context, Result, anyhow};
use bytes::{BufMut, BytesMut};
use chrono::{Datelike, Timelike};
use postgres_types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::Row;

use crate::bindings::spin::postgres::postgres::{
    Column, DbDataType, DbValue, Interval as WitInterval, ParameterValue, RangeBoundKind,
};

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
        Type::INT4_RANGE => DbDataType::RangeInt32,
        Type::INT8_RANGE => DbDataType::RangeInt64,
        Type::NUM_RANGE => DbDataType::RangeDecimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::NUMERIC_ARRAY => DbDataType::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => DbDataType::ArrayStr,
        Type::INTERVAL => DbDataType::Interval,
        _ => DbDataType::Other(t.name().to_owned()),
    }
}

/// The columns of a result, as Spin infers them: from its first row. A
/// result with no rows has no columns (Spin's `unwrap_or_default`).
pub fn columns(row: &Row) -> Vec<Column> {
    row.columns().iter().map(|c| Column { name: c.name().to_owned(), data_type: data_type(c.type_()) }).collect()
}

fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize, f: impl FnOnce(T) -> Result<DbValue>) -> Result<DbValue> {
    match row.try_get::<_, Option<T>>(i)? {
        Some(v) => f(v),
        None => Ok(DbValue::DbNull),
    }
}

pub fn row(row: &Row) -> Result<Vec<DbValue>> {
    (0..row.len()).map(|i| entry(row, i)).collect()
}

fn entry(row: &Row, i: usize) -> Result<DbValue> {
    match *row.columns()[i].type_() {
        Type::BOOL => get(row, i, |v| Ok(DbValue::Boolean(v))),
        Type::BYTEA => get(row, i, |v| Ok(DbValue::Binary(v))),
        Type::FLOAT4 => get(row, i, |v| Ok(DbValue::Floating32(v))),
        Type::FLOAT8 => get(row, i, |v| Ok(DbValue::Floating64(v))),
        Type::INT2 => get(row, i, |v| Ok(DbValue::Int16(v))),
        Type::INT4 => get(row, i, |v| Ok(DbValue::Int32(v))),
        Type::INT8 => get(row, i, |v| Ok(DbValue::Int64(v))),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => get(row, i, |v| Ok(DbValue::Str(v))),
        // Both as NaiveDateTime, exactly as Spin: a timestamptz column fails.
        Type::TIMESTAMP | Type::TIMESTAMPTZ => get(row, i, |v: chrono::NaiveDateTime| {
            Ok(DbValue::Datetime((
                v.year(),
                v.month().try_into()?,
                v.day().try_into()?,
                v.hour().try_into()?,
                v.minute().try_into()?,
                v.second().try_into()?,
                v.nanosecond(),
            )))
        }),
        Type::DATE => get(row, i, |v: chrono::NaiveDate| {
            Ok(DbValue::Date((v.year(), v.month().try_into()?, v.day().try_into()?)))
        }),
        Type::TIME => get(row, i, |v: chrono::NaiveTime| {
            Ok(DbValue::Time((v.hour().try_into()?, v.minute().try_into()?, v.second().try_into()?, v.nanosecond())))
        }),
        Type::UUID => get(row, i, |v: uuid::Uuid| Ok(DbValue::Uuid(v.to_string()))),
        Type::JSONB => get(row, i, |v: serde_json::Value| {
            Ok(DbValue::Jsonb(serde_json::to_vec(&v).context("invalid JSON from database")?))
        }),
        Type::NUMERIC => get(row, i, |v: rust_decimal::Decimal| Ok(DbValue::Decimal(v.to_string()))),
        Type::INT4_RANGE => get(row, i, |v: postgres_range::Range<i32>| Ok(DbValue::RangeInt32(range_to_wit(&v, |n| *n)))),
        Type::INT8_RANGE => get(row, i, |v: postgres_range::Range<i64>| Ok(DbValue::RangeInt64(range_to_wit(&v, |n| *n)))),
        Type::NUM_RANGE => get(row, i, |v: postgres_range::Range<RangeableDecimal>| {
            Ok(DbValue::RangeDecimal(range_to_wit(&v, |d| d.0.to_string())))
        }),
        Type::INT4_ARRAY => get(row, i, |v| Ok(DbValue::ArrayInt32(v))),
        Type::INT8_ARRAY => get(row, i, |v| Ok(DbValue::ArrayInt64(v))),
        Type::NUMERIC_ARRAY => get(row, i, |v: Vec<Option<rust_decimal::Decimal>>| {
            Ok(DbValue::ArrayDecimal(v.iter().map(|d| d.map(|d| d.to_string())).collect()))
        }),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => get(row, i, |v| Ok(DbValue::ArrayStr(v))),
        Type::INTERVAL => get(row, i, |v: Interval| Ok(DbValue::Interval(v.0))),
        // Spin hands any other type over as its raw binary encoding.
        _ => get(row, i, |v: Other| Ok(DbValue::Unsupported(v.0))),
    }
}

/// What a value costs against the result-size limit: Spin's
/// `DbValue::memory_size` (`crates/world/src/lib.rs`), to the byte.
pub fn memory_size(v: &DbValue) -> usize {
    let base = std::mem::size_of::<DbValue>();
    match v {
        DbValue::ArrayInt32(a) => base + a.len() * std::mem::size_of::<Option<i32>>(),
        DbValue::ArrayInt64(a) => base + a.len() * std::mem::size_of::<Option<i64>>(),
        DbValue::ArrayDecimal(a) | DbValue::ArrayStr(a) => {
            base + a.iter().map(|s| std::mem::size_of::<Option<String>>() + s.as_ref().map_or(0, String::len)).sum::<usize>()
        }
        DbValue::Str(s) | DbValue::Uuid(s) | DbValue::Decimal(s) => base + s.len(),
        DbValue::Binary(b) | DbValue::Jsonb(b) | DbValue::Unsupported(b) => base + b.len(),
        _ => base,
    }
}

type WitRange<T> = (Option<(T, RangeBoundKind)>, Option<(T, RangeBoundKind)>);

fn range_to_wit<T: PartialOrd + postgres_range::Normalizable, W>(r: &postgres_range::Range<T>, f: impl Fn(&T) -> W) -> WitRange<W> {
    fn kind(t: postgres_range::BoundType) -> RangeBoundKind {
        match t {
            postgres_range::BoundType::Inclusive => RangeBoundKind::Inclusive,
            postgres_range::BoundType::Exclusive => RangeBoundKind::Exclusive,
        }
    }
    (r.lower().map(|b| (f(&b.value), kind(b.type_))), r.upper().map(|b| (f(&b.value), kind(b.type_))))
}

fn range_from_wit<T: PartialOrd + postgres_range::Normalizable + Clone>(r: &WitRange<T>) -> postgres_range::Range<T> {
    range_from_wit_with(r, |v| Ok(v.clone())).expect("cloning a bound cannot fail")
}

fn range_from_wit_with<T, W>(r: &WitRange<W>, f: impl Fn(&W) -> Result<T>) -> Result<postgres_range::Range<T>>
where
    T: PartialOrd + postgres_range::Normalizable,
{
    fn kind(k: RangeBoundKind) -> postgres_range::BoundType {
        match k {
            RangeBoundKind::Inclusive => postgres_range::BoundType::Inclusive,
            RangeBoundKind::Exclusive => postgres_range::BoundType::Exclusive,
        }
    }
    let lower = r.0.as_ref().map(|(v, k)| f(v).map(|v| postgres_range::RangeBound::new(v, kind(*k)))).transpose()?;
    let upper = r.1.as_ref().map(|(v, k)| f(v).map(|v| postgres_range::RangeBound::new(v, kind(*k)))).transpose()?;
    Ok(postgres_range::Range::new(lower, upper))
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
    fn to_sql_checked(&self, _: &Type, _: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }
}

/// Any type Spin has no value for: its raw binary form.
struct Other(Vec<u8>);

impl FromSql<'_> for Other {
    fn from_sql(_: &Type, raw: &[u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(raw.to_owned()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// `interval` in PostgreSQL's binary form: microseconds, days, months.
#[derive(Debug)]
struct Interval(WitInterval);

impl ToSql for Interval {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_i64(self.0.micros);
        out.put_i32(self.0.days);
        out.put_i32(self.0.months);
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
    to_sql_checked!();
}

impl FromSql<'_> for Interval {
    fn from_sql(_: &Type, raw: &[u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let raw: [u8; 16] = raw.try_into().map_err(|_| "unexpected binary format for Postgres INTERVAL")?;
        let micros = i64::from_be_bytes(raw[0..8].try_into().unwrap());
        let days = i32::from_be_bytes(raw[8..12].try_into().unwrap());
        let months = i32::from_be_bytes(raw[12..16].try_into().unwrap());
        Ok(Self(WitInterval { micros, days, months }))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// `numeric` bounds of a `numrange`.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
struct RangeableDecimal(rust_decimal::Decimal);

impl ToSql for RangeableDecimal {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.to_sql(ty, out)
    }
    fn accepts(ty: &Type) -> bool {
        <rust_decimal::Decimal as ToSql>::accepts(ty)
    }
    to_sql_checked!();
}

impl FromSql<'_> for RangeableDecimal {
    fn from_sql(ty: &Type, raw: &[u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Self(<rust_decimal::Decimal as FromSql>::from_sql(ty, raw)?))
    }
    fn accepts(ty: &Type) -> bool {
        <rust_decimal::Decimal as FromSql>::accepts(ty)
    }
}

impl postgres_range::Normalizable for RangeableDecimal {
    fn normalize<S: postgres_range::BoundSided>(b: postgres_range::RangeBound<S, Self>) -> postgres_range::RangeBound<S, Self> {
        b
    }
}

fn decimal(v: &str) -> Result<rust_decimal::Decimal> {
    rust_decimal::Decimal::from_str_exact(v).with_context(|| format!("invalid decimal {v}"))
}

fn date((y, m, d): &(i32, u8, u8)) -> Result<chrono::NaiveDate> {
    chrono::NaiveDate::from_ymd_opt(*y, (*m).into(), (*d).into()).ok_or_else(|| anyhow!("invalid date y={y}, m={m}, d={d}"))
}

fn time((h, m, s, ns): &(u8, u8, u8, u32)) -> Result<chrono::NaiveTime> {
    chrono::NaiveTime::from_hms_nano_opt((*h).into(), (*m).into(), (*s).into(), *ns)
        .ok_or_else(|| anyhow!("invalid time {h}:{m}:{s}:{ns}"))
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
        ParameterValue::Date(v) => Box::new(date(v)?),
        ParameterValue::Time(v) => Box::new(time(v)?),
        ParameterValue::Datetime((y, mo, d, h, mi, s, ns)) => {
            Box::new(chrono::NaiveDateTime::new(date(&(*y, *mo, *d))?, time(&(*h, *mi, *s, *ns))?))
        }
        ParameterValue::Timestamp(v) => Box::new(
            chrono::DateTime::<chrono::Utc>::from_timestamp(*v, 0).ok_or_else(|| anyhow!("invalid epoch timestamp {v}"))?,
        ),
        ParameterValue::Uuid(v) => Box::new(uuid::Uuid::parse_str(v).with_context(|| format!("invalid UUID {v}"))?),
        ParameterValue::Jsonb(v) => Box::new(
            serde_json::from_slice::<serde_json::Value>(v)
                .with_context(|| format!("invalid JSON {}", String::from_utf8_lossy(v)))?,
        ),
        ParameterValue::Decimal(v) => Box::new(decimal(v)?),
        ParameterValue::RangeInt32(r) => Box::new(range_from_wit(r)),
        ParameterValue::RangeInt64(r) => Box::new(range_from_wit(r)),
        ParameterValue::RangeDecimal(r) => Box::new(range_from_wit_with(r, |v| decimal(v).map(RangeableDecimal))?),
        ParameterValue::ArrayInt32(v) => Box::new(v.clone()),
        ParameterValue::ArrayInt64(v) => Box::new(v.clone()),
        ParameterValue::ArrayStr(v) => Box::new(v.clone()),
        ParameterValue::ArrayDecimal(v) => {
            Box::new(v.iter().map(|d| d.as_deref().map(decimal).transpose()).collect::<Result<Vec<_>>>()?)
        }
        ParameterValue::Interval(v) => Box::new(Interval(*v)),
        ParameterValue::DbNull => Box::new(PgNull),
    })
}
