//! Outbound `spin:redis/redis@3.0.0` and `fermyon:spin/redis@2.0.0` (the
//! same operations, for spin-sdk 5 components), as Spin hosts them: each `open` makes its
//! own multiplexed connection (so one guest's MULTI or SELECT never affects
//! another's), after checking the address against `allowed_outbound_hosts`.
//! Replies are flattened into a list exactly as Spin flattens them, and
//! every error is the variant and text Spin 4.0.2 gives
//! (`crates/factor-outbound-redis/src/host.rs`). As in Spin, a connection has
//! no timeouts: a Redis that stops answering holds the call for ever, so
//! components bound their calls themselves.

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, FromRedisValue, Value};
use std::sync::Arc;
use wasmtime::component::{Accessor, HasData, Resource};

use super::table::Table;
use crate::allowed_hosts::AllowedHosts;
use crate::bindings::spin::redis::redis::{self as r, Error, Payload, RedisParameter, RedisResult};

/// Spin's resource-table default.
const MAX_CONNECTIONS_PER_INSTANCE: usize = 1024;
/// Spin's `MAX_HOST_BUFFERED_BYTES`.
const MAX_RESULT_BYTES: usize = 128 << 20;

pub struct RedisState {
    pub allowed: Arc<AllowedHosts>,
    connections: Table<MultiplexedConnection>,
}

impl RedisState {
    pub fn new(allowed: Arc<AllowedHosts>) -> Self {
        Self { allowed, connections: Table::new(MAX_CONNECTIONS_PER_INSTANCE) }
    }

    fn conn(&self, rep: u32) -> Result<MultiplexedConnection, Error> {
        self.connections.get(rep).cloned().ok_or_else(|| Error::Other("could not find connection for resource".into()))
    }
}

pub struct RedisData;

impl HasData for RedisData {
    type Data<'a> = &'a mut RedisState;
}

fn other(e: redis::RedisError) -> Error {
    Error::Other(e.to_string())
}

async fn connect(allowed: &AllowedHosts, address: &str) -> Result<MultiplexedConnection, Error> {
    if !allowed.allows_url(address, "redis") {
        return Err(Error::InvalidAddress);
    }
    let client = redis::Client::open(address).map_err(|_| Error::InvalidAddress)?;
    client.get_multiplexed_async_connection_with_config(&redis::AsyncConnectionConfig::new()).await.map_err(other)
}

struct Flattened(Vec<RedisResult>);

fn unsupported(what: &str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::TypeError, "Could not convert Redis response", what.to_owned()))
}

impl FromRedisValue for Flattened {
    fn from_redis_value(value: &Value) -> redis::RedisResult<Self> {
        fn append(out: &mut Vec<RedisResult>, v: &Value) -> redis::RedisResult<()> {
            match v {
                Value::Nil => out.push(RedisResult::Nil),
                Value::Int(n) => out.push(RedisResult::Int64(*n)),
                Value::BulkString(b) => out.push(RedisResult::Binary(b.clone())),
                Value::SimpleString(s) => out.push(RedisResult::Status(s.clone())),
                Value::Okay => out.push(RedisResult::Status("OK".into())),
                Value::Array(a) | Value::Set(a) => a.iter().try_for_each(|v| append(out, v))?,
                Value::Double(d) => out.push(RedisResult::Binary(d.to_string().into_bytes())),
                Value::Boolean(b) => out.push(RedisResult::Int64(i64::from(*b))),
                Value::BigNumber(n) => out.push(RedisResult::Binary(n.to_string().into_bytes())),
                Value::ServerError(e) => {
                    return Err(redis::RedisError::from((redis::ErrorKind::ResponseError, "Server error", format!("{e:?}"))));
                }
                Value::Map(_) => return Err(unsupported("Redis Map type is not supported")),
                Value::Attribute { .. } => return Err(unsupported("Redis Attribute type is not supported")),
                Value::VerbatimString { .. } => return Err(unsupported("Redis string with format attribute is not supported")),
                Value::Push { .. } => return Err(unsupported("Redis Pub/Sub types are not supported")),
            }
            Ok(())
        }
        let mut out = Vec::new();
        append(&mut out, value)?;
        Ok(Flattened(out))
    }
}

impl r::Host for RedisState {
    fn convert_error(&mut self, err: Error) -> wasmtime::Result<Error> {
        Ok(err)
    }
}

impl r::HostConnection for RedisState {
    async fn drop(&mut self, connection: Resource<r::Connection>) -> wasmtime::Result<()> {
        self.connections.remove(connection.rep());
        Ok(())
    }
}

