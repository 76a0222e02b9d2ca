//! `runtime-config.toml`: where each key-value store label lives.
//!
//! Supported, as in Spin: `[key_value_store.<label>]` with `type = "redis"`
//! (`url`) or `type = "spin"` (SQLite, `path`). A label the file does not
//! declare falls back to Spin's default: `default` is a SQLite file under
//! `.spin/` beside the manifest; any other label does not exist.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntimeConfig {
    #[serde(default)]
    key_value_store: BTreeMap<String, RawStore>,
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
    Sqlite { path: PathBuf },
}

#[derive(Debug, Default)]
pub struct RuntimeConfig {
    pub key_value_stores: BTreeMap<String, StoreConfig>,
}

impl RuntimeConfig {
    /// Reads `path` (when given) and adds Spin's default store for `default`
    /// when the file does not configure that label.
    pub fn load(path: Option<&Path>, app_root: &Path) -> Result<Self> {
        let (raw, base) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("failed to read runtime config {}", p.display()))?;
                let raw: RawRuntimeConfig = toml::from_str(&text)
                    .with_context(|| format!("failed to parse runtime config {}", p.display()))?;
                (raw, p.parent().map(Path::to_path_buf).unwrap_or_default())
            }
            None => (RawRuntimeConfig::default(), app_root.to_path_buf()),
        };
        let mut key_value_stores = BTreeMap::new();
        for (label, store) in raw.key_value_store {
            let cfg = match store {
                RawStore::Redis { url } => {
                    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
                        bail!("key_value_store.{label}: url must be redis:// or rediss://");
                    }
                    StoreConfig::Redis { url }
                }
                RawStore::Spin { path } => StoreConfig::Sqlite {
                    path: base.join(path.unwrap_or_else(|| PathBuf::from(".spin/sqlite_key_value.db"))),
                },
            };
            key_value_stores.insert(label, cfg);
        }
        key_value_stores.entry("default".to_owned()).or_insert_with(|| StoreConfig::Sqlite {
            path: app_root.join(".spin/sqlite_key_value.db"),
        });
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
        let rc = RuntimeConfig::load(Some(&file), Path::new("/app")).unwrap();
        assert_eq!(rc.key_value_stores["cache"], StoreConfig::Redis { url: "redis://h:1/0".into() });
        assert_eq!(
            rc.key_value_stores["default"],
            StoreConfig::Sqlite { path: PathBuf::from("/app/.spin/sqlite_key_value.db") }
        );
    }

    #[test]
    fn an_unknown_store_type_is_refused() {
        let raw: Result<RawRuntimeConfig, _> = toml::from_str("[key_value_store.x]\ntype = \"dynamo\"\n");
        assert!(raw.is_err());
    }
}
