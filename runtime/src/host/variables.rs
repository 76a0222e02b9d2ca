//! `spin:variables/variables@3.0.0` (spin-sdk 6) and
//! `fermyon:spin/variables@2.0.0` (spin-sdk 5, Spin 3.x), one lookup behind
//! both: a component sees only the variables its own manifest entry
//! declares, already resolved from application variables.
//! Names are checked and errors worded as Spin 4.0.2 does
//! (`crates/expressions/src/lib.rs`, `Key::validate` and `get_template`).

use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::{Accessor, HasData};

use crate::bindings::fermyon::spin::variables as v2;
use crate::bindings::spin::variables::variables::{self as v, Error};

pub struct VariablesState {
    pub component: Arc<str>,
    pub values: Arc<BTreeMap<String, String>>,
}

pub struct VariablesData;

impl HasData for VariablesData {
    type Data<'a> = &'a mut VariablesState;
}

impl v::Host for VariablesState {
    fn convert_error(&mut self, err: Error) -> wasmtime::Result<Error> {
        Ok(err)
    }
}

/// Spin's rule for a name a guest asks for: lowercase letters, digits and
/// single underscores, starting with a letter, not ending with `_`.
fn validate(key: &str) -> Result<(), Error> {
    let reason = if key.is_empty() {
        Some("must not be empty".to_owned())
    } else if let Some(c) = key.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')) {
        Some(format!(
            "invalid character {c:?}. Variable names may contain only lower-case letters, numbers, and underscores."
        ))
    } else if !key.as_bytes()[0].is_ascii_lowercase() {
        Some("must start with a lowercase ASCII letter".to_owned())
    } else if !key.as_bytes()[key.len() - 1].is_ascii_alphanumeric() {
        Some("must end with a lowercase ASCII letter or digit".to_owned())
    } else if key.contains("__") {
        Some("must not contain multiple consecutive underscores".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName(format!("{key:?}: {reason}"))),
        None => Ok(()),
    }
}

impl VariablesState {
    /// The component's variable `name`, or Spin's error for it.
    fn lookup(&self, name: &str) -> Result<String, Error> {
        validate(name)?;
        if self.values.is_empty() {
            return Err(Error::Undefined(format!("no variable for component {:?}", &*self.component)));
        }
        self.values.get(name).cloned().ok_or_else(|| Error::Undefined(format!("no variable for {:?}.{name:?}", &*self.component)))
    }
}

impl v::HostWithStore for VariablesData {
    async fn get<T>(accessor: &Accessor<T, Self>, name: String) -> Result<String, Error> {
        accessor.with(|mut a| a.get().lookup(&name))
    }
}

/// The 2.0.0 interface: the same lookup, the same error variants.
impl v2::Host for VariablesState {
    async fn get(&mut self, name: String) -> Result<String, v2::Error> {
        self.lookup(&name).map_err(|e| match e {
            Error::InvalidName(m) => v2::Error::InvalidName(m),
            Error::Undefined(m) => v2::Error::Undefined(m),
            Error::Provider(m) => v2::Error::Provider(m),
            Error::Other(m) => v2::Error::Other(m),
        })
    }

    fn convert_error(&mut self, err: v2::Error) -> wasmtime::Result<v2::Error> {
        Ok(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_refused_as_spin_refuses_them() {
        for bad in ["", "A", "1a", "a_", "a__b", "a-b"] {
            assert!(matches!(validate(bad), Err(Error::InvalidName(_))), "{bad:?} was accepted");
        }
        for good in ["a", "a1", "a_b_c"] {
            assert!(validate(good).is_ok(), "{good:?}");
        }
        match validate("a_") {
            Err(Error::InvalidName(m)) => assert_eq!(m, "\"a_\": must end with a lowercase ASCII letter or digit"),
            other => panic!("{other:?}"),
        }
    }
}
