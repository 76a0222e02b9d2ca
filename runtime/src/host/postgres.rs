//! `spin:postgres/postgres@4.2.0` on tokio-postgres, shaped like Spin 4.0.2's
//! outbound PostgreSQL (`crates/factor-outbound-pg`): one connection pool per
//! address (and CA root), TLS unless `sslmode=disable`, statements run with
//! `query_raw`, rows converted one at a time as they arrive, columns taken
//! from the first row, and every failure reported with the error variant
//! Spin uses for it.
//!
//! Every address is checked against the component's `allowed_outbound_hosts`
//! before any network I/O (Spin skips the check in the synchronous
//! `connection-builder.build`; this runtime checks there too — never more
//! permissive). Pools use `RecyclingMethod::Clean`, as Spin's do, so session
//! state does not leak between requests, and have no timeouts, as Spin's
//! have none: a server that stops answering holds a statement for ever, so
//! components bound their calls themselves. One pool of `--pg-pool-size`
//! connections per address serves every component (Spin: 64 per component
//! and address).

use anyhow::{Context, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::{Stream, StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio_postgres::config::{Host, SslMode};
use wasmtime::component::{Accessor, FutureReader, HasData, Resource, StreamReader};

use super::channel_stream::ChannelStream;
use super::table::Table;
use crate::allowed_hosts::AllowedHosts;
use crate::bindings::spin::postgres::postgres::{
    self as pg, Column, DbError, DbValue, Error, ParameterValue, QueryError, Row, RowSet,
};
use crate::host::pg_types;

/// Spin's `MAX_HOST_BUFFERED_BYTES` (`crates/world/src/lib.rs`): the bound on
/// a buffered result set, and on any one row of a streamed one.
const MAX_RESULT_BYTES: usize = 128 << 20;
/// Open connections and builders one instance may hold: Spin's resource table
/// default.
const MAX_HANDLES_PER_INSTANCE: usize = 1024;

/// Pools by address and CA root, shared by every instance. Behind a `std`
/// mutex because it is held only to look up or insert, never across an await.
pub struct PgPools {
    pools: Mutex<HashMap<(String, Option<String>), Pool>>,
    size: usize,
}

impl PgPools {
    pub fn new(size: usize) -> Self {
        Self { pools: Mutex::new(HashMap::new()), size }
    }

    fn pool(&self, address: &str, root_ca: Option<&RootCa>) -> Result<Pool> {
        let key = (address.to_owned(), root_ca.map(|c| c.pem.clone()));
        let mut pools = self.pools.lock().unwrap();
        if let Some(p) = pools.get(&key) {
            return Ok(p.clone());
        }
        let config: tokio_postgres::Config = address.parse().context("parsing Postgres connection string")?;
        let recycling = ManagerConfig { recycling_method: RecyclingMethod::Clean };
        let manager = if config.get_ssl_mode() == SslMode::Disable {
            Manager::from_config(config, tokio_postgres::NoTls, recycling)
        } else {
            // Spin verifies the server's certificate against the system roots
            // (and a CA root the guest set) whenever TLS is not disabled.
            let mut tls = native_tls::TlsConnector::builder();
            if let Some(ca) = root_ca {
                tls.add_root_certificate(ca.certificate.clone());
            }
            Manager::from_config(config, postgres_native_tls::MakeTlsConnector::new(tls.build()?), recycling)
        };
        let pool = Pool::builder(manager)
            .max_size(self.size)
            .runtime(Runtime::Tokio1)
            .build()
            .context("building Postgres connection pool")?;
        pools.insert(key, pool.clone());
        Ok(pool)
    }

    async fn connect(&self, address: &str, root_ca: Option<&RootCa>) -> Result<Client, Error> {
        async { anyhow::Ok(Arc::new(self.pool(address, root_ca)?.get().await?)) }
            .await
            .map_err(|e| Error::ConnectionFailed(format!("{e:?}")))
    }
}

type Client = Arc<deadpool_postgres::Object>;

#[derive(Clone)]
struct RootCa {
    pem: String,
    certificate: native_tls::Certificate,
}

struct Builder {
    address: String,
    root_ca: Option<RootCa>,
}

/// One instance's PostgreSQL state.
pub struct PgState {
    pub allowed: Arc<AllowedHosts>,
    pub pools: Arc<PgPools>,
    connections: Table<Client>,
    builders: Table<Builder>,
}

impl PgState {
    pub fn new(allowed: Arc<AllowedHosts>, pools: Arc<PgPools>) -> Self {
        Self {
            allowed,
            pools,
            connections: Table::new(MAX_HANDLES_PER_INSTANCE),
            builders: Table::new(MAX_HANDLES_PER_INSTANCE),
        }
    }

    fn client(&self, rep: u32) -> Result<Client, Error> {
        self.connections.get(rep).cloned().ok_or_else(|| Error::ConnectionFailed("no connection found".into()))
    }

    fn builder(&self, rep: u32) -> Result<(String, Option<RootCa>), Error> {
        let b = self.builders.get(rep).ok_or_else(|| Error::ConnectionFailed("no builder found".into()))?;
        Ok((b.address.clone(), b.root_ca.clone()))
    }

    fn push(&mut self, client: Client) -> Result<Resource<pg::Connection>, Error> {
        self.connections
            .push(client)
            .map(Resource::new_own)
            .map_err(|()| Error::ConnectionFailed("too many connections".into()))
    }
}

/// Every TCP host of a connection string (URL or key/value form) must be
/// allowed, with the port at its index (or the only port): Spin's
/// `AllowedHostChecker::ensure_address_allowed`, message for message, and
/// so must every `hostaddr`, which Spin does not check.
fn ensure_allowed(allowed: &AllowedHosts, address: &str) -> Result<(), Error> {
    let config = address.parse::<tokio_postgres::Config>().map_err(|e| Error::ConnectionFailed(e.to_string()))?;
    let ports = config.get_ports();
    for (i, host) in config.get_hosts().iter().enumerate() {
        match host {
            Host::Tcp(h) => {
                let port = ports.get(i).or(if ports.len() == 1 { ports.first() } else { None });
                let url = match port {
                    Some(p) => format!("{h}:{p}"),
                    None => h.clone(),
                };
                if !allowed.allows_url(&format!("postgres://{url}"), "postgres") {
                    return Err(Error::ConnectionFailed(format!("address postgres://{url} is not permitted")));
                }
            }
            Host::Unix(_) => return Err(Error::ConnectionFailed("Unix sockets are not supported on WebAssembly".into())),
        }
    }
    // tokio-postgres dials a `hostaddr` instead of the `host` beside it (the
    // host then only names the server for TLS), so the address actually
    // dialled must be allowed too. Spin 4.0.2 checks the hosts alone and
    // would let `host=allowed hostaddr=elsewhere` through: this runtime is
    // stricter there, never more permissive.
    for (i, addr) in config.get_hostaddrs().iter().enumerate() {
        let port = ports.get(i).or(if ports.len() == 1 { ports.first() } else { None });
        let url = match (addr, port) {
            (std::net::IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
            (std::net::IpAddr::V6(v6), None) => format!("[{v6}]"),
            (v4, Some(p)) => format!("{v4}:{p}"),
            (v4, None) => v4.to_string(),
        };
        if !allowed.allows_url(&format!("postgres://{url}"), "postgres") {
            return Err(Error::ConnectionFailed(format!("address postgres://{url} is not permitted")));
        }
    }
    Ok(())
}

pub struct PgData;

impl HasData for PgData {
    type Data<'a> = &'a mut PgState;
}

/// Statement parameters as tokio-postgres takes them. `execute` reports a
/// value it cannot convert as `value-conversion-failed`, `query` as
/// `bad-parameter`: Spin's `client.rs` does exactly that.
fn convert_params(params: &[ParameterValue], as_error: fn(String) -> Error) -> Result<Vec<pg_types::SqlParam>, Error> {
    params.iter().map(pg_types::parameter).collect::<Result<_>>().map_err(|e| as_error(format!("{e:?}")))
}

async fn execute(client: &Client, statement: &str, params: &[ParameterValue]) -> Result<u64, Error> {
    let params = convert_params(params, Error::ValueConversionFailed)?;
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
    client.execute(statement, &refs).await.map_err(query_failed)
}

type Rows = Pin<Box<dyn Stream<Item = Result<(Option<Vec<Column>>, Vec<DbValue>), Error>> + Send>>;

/// Runs a statement and yields its rows converted one by one; the first row
/// also carries the columns. A row that does not convert ends the stream
/// with `query-failed(text(..))`, as Spin's `query_failed_anyhow`.
async fn query_stream(client: &Client, statement: &str, params: &[ParameterValue]) -> Result<Rows, Error> {
    let params = convert_params(params, Error::BadParameter)?;
    let rows = client.query_raw(statement, params).await.map_err(query_failed)?;
    Ok(Box::pin(rows.enumerate().map(|(i, row)| {
        let row = row.map_err(query_failed)?;
        let columns = (i == 0).then(|| pg_types::columns(&row));
        let values = pg_types::row(&row).map_err(|e| Error::QueryFailed(QueryError::Text(format!("{e:?}"))))?;
        Ok((columns, values))
    })))
}

fn row_size(row: &[DbValue]) -> usize {
    row.iter().map(pg_types::memory_size).sum()
}

/// The synchronous `query`: the whole result buffered, bounded as a whole.
async fn query(client: &Client, statement: &str, params: &[ParameterValue]) -> Result<RowSet, Error> {
    let mut stream = query_stream(client, statement, params).await?;
    let mut columns = None;
    let mut rows = Vec::new();
    let mut bytes = std::mem::size_of::<RowSet>();
    async {
        while let Some((cols, row)) = stream.try_next().await.map_err(|e| anyhow::anyhow!("{e:?}"))? {
            if cols.is_some() {
                columns = cols;
            }
            bytes += row_size(&row);
            anyhow::ensure!(bytes <= MAX_RESULT_BYTES, "query result exceeds limit of {MAX_RESULT_BYTES} bytes");
            rows.push(row);
        }
        Ok(())
    }
    .await
    .map_err(|e| Error::QueryFailed(QueryError::Text(format!("{e:?}"))))?;
    if rows.is_empty() {
        return Err(Error::QueryFailed(QueryError::Text(NO_ROWS_REFUSED.into())));
    }
    Ok(RowSet { columns: columns.unwrap_or_default(), rows })
}

/// Spin 4.0.x's synchronous `query` never returns when the statement matches
/// no rows (spinframework/spin#3671, fixed after 4.0.2: it waits for the
/// columns of a first row that never comes), so a component that relies on
/// an empty answer hangs there. This runtime fails the call instead, at
/// once and by name — never more permissive, and a test sees it rather
/// than timing out. `query-async` (the 0.3 build's) answers empty results
/// in both.
pub const NO_ROWS_REFUSED: &str =
    "no rows: Spin 4.0.2's synchronous query never returns when no row matches (spinframework/spin#3671); lvd-runtime refuses it";

/// The streaming `query-async`: rows flow through a small channel as they
/// arrive (each row bounded on its own, as in Spin), and the outcome comes
/// after the last row.
struct QueryAsync {
    columns: Vec<Column>,
    rows: tokio::sync::mpsc::Receiver<Row>,
    outcome: tokio::sync::oneshot::Receiver<Result<(), Error>>,
}

async fn query_async(client: &Client, statement: &str, params: &[ParameterValue]) -> Result<QueryAsync, Error> {
    let mut stream = query_stream(client, statement, params).await?;
    let (rows_tx, rows) = tokio::sync::mpsc::channel(4);
    let (outcome_tx, outcome) = tokio::sync::oneshot::channel();
    let (columns_tx, columns) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut columns_tx = Some(columns_tx);
        let result = loop {
            match stream.next().await {
                None => break Ok(()),
                Some(Err(e)) => break Err(e),
                Some(Ok((cols, row))) => {
                    if let (Some(cols), Some(tx)) = (cols, columns_tx.take()) {
                        let _ = tx.send(cols);
                    }
                    if row_size(&row) > MAX_RESULT_BYTES {
                        break Err(Error::QueryFailed(QueryError::Text(format!(
                            "query result exceeds limit of {MAX_RESULT_BYTES} bytes"
                        ))));
                    }
                    if let Err(e) = rows_tx.send(row).await {
                        break Err(Error::QueryFailed(QueryError::Text(format!("async error: {e}"))));
                    }
                }
            }
        };
        drop(columns_tx);
        let _ = outcome_tx.send(result);
    });
    Ok(QueryAsync { columns: columns.await.unwrap_or_default(), rows, outcome })
}

fn query_failed(e: tokio_postgres::Error) -> Error {
    let text = format!("{e:?}");
    Error::QueryFailed(match e.as_db_error() {
        None => QueryError::Text(text),
        Some(db) => QueryError::DbError(DbError {
            as_text: text,
            severity: db.severity().to_owned(),
            code: db.code().code().to_owned(),
            message: db.message().to_owned(),
            detail: db.detail().map(str::to_owned),
            extras: [
                ("column", db.column().map(str::to_owned)),
                ("constraint", db.constraint().map(str::to_owned)),
                ("routine", db.routine().map(str::to_owned)),
                ("hint", db.hint().map(str::to_owned)),
                ("table", db.table().map(str::to_owned)),
                ("datatype", db.datatype().map(str::to_owned)),
                ("schema", db.schema().map(str::to_owned)),
                ("file", db.file().map(str::to_owned)),
                ("line", db.line().map(|l| l.to_string())),
                ("where_", db.where_().map(str::to_owned)),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect(),
        }),
    })
}

impl pg::Host for PgState {
    fn convert_error(&mut self, err: Error) -> wasmtime::Result<Error> {
        Ok(err)
    }
}

impl pg::HostConnectionBuilder for PgState {
    async fn new(&mut self, address: String) -> wasmtime::Result<Resource<pg::ConnectionBuilder>> {
        let rep = self
            .builders
            .push(Builder { address, root_ca: None })
            .map_err(|()| wasmtime::format_err!("out of builder table space"))?;
        Ok(Resource::new_own(rep))
    }

    async fn set_ca_root(&mut self, builder: Resource<pg::ConnectionBuilder>, certificate: String) -> Result<(), Error> {
        let parsed = native_tls::Certificate::from_pem(certificate.as_bytes())
            .context("invalid root certificate")
            .map_err(|e| Error::Other(format!("invalid root certificate: {e}")))?;
        let b = self.builders.get_mut(builder.rep()).ok_or_else(|| Error::ConnectionFailed("no builder found".into()))?;
        b.root_ca = Some(RootCa { pem: certificate, certificate: parsed });
        Ok(())
    }

    async fn build(&mut self, builder: Resource<pg::ConnectionBuilder>) -> Result<Resource<pg::Connection>, Error> {
        let (address, root_ca) = self.builder(builder.rep())?;
        ensure_allowed(&self.allowed, &address)?;
        let client = self.pools.connect(&address, root_ca.as_ref()).await?;
        self.push(client)
    }

    async fn drop(&mut self, builder: Resource<pg::ConnectionBuilder>) -> wasmtime::Result<()> {
        self.builders.remove(builder.rep());
        Ok(())
    }
}

impl pg::HostConnection for PgState {
    async fn open(&mut self, address: String) -> Result<Resource<pg::Connection>, Error> {
        ensure_allowed(&self.allowed, &address)?;
        let client = self.pools.connect(&address, None).await?;
        self.push(client)
    }

    async fn query(
        &mut self,
        connection: Resource<pg::Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> Result<RowSet, Error> {
        let client = self.client(connection.rep())?;
        query(&client, &statement, &params).await
    }

    async fn execute(
        &mut self,
        connection: Resource<pg::Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> Result<u64, Error> {
        let client = self.client(connection.rep())?;
        execute(&client, &statement, &params).await
    }

    async fn drop(&mut self, connection: Resource<pg::Connection>) -> wasmtime::Result<()> {
        self.connections.remove(connection.rep());
        Ok(())
    }
}

impl PgData {
    async fn open_checked<T>(
        accessor: &Accessor<T, Self>,
        address: String,
        root_ca: Option<RootCa>,
    ) -> Result<Resource<pg::Connection>, Error> {
        let pools = accessor.with(|mut a| {
            let s = a.get();
            ensure_allowed(&s.allowed, &address)?;
            Ok::<_, Error>(s.pools.clone())
        })?;
        let client = pools.connect(&address, root_ca.as_ref()).await?;
        accessor.with(|mut a| a.get().push(client))
    }
}

impl pg::HostConnectionBuilderWithStore for PgData {
    async fn build_async<T>(
        accessor: &Accessor<T, Self>,
        builder: Resource<pg::ConnectionBuilder>,
    ) -> Result<Resource<pg::Connection>, Error> {
        let (address, root_ca) = accessor.with(|mut a| a.get().builder(builder.rep()))?;
        Self::open_checked(accessor, address, root_ca).await
    }
}

impl pg::HostConnectionWithStore for PgData {
    async fn open_async<T>(accessor: &Accessor<T, Self>, address: String) -> Result<Resource<pg::Connection>, Error> {
        Self::open_checked(accessor, address, None).await
    }

    async fn execute_async<T>(
        accessor: &Accessor<T, Self>,
        connection: Resource<pg::Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> Result<u64, Error> {
        let client = accessor.with(|mut a| a.get().client(connection.rep()))?;
        execute(&client, &statement, &params).await
    }

    #[allow(clippy::type_complexity)]
    async fn query_async<T>(
        accessor: &Accessor<T, Self>,
        connection: Resource<pg::Connection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> Result<(Vec<Column>, StreamReader<Row>, FutureReader<Result<(), Error>>), Error> {
        let client = accessor.with(|mut a| a.get().client(connection.rep()))?;
        let QueryAsync { columns, rows, outcome } = query_async(&client, &statement, &params).await?;
        let rows = ChannelStream(rows);
        let outcome = async move {
            Ok::<_, wasmtime::Error>(outcome.await.unwrap_or_else(|_| Err(Error::Other("the query task ended".into()))))
        };
        accessor
            .with(|mut a| {
                let rows = StreamReader::new(&mut a, rows)?;
                let done = FutureReader::new(&mut a, outcome)?;
                wasmtime::Result::Ok((columns, rows, done))
            })
            .map_err(|e: wasmtime::Error| Error::Other(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_host_by_host_with_spins_messages() {
        let allowed = AllowedHosts::parse(["postgres://db.internal:5433"], &[]).unwrap();
        assert!(ensure_allowed(&allowed, "postgres://u@db.internal:5433/x?sslmode=disable").is_ok());
        assert!(ensure_allowed(&allowed, "host=db.internal port=5433 user=u").is_ok());
        match ensure_allowed(&allowed, "postgres://u@db.internal/x") {
            Err(Error::ConnectionFailed(m)) => assert_eq!(m, "address postgres://db.internal:5432 is not permitted"),
            other => panic!("{other:?}"),
        }
        match ensure_allowed(&allowed, "host=/run/postgresql user=u") {
            Err(Error::ConnectionFailed(m)) => assert!(m.contains("Unix sockets"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
