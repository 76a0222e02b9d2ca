//! `spin:postgres/postgres@4.2.0` on tokio-postgres with one connection pool
//! per address, shared by every instance of every component (Spin's model).
//!
//! Every address is checked against the component's `allowed_outbound_hosts`
//! before any network I/O. A guest-visible connection holds one pooled client
//! until the guest drops it; pools use `RecyclingMethod::Clean`, as Spin does,
//! so session state does not leak between requests.

use anyhow::Result;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::NoTls;
use wasmtime::component::{Accessor, FutureReader, HasData, Resource, StreamReader};

use super::table::Table;
use crate::allowed_hosts::AllowedHosts;
use crate::bindings::spin::postgres::postgres::{
    self as pg, Column, DbError, Error, ParameterValue, QueryError, Row, RowSet,
};
use crate::host::pg_types;

/// Result sets larger than this are refused rather than buffered (Spin's limit).
const MAX_RESULT_BYTES: usize = 128 << 20;
/// Open connections one instance may hold at once.
const MAX_CONNECTIONS_PER_INSTANCE: usize = 64;

/// Pools by address, shared by every instance. Behind a `std` mutex because
/// it is held only to look up or insert, never across an await.
pub struct PgPools {
    pools: Mutex<HashMap<String, Pool>>,
    size: usize,
}

impl PgPools {
    pub fn new(size: usize) -> Self {
        Self { pools: Mutex::new(HashMap::new()), size }
    }

    fn pool(&self, address: &str) -> Result<Pool, Error> {
        let mut pools = self.pools.lock().unwrap();
        if let Some(p) = pools.get(address) {
            return Ok(p.clone());
        }
        let config: tokio_postgres::Config =
            address.parse().map_err(|e| Error::ConnectionFailed(format!("{e}")))?;
        let mgr = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Clean });
        let pool = Pool::builder(mgr)
            .max_size(self.size)
            .runtime(Runtime::Tokio1)
            // A database that is down must surface as an error within the
            // readiness budget, not as a hung request.
            .create_timeout(Some(Duration::from_secs(1)))
            .wait_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(1)))
            .build()
            .map_err(|e| Error::Other(format!("failed to build connection pool: {e}")))?;
        pools.insert(address.to_owned(), pool.clone());
        Ok(pool)
    }

    async fn connect(&self, address: &str) -> Result<Client, Error> {
        let pool = self.pool(address)?;
        let client = pool.get().await.map_err(|e| Error::ConnectionFailed(format!("{e}")))?;
        Ok(Arc::new(client))
    }
}

type Client = Arc<deadpool_postgres::Object>;

/// One instance's PostgreSQL state.
pub struct PgState {
    pub allowed: Arc<AllowedHosts>,
    pub pools: Arc<PgPools>,
    connections: Table<Client>,
    builders: Table<String>,
}

impl PgState {
    pub fn new(allowed: Arc<AllowedHosts>, pools: Arc<PgPools>) -> Self {
        Self {
            allowed,
            pools,
            connections: Table::new(MAX_CONNECTIONS_PER_INSTANCE),
            builders: Table::new(MAX_CONNECTIONS_PER_INSTANCE),
        }
    }

    fn check(&self, address: &str) -> Result<(), Error> {
        if self.allowed.allows_postgres(address) {
            Ok(())
        } else {
            Err(Error::ConnectionFailed(format!(
                "address {} is not permitted by allowed_outbound_hosts",
                redact(address)
            )))
        }
    }

    fn client(&self, rep: u32) -> Result<Client, Error> {
        self.connections.get(rep).cloned().ok_or_else(|| Error::Other("unknown connection".into()))
    }

    fn push(&mut self, client: Client) -> Result<Resource<pg::Connection>, Error> {
        self.connections
            .push(client)
            .map(Resource::new_own)
            .map_err(|()| Error::ConnectionFailed("too many connections".into()))
    }
}

/// Keeps credentials out of error text: only scheme-less host information.
fn redact(address: &str) -> String {
    match address.parse::<tokio_postgres::Config>() {
        Ok(c) => format!("{:?}:{:?}", c.get_hosts(), c.get_ports()),
        Err(_) => "(unparsable)".into(),
    }
}

pub struct PgData;

impl HasData for PgData {
    type Data<'a> = &'a mut PgState;
}

async fn execute(client: &Client, statement: &str, params: &[ParameterValue]) -> Result<u64, Error> {
    let params = convert_params(params)?;
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
    client.execute(statement, &refs).await.map_err(query_failed)
}

