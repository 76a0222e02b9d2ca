//! Spin's `{{ variable }}` templates, as used in component `variables` and
//! `allowed_outbound_hosts`.

use anyhow::{Result, bail};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Variable(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else { bail!("unclosed '{{{{' in {text:?}") };
            let name = after[..end].trim();
            if name.is_empty() {
                bail!("empty variable reference in {text:?}");
            }
            parts.push(Part::Variable(name.to_owned()));
            rest = &after[end + 2..];
        }
        // A `}}` with no `{{` before it is plain text, as in Spin.
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Fails unless every referenced variable is declared by the application.
    pub fn check_references<V>(&self, declared: &BTreeMap<String, V>) -> Result<()> {
        for p in &self.parts {
            if let Part::Variable(name) = p
                && !declared.contains_key(name)
            {
                bail!("references undeclared application variable {name:?}");
            }
        }
        Ok(())
    }

    pub fn resolve(&self, lookup: impl Fn(&str) -> Result<String>) -> Result<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Variable(name) => out.push_str(&lookup(name)?),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_variables_resolve_in_order() {
        let t = Template::parse("redis://{{ host }}:{{port}}/0").unwrap();
        let out = t
            .resolve(|n| Ok(if n == "host" { "h".into() } else { "1".into() }))
            .unwrap();
        assert_eq!(out, "redis://h:1/0");
    }

    #[test]
    fn malformed_templates_are_refused() {
        assert!(Template::parse("{{ x").is_err());
        assert!(Template::parse("{{}}").is_err());
        assert_eq!(Template::parse("a }} b").unwrap().resolve(|_| unreachable!()).unwrap(), "a }} b");
    }
}
