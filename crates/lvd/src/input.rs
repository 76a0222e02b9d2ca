//! Turning a request body into fields, with the contract's errors: 400
//! `malformed_json` when it is not JSON, 422 `validation_failed` with a
//! pointer per offending field when it is JSON of the wrong shape.

use serde_json::{Map, Value};

use crate::problem::{FieldError, Problem};

pub struct Fields {
    map: Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Fields {
    /// Parses a JSON object. An empty body counts as `{}`.
    pub fn parse(body: &[u8]) -> Result<Self, Problem> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self { map: Map::new(), errors: Vec::new() });
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Self { map, errors: Vec::new() }),
            Ok(_) => Err(Problem::validation(vec![FieldError::new("", "must be a JSON object")])),
            Err(_) => Err(Problem::new(400, "malformed_json", "The request body is not valid JSON.")),
        }
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(&format!("/{field}"), message));
    }

    /// Any JSON value, taken out as is (`None` when absent).
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name)
    }

    /// A string field that must be present.
    pub fn required_str(&mut self, name: &str) -> Option<String> {
        match self.map.get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            None | Some(Value::Null) => {
                self.error(name, "is required");
                None
            }
            Some(_) => {
                self.error(name, "must be a string");
                None
            }
        }
    }

    /// A string field that may be absent (or null).
    pub fn optional_str(&mut self, name: &str) -> Option<String> {
        match self.map.get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            None | Some(Value::Null) => None,
            Some(_) => {
                self.error(name, "must be a string");
                None
            }
        }
    }

    /// An integer field that may be absent (or null).
    pub fn optional_int(&mut self, name: &str) -> Option<Option<i64>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(Value::Number(n)) if n.as_i64().is_some() => Some(n.as_i64()),
            // JSON Schema's `integer` is a number without a fraction: 30.0 is 30.
            Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15) => {
                Some(n.as_f64().map(|f| f as i64))
            }
            Some(_) => {
                self.error(name, "must be an integer");
                None
            }
        }
    }

    /// A boolean field that may be absent (or null).
    pub fn optional_bool(&mut self, name: &str) -> Option<bool> {
        match self.map.get(name) {
            Some(Value::Bool(b)) => Some(*b),
            None | Some(Value::Null) => None,
            Some(_) => {
                self.error(name, "must be true or false");
                None
            }
        }
    }

    /// Whether an error was recorded at `pointer`.
    pub fn has_error(&self, pointer: &str) -> bool {
        self.errors.iter().any(|e| e.pointer == pointer)
    }

    /// Parses a present value with `parse`, recording its error.
    pub fn parsed<V, T, E: Into<String>>(&mut self, name: &str, value: Option<V>, parse: impl FnOnce(V) -> Result<T, E>) -> Option<T> {
        match parse(value?) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(name, e);
                None
            }
        }
    }

    /// 422 listing every error recorded, or `Ok` when there were none.
    pub fn finish(self) -> Result<(), Problem> {
        if self.errors.is_empty() { Ok(()) } else { Err(Problem::validation(self.errors)) }
    }
}

/// The `limit` (1–500, default 50) and `cursor` of a list route's query
/// string, `decode` reading a cursor this API issued (an empty one is the
/// first page); 422 naming each bad one.
pub fn page<C>(query: &str, decode: impl Fn(&str) -> Option<C>) -> Result<(i64, Option<C>), Problem> {
    use crate::logs::query::{DEFAULT_LIMIT, MAX_LIMIT};
    let (mut limit, mut after, mut errors) = (DEFAULT_LIMIT, None, Vec::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "limit" => match v.parse::<i64>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => errors.push(FieldError::new("/limit", "must be an integer from 1 to 500")),
            },
            "cursor" if v.is_empty() => {}
            "cursor" => match decode(&v) {
                Some(c) => after = Some(c),
                None => errors.push(FieldError::new("/cursor", "is not a cursor this API issued")),
            },
            _ => {}
        }
    }
    if errors.is_empty() { Ok((limit, after)) } else { Err(Problem::validation(errors)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_json_is_malformed_and_the_wrong_shape_is_invalid() {
        assert_eq!(Fields::parse(b"{nope").err().unwrap().code, "malformed_json");
        let p = Fields::parse(b"[1]").err().unwrap();
        assert_eq!((p.status, p.code), (422, "validation_failed"));
    }

    #[test]
    fn every_offending_field_gets_a_pointer() {
        let mut f = Fields::parse(br#"{"email": 5}"#).unwrap();
        assert!(f.required_str("email").is_none());
        assert!(f.required_str("password").is_none());
        let p = f.finish().unwrap_err();
        let pointers: Vec<_> = p.errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/email", "/password"]);
    }
}