async fn query(client: &Client, statement: &str, params: &[ParameterValue]) -> Result<RowSet, Error> {
    let params = convert_params(params)?;
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
    let stmt = client.prepare(statement).await.map_err(query_failed)?;
    let rows = client.query(&stmt, &refs).await.map_err(query_failed)?;
    let columns: Vec<Column> = pg_types::columns(stmt.columns());
    let mut out = Vec::with_capacity(rows.len());
    let mut bytes = 0usize;
    for r in &rows {
        let converted = pg_types::row(r).map_err(|e| Error::ValueConversionFailed(format!("{e:#}")))?;
        bytes += converted.iter().map(value_size).sum::<usize>();
        if bytes > MAX_RESULT_BYTES {
            return Err(Error::QueryFailed(QueryError::Text(format!(
                "query result exceeds limit of {MAX_RESULT_BYTES} bytes"
            ))));
        }
        out.push(converted);
    }
    Ok(RowSet { columns, rows: out })
}

fn value_size(v: &pg::DbValue) -> usize {
    use pg::DbValue as V;
    std::mem::size_of::<V>()
        + match v {
            V::Str(s) | V::Uuid(s) | V::Decimal(s) => s.len(),
            V::Binary(b) | V::Jsonb(b) | V::Unsupported(b) => b.len(),
            V::ArrayStr(a) | V::ArrayDecimal(a) => a.iter().map(|s| s.as_ref().map_or(0, String::len) + 24).sum(),
            V::ArrayInt32(a) => a.len() * 8,
            V::ArrayInt64(a) => a.len() * 16,
            _ => 0,
        }
}

fn convert_params(params: &[ParameterValue]) -> Result<Vec<pg_types::SqlParam>, Error> {
    params
        .iter()
        .map(pg_types::parameter)
        .collect::<Result<_>>()
        .map_err(|e| Error::ValueConversionFailed(format!("{e:#}")))
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
                ("column", db.column()),
                ("constraint", db.constraint()),
                ("table", db.table()),
                ("schema", db.schema()),
                ("hint", db.hint()),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
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
        let rep = self.builders.push(address).map_err(|()| wasmtime::format_err!("too many builders"))?;
        Ok(Resource::new_own(rep))
    }

    async fn set_ca_root(
        &mut self,
        _builder: Resource<pg::ConnectionBuilder>,
        _certificate: String,
    ) -> Result<(), Error> {
        Err(Error::Other("custom CA roots are not supported by the local runtime (it connects without TLS)".into()))
    }

    async fn build(&mut self, builder: Resource<pg::ConnectionBuilder>) -> Result<Resource<pg::Connection>, Error> {
        let address = self.builders.get(builder.rep()).cloned().ok_or_else(|| Error::Other("unknown builder".into()))?;
        self.check(&address)?;
        let client = self.pools.connect(&address).await?;
        self.push(client)
    }

    async fn drop(&mut self, builder: Resource<pg::ConnectionBuilder>) -> wasmtime::Result<()> {
        self.builders.remove(builder.rep());
        Ok(())
    }
}

impl pg::HostConnection for PgState {
    async fn open(&mut self, address: String) -> Result<Resource<pg::Connection>, Error> {
        self.check(&address)?;
        let client = self.pools.connect(&address).await?;
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

impl pg::HostConnectionBuilderWithStore for PgData {
    async fn build_async<T>(
        accessor: &Accessor<T, Self>,
        builder: Resource<pg::ConnectionBuilder>,
    ) -> Result<Resource<pg::Connection>, Error> {
        let (address, pools) = accessor.with(|mut a| {
            let s = a.get();
            let address = s.builders.get(builder.rep()).cloned().ok_or_else(|| Error::Other("unknown builder".into()))?;
            s.check(&address)?;
            Ok::<_, Error>((address, s.pools.clone()))
        })?;
        let client = pools.connect(&address).await?;
        accessor.with(|mut a| a.get().push(client))
    }
}

impl pg::HostConnectionWithStore for PgData {
    async fn open_async<T>(accessor: &Accessor<T, Self>, address: String) -> Result<Resource<pg::Connection>, Error> {
        let pools = accessor.with(|mut a| {
            let s = a.get();
            s.check(&address)?;
            Ok::<_, Error>(s.pools.clone())
        })?;
        let client = pools.connect(&address).await?;
        accessor.with(|mut a| a.get().push(client))
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
        let RowSet { columns, rows } = query(&client, &statement, &params).await?;
        accessor.with(|mut a| {
            let rows = StreamReader::new(&mut a, rows)?;
            let done = FutureReader::new(&mut a, async { Ok::<_, wasmtime::Error>(Ok::<(), Error>(())) })?;
            wasmtime::Result::Ok((columns, rows, done))
        })
        .map_err(|e: wasmtime::Error| Error::Other(format!("{e}")))
    }
}