impl r::HostConnectionWithStore for RedisData {
    async fn open<T>(accessor: &Accessor<T, Self>, address: String) -> Result<Resource<r::Connection>, Error> {
        let allowed = accessor.with(|mut a| a.get().allowed.clone());
        let conn = connect(&allowed, &address).await?;
        accessor.with(|mut a| {
            a.get().connections.push(conn).map(Resource::new_own).map_err(|()| Error::TooManyConnections)
        })
    }

    async fn publish<T>(accessor: &Accessor<T, Self>, c: Resource<r::Connection>, channel: String, payload: Payload) -> Result<(), Error> {
        let mut conn = accessor.with(|mut a| a.get().conn(c.rep()))?;
        conn.publish::<_, _, ()>(&channel, &payload).await.map_err(other)
    }

    async fn get<T>(accessor: &Accessor<T, Self>, c: Resource<r::Connection>, key: String) -> Result<Option<Payload>, Error> {
        let conn = accessor.with(|mut a| a.get().conn(c.rep()))?;
        get(conn, key).await
    }

    async fn set<T>(accessor: &Accessor<T, Self>, c: Resource<r::Connection>, key: String, value: Payload) -> Result<(), Error> {
        let mut conn = accessor.with(|mut a| a.get().conn(c.rep()))?;
        conn.set::<_, _, ()>(&key, &value).await.map_err(other)
    }

    async fn incr<T>(accessor: &Accessor<T, Self>, c: Resource<r::Connection>, key: String) -> Result<i64, Error> {
        let mut conn = accessor.with(|mut a| a.get().conn(c.rep()))?;
        conn.incr(&key, 1).await.map_err(other)
    }

    async fn del<T>(accessor: &Accessor<T, Self>, c: Resource<r::Connection>, keys: Vec<String>) -> Result<u32, Error> {
        let mut conn = accessor.with(|mut a| a.get().conn(c.rep()))?;
        conn.del(&keys).await.map_err(other)
    }

    async fn sadd<T>(accessor: &Accessor<T, Self>, c: Resource<r::Connection>, key: String, values: Vec<String>) -> Result<u32, Error> {
        let conn = accessor.with(|mut a| a.get().conn(c.rep()))?;
        sadd(conn, key, values).await
    }

    async fn smembers<T>(accessor: &Accessor<T, Self>, c: Resource<r::Connection>, key: String) -> Result<Vec<String>, Error> {
        let mut conn = accessor.with(|mut a| a.get().conn(c.rep()))?;
        conn.smembers(&key).await.map_err(other)
    }

    async fn srem<T>(accessor: &Accessor<T, Self>, c: Resource<r::Connection>, key: String, values: Vec<String>) -> Result<u32, Error> {
        let mut conn = accessor.with(|mut a| a.get().conn(c.rep()))?;
        conn.srem(&key, &values).await.map_err(other)
    }

    async fn execute<T>(
        accessor: &Accessor<T, Self>,
        c: Resource<r::Connection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> Result<Vec<RedisResult>, Error> {
        let conn = accessor.with(|mut a| a.get().conn(c.rep()))?;
        execute(conn, command, arguments).await
    }
}

async fn get(mut conn: MultiplexedConnection, key: String) -> Result<Option<Payload>, Error> {
    let value: Option<Payload> = conn.get(&key).await.map_err(other)?;
    if std::mem::size_of::<Option<Payload>>() + value.as_ref().map_or(0, Vec::len) > MAX_RESULT_BYTES {
        return Err(Error::Other(format!("query result exceeds limit of {MAX_RESULT_BYTES} bytes")));
    }
    Ok(value)
}

/// The one call whose type error is `type-error` rather than `other`, as in Spin.
async fn sadd(mut conn: MultiplexedConnection, key: String, values: Vec<String>) -> Result<u32, Error> {
    conn.sadd(&key, &values).await.map_err(|e| if e.kind() == redis::ErrorKind::TypeError { Error::TypeError } else { other(e) })
}

async fn execute(mut conn: MultiplexedConnection, command: String, arguments: Vec<RedisParameter>) -> Result<Vec<RedisResult>, Error> {
    let mut cmd = redis::cmd(&command);
    for arg in arguments {
        match arg {
            RedisParameter::Int64(v) => cmd.arg(v),
            RedisParameter::Binary(v) => cmd.arg(v),
        };
    }
    let Flattened(results) = cmd.query_async(&mut conn).await.map_err(other)?;
    let size: usize = std::mem::size_of::<Vec<RedisResult>>()
        + results
            .iter()
            .map(|r| {
                std::mem::size_of::<RedisResult>()
                    + match r {
                        RedisResult::Binary(b) => b.len(),
                        RedisResult::Status(s) => s.len(),
                        _ => 0,
                    }
            })
            .sum::<usize>();
    if size > MAX_RESULT_BYTES {
        return Err(Error::Other(format!("query result exceeds limit of {MAX_RESULT_BYTES} bytes")));
    }
    Ok(results)
}

/// `fermyon:spin/redis@2.0.0` (spin-sdk 5, Spin 3.x): the same calls, each
/// error and result the same variant of the 2.0.0 types (Spin 3.6.3's
/// `factor-outbound-redis` shares its operations with 3.0.0 the same way).
mod v2 {
    use super::*;
    use crate::bindings::fermyon::spin::redis as r2;

