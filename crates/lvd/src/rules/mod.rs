//! Tracking-plan rules: a JSON Schema (draft 2020-12) per app and event,
//! applied to an event's `properties`.
//!
//! Schemas come from users, so compiling one must never reach the network or
//! the file system (remote `$ref`s are refused) and must not be a denial of
//! service: `pattern`s run on the linear-time `regex` engine, not a
//! backtracking one.

pub mod store;

use jsonschema::{PatternOptions, Validator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::problem::FieldError;

/// At most this many errors are reported and stored per event.
pub const MAX_ERRORS: usize = 20;

/// Why an event's properties break its rule: where (a JSON pointer relative
/// to `properties`), which schema keyword, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub pointer: String,
    pub keyword: String,
    pub message: String,
}

/// A compiled rule, ready to check events against.
pub struct Schema(Validator);

impl Schema {
    /// Compiles a user's schema. `Err` carries one error per place it fails,
    /// pointers relative to the schema document.
    pub fn compile(schema: &Value) -> Result<Self, Vec<FieldError>> {
        if !(schema.is_object() || schema.is_boolean()) {
            return Err(vec![FieldError::new("", "must be a JSON Schema: an object or a boolean")]);
        }
        if let Some(pointer) = crate::events::nul_pointer(schema) {
            return Err(vec![FieldError::new(&pointer, "must not contain the NUL character (\\u0000): PostgreSQL cannot store it")]);
        }
        if let Some(pointer) = remote_ref(schema, String::new()) {
            return Err(vec![FieldError::new(&pointer, "remote references are not allowed; use a local \"#/...\" reference")]);
        }
        jsonschema::draft202012::options()
            .offline()
            .should_validate_formats(true)
            .with_pattern_options(PatternOptions::regex())
            .build(schema)
            .map(Self)
            .map_err(|e| vec![FieldError::new(e.instance_path().as_str(), e.to_string())])
    }

    /// The ways `properties` breaks the rule, at most [`MAX_ERRORS`]; empty
    /// when it passes.
    pub fn check(&self, properties: &Value) -> Vec<Violation> {
        self.0.iter_errors(properties).flat_map(|e| violations(&e)).take(MAX_ERRORS).collect()
    }
}

/// A missing or unexpected property is reported at the object that lacks
/// or holds it; the contract points at the property itself, one violation
/// per property.
fn violations(e: &jsonschema::ValidationError<'_>) -> Vec<Violation> {
    use jsonschema::error::ValidationErrorKind as K;
    let at = e.instance_path().as_str();
    let keyword = e.kind().keyword().to_owned();
    let one = |pointer: String| Violation { pointer, keyword: keyword.clone(), message: e.to_string() };
    let child = |name: &str| format!("{at}/{}", name.replace('~', "~0").replace('/', "~1"));
    match e.kind() {
        K::Required { property } => vec![one(child(&property.as_str().map_or_else(|| property.to_string(), str::to_owned)))],
        K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } if !unexpected.is_empty() => unexpected
            .iter()
            .map(|name| Violation { pointer: child(name), keyword: keyword.clone(), message: format!("{name:?} is not an allowed property") })
            .collect(),
        _ => vec![one(at.to_owned())],
    }
}

/// The pointer of the first `$ref`/`$dynamicRef` that leaves the document.
/// Only `#...` fragments are local; `$id`-relative names could be resolved
/// remotely by a permissive resolver, so they are refused too.
fn remote_ref(v: &Value, at: String) -> Option<String> {
    match v {
        Value::Object(map) => map.iter().find_map(|(k, child)| {
            let here = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
            let is_ref = matches!(k.as_str(), "$ref" | "$dynamicRef" | "$recursiveRef");
            match child {
                Value::String(target) if is_ref && !target.starts_with('#') => Some(here),
                _ => remote_ref(child, here),
            }
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, child)| remote_ref(child, format!("{at}/{i}"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(schema: Value, properties: Value) -> Vec<(String, String)> {
        Schema::compile(&schema).unwrap().check(&properties).into_iter().map(|v| (v.pointer, v.keyword)).collect()
    }

    #[test]
    fn a_missing_property_points_at_the_property() {
        let schema = json!({"type": "object", "required": ["plan"]});
        assert_eq!(errors(schema.clone(), json!({})), [("/plan".into(), "required".into())]);
        assert!(errors(schema, json!({"plan": 1})).is_empty());
    }

    #[test]
    fn an_unexpected_property_points_at_the_property() {
        let schema = json!({"properties": {"a": {}}, "additionalProperties": false});
        assert_eq!(errors(schema, json!({"a": 1, "b/c": 2})), [("/b~1c".into(), "additionalProperties".into())]);
    }

    #[test]
    fn nested_failures_point_into_the_properties() {
        let schema = json!({"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {"qty": {"minimum": 1}}}}}});
        assert_eq!(errors(schema, json!({"items": [{"qty": 1}, {"qty": 0}]})), [("/items/1/qty".into(), "minimum".into())]);
    }

    #[test]
    fn schemas_that_do_not_compile_say_where() {
        let e = Schema::compile(&json!({"type": "object", "properties": {"a": {"type": "nope"}}})).err().unwrap();
        assert!(e[0].pointer.starts_with("/properties/a"), "{e:?}");
        assert!(Schema::compile(&json!([1])).is_err());
        assert!(Schema::compile(&json!({"pattern": "("})).is_err());
    }

    #[test]
    fn a_schema_postgresql_cannot_store_is_refused_with_a_pointer() {
        let errors = Schema::compile(&json!({"properties": {"a": {"const": "x\u{0}"}}})).err().unwrap();
        assert_eq!(errors[0].pointer, "/properties/a/const");
    }

    #[test]
    fn remote_references_are_refused_and_local_ones_work() {
        let e = Schema::compile(&json!({"properties": {"a": {"$ref": "https://example.com/s.json"}}})).err().unwrap();
        assert_eq!(e[0].pointer, "/properties/a/$ref");
        assert!(Schema::compile(&json!({"$ref": "other.json"})).is_err());
        let local = json!({"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}});
        assert_eq!(errors(local, json!({"a": "x"})), [("/a".into(), "type".into())]);
    }
}
