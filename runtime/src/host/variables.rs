//! `spin:variables/variables@3.0.0`: a component sees only the variables its
//! own manifest entry declares, already resolved from application variables.

use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::{Accessor, HasData};

use crate::bindings::spin::variables::variables::{self as v, Error};

pub struct VariablesState {
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

impl v::HostWithStore for VariablesData {
    async fn get<T>(accessor: &Accessor<T, Self>, name: String) -> Result<String, Error> {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(Error::InvalidName(format!("invalid variable name {name:?}")));
        }
        accessor.with(|mut a| a.get().values.get(&name).cloned().ok_or(Error::Undefined(format!("no variable named {name:?}"))))
    }
}