    fn error(e: Error) -> r2::Error {
        match e {
            Error::InvalidAddress => r2::Error::InvalidAddress,
            Error::TooManyConnections => r2::Error::TooManyConnections,
            Error::TypeError => r2::Error::TypeError,
            Error::Other(m) => r2::Error::Other(m),
        }
    }

    impl r2::Host for RedisState {
        fn convert_error(&mut self, err: r2::Error) -> wasmtime::Result<r2::Error> {
            Ok(err)
        }
    }

    impl RedisState {
        fn conn2(&self, c: &Resource<r2::Connection>) -> Result<MultiplexedConnection, r2::Error> {
            self.conn(c.rep()).map_err(error)
        }
    }

    impl r2::HostConnection for RedisState {
        async fn open(&mut self, address: String) -> Result<Resource<r2::Connection>, r2::Error> {
            let conn = connect(&self.allowed, &address).await.map_err(error)?;
            self.connections.push(conn).map(Resource::new_own).map_err(|()| r2::Error::TooManyConnections)
        }

        async fn publish(&mut self, c: Resource<r2::Connection>, channel: String, payload: Vec<u8>) -> Result<(), r2::Error> {
            self.conn2(&c)?.publish::<_, _, ()>(&channel, &payload).await.map_err(|e| error(other(e)))
        }

        async fn get(&mut self, c: Resource<r2::Connection>, key: String) -> Result<Option<Vec<u8>>, r2::Error> {
            get(self.conn2(&c)?, key).await.map_err(error)
        }

        async fn set(&mut self, c: Resource<r2::Connection>, key: String, value: Vec<u8>) -> Result<(), r2::Error> {
            self.conn2(&c)?.set::<_, _, ()>(&key, &value).await.map_err(|e| error(other(e)))
        }

        async fn incr(&mut self, c: Resource<r2::Connection>, key: String) -> Result<i64, r2::Error> {
            self.conn2(&c)?.incr(&key, 1).await.map_err(|e| error(other(e)))
        }

        async fn del(&mut self, c: Resource<r2::Connection>, keys: Vec<String>) -> Result<u32, r2::Error> {
            self.conn2(&c)?.del(&keys).await.map_err(|e| error(other(e)))
        }

        async fn sadd(&mut self, c: Resource<r2::Connection>, key: String, values: Vec<String>) -> Result<u32, r2::Error> {
            sadd(self.conn2(&c)?, key, values).await.map_err(error)
        }

        async fn smembers(&mut self, c: Resource<r2::Connection>, key: String) -> Result<Vec<String>, r2::Error> {
            self.conn2(&c)?.smembers(&key).await.map_err(|e| error(other(e)))
        }

        async fn srem(&mut self, c: Resource<r2::Connection>, key: String, values: Vec<String>) -> Result<u32, r2::Error> {
            self.conn2(&c)?.srem(&key, &values).await.map_err(|e| error(other(e)))
        }

        async fn execute(
            &mut self,
            c: Resource<r2::Connection>,
            command: String,
            arguments: Vec<r2::RedisParameter>,
        ) -> Result<Vec<r2::RedisResult>, r2::Error> {
            let arguments = arguments
                .into_iter()
                .map(|a| match a {
                    r2::RedisParameter::Int64(v) => RedisParameter::Int64(v),
                    r2::RedisParameter::Binary(v) => RedisParameter::Binary(v),
                })
                .collect();
            let results = execute(self.conn2(&c)?, command, arguments).await.map_err(error)?;
            Ok(results
                .into_iter()
                .map(|r| match r {
                    RedisResult::Nil => r2::RedisResult::Nil,
                    RedisResult::Status(s) => r2::RedisResult::Status(s),
                    RedisResult::Int64(n) => r2::RedisResult::Int64(n),
                    RedisResult::Binary(b) => r2::RedisResult::Binary(b),
                })
                .collect())
        }

        async fn drop(&mut self, c: Resource<r2::Connection>) -> wasmtime::Result<()> {
            self.connections.remove(c.rep());
            Ok(())
        }
    }
}
