//! Application variables, resolved as Spin's default (environment) provider
//! does (`crates/variables-env`): `SPIN_VARIABLE_<NAME>` from the
//! environment, else from `.env` in the working directory, else the manifest
//! default. A value that is not UTF-8 is an error, not a miss. A `required`
//! variable with no value stops the runtime at start, naming the variable —
//! never at the first request that happens to need it.

use anyhow::{Result, bail};
use std::collections::BTreeMap;

use crate::manifest::VariableDecl;

/// Resolved application variables. Secret values are kept out of `Debug`.
pub struct AppVariables {
    values: BTreeMap<String, String>,
    secret: Vec<String>,
}

impl std::fmt::Debug for AppVariables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.values {
            if self.secret.contains(k) {
                m.entry(k, &"<secret>");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

impl AppVariables {
    pub fn resolve(
        decls: &BTreeMap<String, VariableDecl>,
        env: impl Fn(&str) -> Result<Option<String>>,
    ) -> Result<Self> {
        let mut values = BTreeMap::new();
        let mut missing = Vec::new();
        for (name, decl) in decls {
            match env(&env_key(name))?.or_else(|| decl.default.clone()) {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None => missing.push(name.as_str()),
            }
        }
        if !missing.is_empty() {
            // Spin's words, and where to set each.
            let hints: Vec<String> = missing.iter().map(|n| env_key(n)).collect();
            bail!("no provider resolved required variable(s): {missing:?} (set {})", hints.join(", "));
        }
        let secret = decls.iter().filter(|(_, d)| d.secret).map(|(n, _)| n.clone()).collect();
        Ok(Self { values, secret })
    }

    pub fn get(&self, name: &str) -> Result<String> {
        match self.values.get(name) {
            Some(v) => Ok(v.clone()),
            None => bail!("no application variable {name:?}"),
        }
    }
}

/// Spin's environment provider: the process environment, then `.env` in
/// the working directory (read once).
pub fn from_environment() -> impl Fn(&str) -> Result<Option<String>> {
    let dotenv = std::sync::OnceLock::<Result<BTreeMap<String, String>, String>>::new();
    move |key| match std::env::var(key) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => {
            let file = dotenv.get_or_init(|| {
                dotenvy::from_path_iter(".env")
                    .into_iter()
                    .flatten()
                    .collect::<Result<BTreeMap<_, _>, _>>()
                    .map_err(|e| format!("failed to read .env: {e}"))
            });
            match file {
                Ok(m) => Ok(m.get(key).cloned()),
                Err(e) => bail!("{e}"),
            }
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("failed to resolve env var {key}"))),
    }
}

/// The environment variable Spin's env provider reads for `name`.
pub fn env_key(name: &str) -> String {
    format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decls() -> BTreeMap<String, VariableDecl> {
        let mut m = BTreeMap::new();
        m.insert(
            "jwt_secret".into(),
            VariableDecl { default: None, required: true, secret: true, description: None },
        );
        m.insert(
            "db_host".into(),
            VariableDecl { default: Some("localhost".into()), required: false, secret: false, description: None },
        );
        m
    }

    #[test]
    fn the_environment_overrides_the_default() {
        let v = AppVariables::resolve(&decls(), |k| {
            Ok(match k {
                "SPIN_VARIABLE_DB_HOST" => Some("db".into()),
                "SPIN_VARIABLE_JWT_SECRET" => Some("s".into()),
                _ => None,
            })
        })
        .unwrap();
        assert_eq!(v.get("db_host").unwrap(), "db");
        assert!(!format!("{v:?}").contains("\"s\""), "secret leaked into Debug");
    }

    #[test]
    fn a_missing_required_variable_fails_naming_it() {
        let err = AppVariables::resolve(&decls(), |_| Ok(None)).unwrap_err().to_string();
        assert!(err.contains("[\"jwt_secret\"]") && err.contains("SPIN_VARIABLE_JWT_SECRET"), "{err}");
    }
}
