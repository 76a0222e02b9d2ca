//! `spin.toml` (manifest version 2), as much of it as Spin's loader accepts and
//! this app uses. Anything the runtime does not understand is an error, not
//! something to skip: silently ignoring a setting could make the local runtime
//! more permissive than Spin.

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::template::Template;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: u32,
    application: Application,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: Triggers,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

/// `[application]`; unknown keys (e.g. `[application.trigger.http] base`,
/// which Spin also refuses) are errors.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
}

/// An application variable. Spin requires exactly one of `default` and
/// `required = true`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariableDecl {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    /// Secret values are never logged.
    #[serde(default)]
    pub secret: bool,
    #[allow(dead_code)]
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Triggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTrigger {
    #[serde(default)]
    id: Option<String>,
    route: RouteConfig,
    component: String,
    #[serde(default)]
    executor: Option<toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RouteConfig {
    Route(String),
    Private(PrivateRoute),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivateRoute {
    private: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    source: String,
    #[allow(dead_code)]
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    build: Option<Build>,
}

/// `[component.<id>.build]`: how `spin build` / watch mode rebuild it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    pub command: String,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
}

/// The validated application.
#[derive(Debug)]
pub struct App {
    pub name: String,
    pub version: Option<String>,
    /// Directory of `spin.toml`; relative paths resolve against it.
    pub root: PathBuf,
    pub variables: BTreeMap<String, VariableDecl>,
    pub routes: Vec<HttpRoute>,
    pub components: BTreeMap<String, Component>,
}

#[derive(Debug, Clone)]
pub struct HttpRoute {
    pub route: String,
    pub component: String,
}

#[derive(Debug)]
pub struct Component {
    pub id: String,
    pub source: PathBuf,
    pub allowed_outbound_hosts: Vec<Template>,
    pub key_value_stores: Vec<String>,
    pub variables: BTreeMap<String, Template>,
    pub environment: BTreeMap<String, String>,
    pub build: Option<Build>,
}

impl App {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read manifest {}", path.display()))?;
        let raw: RawManifest = toml::from_str(&text)
            .with_context(|| format!("failed to parse manifest {}", path.display()))?;
        let root = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let root = if root.as_os_str().is_empty() { PathBuf::from(".") } else { root };
        Self::validate(raw, root)
    }

    fn validate(raw: RawManifest, root: PathBuf) -> Result<Self> {
        ensure!(
            raw.spin_manifest_version == 2,
            "spin_manifest_version {} is not supported (only 2)",
            raw.spin_manifest_version
        );
        for (name, decl) in &raw.variables {
            validate_variable_name(name)?;
            ensure!(
                decl.default.is_some() != decl.required,
                "variable {name:?} must have exactly one of `default` or `required = true`"
            );
        }

        let mut components = BTreeMap::new();
        for (id, c) in raw.component {
            check_id(&id, '-', false).map_err(|e| anyhow::anyhow!("invalid component id {id:?}: {e}"))?;
            for label in &c.key_value_stores {
                ensure!(
                    check_id(label, '-', false).is_ok() || check_id(label, '_', false).is_ok(),
                    "component {id:?}: key_value_stores label {label:?}: expected kebab-case or snake_case"
                );
            }
            let parse_templates = |what: &str, values: &[String]| -> Result<Vec<Template>> {
                values
                    .iter()
                    .map(|v| {
                        let t = Template::parse(v)
                            .with_context(|| format!("component {id:?}: invalid {what} {v:?}"))?;
                        t.check_references(&raw.variables)
                            .with_context(|| format!("component {id:?}: {what} {v:?}"))?;
                        Ok(t)
                    })
                    .collect()
            };
            let allowed_outbound_hosts =
                parse_templates("allowed_outbound_hosts entry", &c.allowed_outbound_hosts)?;
            let mut variables = BTreeMap::new();
            for (name, value) in &c.variables {
                validate_variable_name(name)?;
                let t = parse_templates("variable", std::slice::from_ref(value))?.remove(0);
                variables.insert(name.clone(), t);
            }
            ensure!(
                !c.source.contains("://"),
                "component {id:?}: only local file sources are supported, not {:?}",
                c.source
            );
            components.insert(
                id.clone(),
                Component {
                    source: root.join(&c.source),
                    allowed_outbound_hosts,
                    key_value_stores: c.key_value_stores,
                    variables,
                    environment: c.environment,
                    build: c.build,
                    id,
                },
            );
        }

        let mut routes = Vec::new();
        for t in raw.trigger.http {
            ensure!(
                t.executor.is_none(),
                "trigger for {:?}: only the default (component) executor is supported",
                t.component
            );
            ensure!(
                components.contains_key(&t.component),
                "trigger {} names component {:?}, which the manifest does not define",
                t.id.as_deref().unwrap_or("(unnamed)"),
                t.component
            );
            match t.route {
                RouteConfig::Route(route) => routes.push(HttpRoute { route, component: t.component }),
                RouteConfig::Private(PrivateRoute { private: true }) => {}
                RouteConfig::Private(PrivateRoute { private: false }) => {
                    bail!("route must be a string pattern or '{{ private = true }}'")
                }
            }
        }
        ensure!(!routes.is_empty(), "the manifest has no [[trigger.http]] routes");

        Ok(App { name: raw.application.name, version: raw.application.version, root, variables: raw.variables, routes, components })
    }
}

