//! `runtime-config.toml`: where each key-value store label lives, resolved
//! as Spin 4.0.2 resolves it (`crates/runtime-config/src/lib.rs`).
//!
//! Supported: `[key_value_store.<label>]` with `type = "redis"` (`url`) or
//! `type = "spin"` (SQLite; `path` relative to this file's folder, and no
//! `path` means an in-memory database), and `state_dir`. The `default` label
//! always exists: unless the file configures it, it is the SQLite file
//! `sqlite_key_value.db` in the state directory — `--state-dir`, else the
//! file's `state_dir`, else `.spin/` beside the manifest; an empty value
//! means none, and then an in-memory database. Any other label exists only
//! if the file declares it. Keys Spin knows but this runtime does not
//! support (other store types, variable providers, …) are refused.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntimeConfig {
    #[serde(default)]
    key_value_store: BTreeMap<String, RawStore>,
    state_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawStore {
    Redis { url: String },
    Spin { path: Option<PathBuf> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    Redis { url: String },
    /// A SQLite database; `None` is in memory (gone when the runtime stops).
    Sqlite { path: Option<PathBuf> },
}

#[derive(Debug, Default)]
pub struct RuntimeConfig {
    pub key_value_stores: BTreeMap<String, StoreConfig>,
}

/// `--state-dir` as given: absent, or a path (empty: no state directory).
pub type StateDirArg<'a> = Option<&'a str>;

impl RuntimeConfig {
    pub fn load(path: Option<&Path>, app_root: &Path, state_dir: StateDirArg<'_>) -> Result<Self> {
        let (raw, base) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("failed to read runtime config {}", p.display()))?;
                let raw: RawRuntimeConfig = toml::from_str(&text)
                    .with_context(|| format!("failed to parse runtime config {}", p.display()))?;
                (raw, p.parent().map(Path::to_path_buf))
            }
            None => (RawRuntimeConfig::default(), None),
        };
        let state_dir = match state_dir.or(raw.state_dir.as_deref()) {
            Some("") => None,
            Some(dir) => Some(std::path::absolute(dir).with_context(|| format!("invalid state directory {dir:?}"))?),
            None => Some(app_root.join(".spin")),
        };
        let mut key_value_stores = BTreeMap::new();
        for (label, store) in raw.key_value_store {
            let cfg = match store {
                RawStore::Redis { url } => {
                    redis::parse_redis_url(&url).with_context(|| format!("key_value_store.{label}: invalid Redis URL"))?;
                    if !matches!(url::Url::parse(&url).map(|u| u.scheme().to_owned()).as_deref(), Ok("redis")) {
                        bail!("key_value_store.{label}: only redis:// URLs are supported by this runtime (no TLS, no sockets)");
                    }
                    StoreConfig::Redis { url }
                }
                RawStore::Spin { path } => StoreConfig::Sqlite {
                    path: path.map(|p| match &base {
                        Some(base) if p.is_relative() => base.join(p),
                        _ => p,
                    }),
                },
            };
            key_value_stores.insert(label, cfg);
        }
        key_value_stores
            .entry("default".to_owned())
            .or_insert_with(|| StoreConfig::Sqlite { path: state_dir.map(|d| d.join("sqlite_key_value.db")) });
        Ok(Self { key_value_stores })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_stores_are_read_and_default_falls_back_to_sqlite() {
        let dir = std::env::temp_dir().join(format!("lvd-rc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rc.toml");
        std::fs::write(&file, "[key_value_store.cache]\ntype = \"redis\"\nurl = \"redis://h:1/0\"\n").unwrap();
        let rc = RuntimeConfig::load(Some(&file), Path::new("/app"), None).unwrap();
        assert_eq!(rc.key_value_stores["cache"], StoreConfig::Redis { url: "redis://h:1/0".into() });
        assert_eq!(
            rc.key_value_stores["default"],
            StoreConfig::Sqlite { path: Some(PathBuf::from("/app/.spin/sqlite_key_value.db")) }
        );
        let rc = RuntimeConfig::load(None, Path::new("/app"), Some("/state")).unwrap();
        assert_eq!(rc.key_value_stores["default"], StoreConfig::Sqlite { path: Some(PathBuf::from("/state/sqlite_key_value.db")) });
        let rc = RuntimeConfig::load(None, Path::new("/app"), Some("")).unwrap();
        assert_eq!(rc.key_value_stores["default"], StoreConfig::Sqlite { path: None }, "no state directory: in memory");
    }

    #[test]
    fn a_spin_store_is_in_memory_without_a_path_and_relative_to_the_file_with_one() {
        let dir = std::env::temp_dir().join(format!("lvd-rc2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rc.toml");
        std::fs::write(&file, "[key_value_store.a]\ntype = \"spin\"\n[key_value_store.b]\ntype = \"spin\"\npath = \"b.db\"\n").unwrap();
        let rc = RuntimeConfig::load(Some(&file), Path::new("/app"), None).unwrap();
        assert_eq!(rc.key_value_stores["a"], StoreConfig::Sqlite { path: None });
        assert_eq!(rc.key_value_stores["b"], StoreConfig::Sqlite { path: Some(dir.join("b.db")) });
    }

    #[test]
    fn an_unknown_store_type_is_refused() {
        let raw: Result<RawRuntimeConfig, _> = toml::from_str("[key_value_store.x]\ntype = \"dynamo\"\n");
        assert!(raw.is_err());
    }
}