/// Spin's `LowerSnakeId`: words of lowercase ASCII letters and digits, each
/// starting with a letter, joined by single underscores.
fn validate_variable_name(name: &str) -> Result<()> {
    check_id(name, '_', true).map_err(|e| anyhow::anyhow!("invalid variable name {name:?}: {e}"))
}

/// Spin's identifier rule (`crates/serde/src/id.rs`): non-empty words joined
/// by `delim`, each starting with an ASCII letter, then letters and digits,
/// all lowercase or all uppercase (`lower`: lowercase only).
pub fn check_id(id: &str, delim: char, lower: bool) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty".into());
    }
    let wrong = if delim == '_' { '-' } else { '_' };
    if id.contains(wrong) {
        return Err(format!("words must be separated with {delim:?}, not {wrong:?}"));
    }
    for word in id.split(delim) {
        let mut chars = word.chars();
        let Some(first) = chars.next() else {
            return Err(format!("{delim:?}-separated words must not be empty"));
        };
        if !first.is_ascii_alphabetic() {
            return Err(format!("{delim:?}-separated words must start with an ASCII letter; got {first:?}"));
        }
        let upper = first.is_ascii_uppercase();
        for c in chars {
            if c.is_ascii_digit() {
                continue;
            }
            if !c.is_ascii_alphanumeric() {
                return Err(format!("{delim:?}-separated words may only contain alphanumeric ASCII; got {c:?}"));
            }
            if c.is_ascii_uppercase() != upper {
                return Err(format!("{delim:?}-separated words must be all lowercase or all UPPERCASE; got {word:?}"));
            }
        }
        if lower && upper {
            return Err(format!("Lower-case identifiers must be all lowercase; got {id:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<App> {
        App::validate(toml::from_str(text)?, PathBuf::from("/app"))
    }

    const BASE: &str = r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
db_host = { default = "127.0.0.1:5432" }
token = { required = true, secret = true }
[[trigger.http]]
route = "/..."
component = "web"
[component.web]
source = "web.wasm"
allowed_outbound_hosts = ["postgres://{{ db_host }}"]
variables = { token = "{{ token }}" }
"#;

    #[test]
    fn a_valid_manifest_loads_with_paths_relative_to_it() {
        let app = load(BASE).unwrap();
        assert_eq!(app.components["web"].source, PathBuf::from("/app/web.wasm"));
        assert_eq!(app.routes[0].route, "/...");
    }

    #[test]
    fn unknown_fields_are_refused_rather_than_ignored() {
        let text = BASE.replace("source = \"web.wasm\"", "source = \"web.wasm\"\nallowed_http_hosts = [\"*\"]");
        assert!(load(&text).is_err());
    }

    #[test]
    fn a_template_naming_an_undeclared_variable_is_refused() {
        let text = BASE.replace("{{ db_host }}", "{{ nope }}");
        let err = format!("{:#}", load(&text).unwrap_err());
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn identifiers_follow_spins_rules() {
        for bad in ["db_1", "Db", "a__b", "a_", "1a", "a-b"] {
            let text = BASE.replace("db_host = {", &format!("{bad} = {{"));
            assert!(load(&text).is_err(), "variable {bad} was accepted");
        }
        assert!(load(&BASE.replace("component.web]", "component.my_web]")).is_err());
        let kv = BASE.replace("source = \"web.wasm\"", "source = \"web.wasm\"\nkey_value_stores = [\"b@d\"]");
        assert!(load(&kv).is_err());
        let private = BASE.replace("route = \"/...\"", "route = { private = true, extra = 1 }");
        assert!(load(&private).is_err());
        let base = BASE.replace("name = \"t\"", "name = \"t\"\n[application.trigger.http]\nbase = \"/x\"");
        assert!(load(&base).is_err());
        assert!(check_id("sqlite_key_value", '_', false).is_ok());
        assert!(check_id("key-value", '-', false).is_ok());
    }

    #[test]
    fn a_variable_needs_exactly_one_of_default_and_required() {
        let text = BASE.replace("token = { required = true, secret = true }", "token = { secret = true }");
        assert!(load(&text).is_err());
    }
}
