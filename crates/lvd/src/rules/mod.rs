//! Tracking-plan rules: a JSON Schema (draft 2020-12) per app and event,
//! applied to an event's `properties`.
//!
//! Schemas come from users, so compiling one must never reach the network or
//! the file system (remote `$ref`s are refused) and must not be a denial of
//! service: `pattern`s run on the linear-time `regex` engine, not a
//! backtracking one, and a schema whose validation work per event can blow
//! up (references expanded past [`cost::MAX_COST`]) is refused (see `cost`).

pub mod cost;
pub mod store;

use jsonschema::{PatternOptions, Validator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::problem::FieldError;

/// At most this many errors are reported and stored per event.
pub const MAX_ERRORS: usize = 20;

/// Longest a value from the event may run inside a message, in characters;
/// a longer one is cut and ends in `…`. Messages go to the reply, the
/// stream, the live tail and PostgreSQL, up to [`MAX_ERRORS`] per event.
pub const MAX_VALUE_CHARS: usize = 64;

/// Longest a whole message may run, in characters: values from the schema
/// (a long `enum`, say) are cut here, ending in `…`.
pub const MAX_MESSAGE_CHARS: usize = 256;

/// Why an event's properties break its rule: where (a JSON pointer relative
/// to `properties`), which schema keyword, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub pointer: String,
    pub keyword: String,
    pub message: String,
}

/// A compiled rule, ready to check events against.
pub struct Schema {
    validator: Validator,
    /// What checking one event can cost (see `cost`).
    cost: u64,
}

/// Past this cost, an invalid event reports only its first error: building
/// every error is what costs (some 10–20 µs each), and a schema near
/// [`cost::MAX_COST`] can fail thousands of times on one event.
pub const ALL_ERRORS_MAX_COST: u64 = 1_000;

impl Schema {
    /// Compiles a user's schema. `Err` carries one error per place it fails,
    /// pointers relative to the schema document.
    pub fn compile(schema: &Value) -> Result<Self, Vec<FieldError>> {
        if !(schema.is_object() || schema.is_boolean()) {
            return Err(vec![FieldError::new("", "must be a JSON Schema: an object or a boolean")]);
        }
        if let Some(pointer) = crate::logs::nul_pointer(schema) {
            return Err(vec![FieldError::new(&pointer, "must not contain the NUL character (\\u0000): PostgreSQL cannot store it")]);
        }
        if let Some(pointer) = remote_ref(schema, String::new()) {
            return Err(vec![FieldError::new(&pointer, "remote references are not allowed; use a local \"#/...\" reference")]);
        }
        // Before building: the validator is what the cost bounds.
        let cost = cost::cost(schema).map_err(|refusal| vec![FieldError::new(&refusal.pointer, refusal.message)])?;
        jsonschema::draft202012::options()
            .offline()
            .should_validate_formats(true)
            .with_pattern_options(PatternOptions::regex())
            .build(schema)
            .map(|validator| Self { validator, cost })
            .map_err(|e| vec![FieldError::new(e.instance_path().as_str(), e.to_string())])
    }

    /// The ways `properties` breaks the rule, at most [`MAX_ERRORS`]; empty
    /// when it passes. `iter_errors` is not lazy (jsonschema 0.61 collects
    /// every error before returning the iterator), so a passing event takes
    /// the short-circuiting `is_valid` alone, and a schema costlier than
    /// [`ALL_ERRORS_MAX_COST`] reports only the first error (`validate`
    /// stops there); the work is bounded by the schema's cost either way.
    pub fn check(&self, properties: &Value) -> Vec<Violation> {
        if self.validator.is_valid(properties) {
            return Vec::new();
        }
        if self.cost > ALL_ERRORS_MAX_COST {
            return self.validator.validate(properties).err().map(|e| violations(&e)).unwrap_or_default().into_iter().take(MAX_ERRORS).collect();
        }
        self.validator.iter_errors(properties).flat_map(|e| violations(&e)).take(MAX_ERRORS).collect()
    }
}

/// A missing or unexpected property is reported at the object that lacks
/// or holds it; the contract points at the property itself, one violation
/// per property.
fn violations(e: &jsonschema::ValidationError<'_>) -> Vec<Violation> {
    use jsonschema::error::ValidationErrorKind as K;
    let at = e.instance_path().as_str();
    let keyword = e.kind().keyword().to_owned();
    // The failing value is rendered once, cut short, and stands in for the
    // value in the message; neither rendering runs past its bound.
    let value = bounded(e.instance(), MAX_VALUE_CHARS);
    let one = |pointer: String| Violation { pointer, keyword: keyword.clone(), message: bounded(e.masked_with(value.as_str()), MAX_MESSAGE_CHARS) };
    let child = |name: &str| format!("{at}/{}", name.replace('~', "~0").replace('/', "~1"));
    match e.kind() {
        K::Required { property } => vec![one(child(&property.as_str().map_or_else(|| property.to_string(), str::to_owned)))],
        K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } if !unexpected.is_empty() => unexpected
            .iter()
            .map(|name| Violation {
                pointer: child(name),
                keyword: keyword.clone(),
                message: format!("{} is not an allowed property", bounded(Value::from(name.as_str()), MAX_VALUE_CHARS)),
            })
            .collect(),
        _ => vec![one(at.to_owned())],
    }
}

/// `shown` as text, cut after `max` characters with `…`. Writing stops at
/// the bound, so a megabyte value costs no more than a short one.
pub(crate) fn bounded(shown: impl std::fmt::Display, max: usize) -> String {
    use std::fmt::Write;
    struct Bounded {
        out: String,
        left: usize,
        cut: bool,
    }
    impl Write for Bounded {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for c in s.chars() {
                if self.left == 0 {
                    self.cut = true;
                    return Err(std::fmt::Error);
                }
                self.out.push(c);
                self.left -= 1;
            }
            Ok(())
        }
    }
    let mut b = Bounded { out: String::new(), left: max, cut: false };
    let _ = write!(b, "{shown}");
    if b.cut {
        b.out.push('…');
    }
    b.out
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

    #[test]
    fn a_schema_whose_references_blow_up_is_refused_at_compile_with_a_pointer() {
        // The review's schema: 22 `$defs`, each using the next twice.
        let mut defs = serde_json::Map::new();
        for i in 0..22 {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(format!("d{i}"), json!({"allOf": [{"$ref": next}, {"$ref": next}]}));
        }
        defs.insert("d22".into(), json!({"type": "object"}));
        let e = Schema::compile(&json!({"$defs": defs, "$ref": "#/$defs/d0"})).err().unwrap();
        assert!(e[0].pointer.starts_with("/$defs/d"), "{e:?}");
        println!("refused: {} {}", e[0].pointer, e[0].message);
    }

    /// The worst schemas that are still accepted, each timed on an event
    /// that fails it (the slow path: `is_valid`, then every error) and one
    /// that passes. Prints figures; asserts only the static bound. Run with
    /// `cargo test -p lvd --release worst_accepted -- --nocapture`.
    #[test]
    fn worst_accepted_schemas_stay_within_the_static_bound_and_print_their_cost_per_event() {
        let deepest_chain = (1..30).map(cost::tests::doubling_chain).take_while(|s| cost::cost(s).is_ok()).last().unwrap();
        let flat = json!({"allOf": vec![json!({"type": "object", "required": ["x"]}); (cost::MAX_COST as usize - 1) / 2]});
        let big_enum = json!({"properties": {"x": {"enum": (0..cost::MAX_COST - 2).map(|i| format!("value-{i}")).collect::<Vec<_>>()}}});
        let patterns = json!({"properties": {"x": {"allOf": (0..(cost::MAX_COST as usize - 3) / 2).map(|i| json!({"pattern": format!("^(a|b)*{i}$")})).collect::<Vec<_>>()}}});
        // 77 subschemas a level, unrolled to the deepest properties can nest.
        let recursion = json!({"$defs": {"n": {"properties": {"x": {"$ref": "#/$defs/n"}}, "allOf": vec![json!({"required": ["z"]}); 75]}}, "$ref": "#/$defs/n"});
        let mut deep = json!({});
        for _ in 0..100 {
            deep = json!({"x": deep});
        }
        let long = "ab".repeat(50);
        let cases = [
            ("doubling chain", deepest_chain, json!({}), json!({"x": 1})),
            ("flat allOf", flat, json!({}), json!({"x": 1})),
            ("enum", big_enum, json!({"x": "nope"}), json!({"x": format!("value-{}", cost::MAX_COST - 3)})),
            ("patterns on a 100-char string", patterns, json!({"x": long.clone()}), json!({"x": 1})),
            ("recursion, 100 deep", recursion, deep, json!({"z": 1})),
        ];
        for (name, schema, failing, passing) in cases {
            let n = cost::cost(&schema).unwrap();
            assert!(n <= cost::MAX_COST, "{name}: {n}");
            let compiled = Schema::compile(&schema).unwrap();
            for (label, event) in [("failing", &failing), ("passing", &passing)] {
                let runs = 200;
                let start = std::time::Instant::now();
                for _ in 0..runs {
                    std::hint::black_box(compiled.check(std::hint::black_box(event)));
                }
                let per = start.elapsed() / runs;
                println!("{name:>32} (cost {n:>5}) {label}: {per:?} per event");
            }
        }
    }

    #[test]
    fn a_long_failing_value_is_cut_short_in_its_message_and_the_pointer_stays_exact() {
        let long = "x".repeat(10_000);
        let key = "k".repeat(300);
        let schema = json!({"properties": {key.clone(): {"type": "integer"}, "e": {"enum": ["a".repeat(300), "b"]}}, "additionalProperties": false});
        let v = Schema::compile(&schema).unwrap().check(&json!({key.clone(): long, "e": "y".repeat(500), "z".repeat(200): 1}));
        assert_eq!(v.len(), 3, "{v:?}");
        for violation in &v {
            assert!(violation.message.chars().count() <= MAX_MESSAGE_CHARS + 1, "{violation:?}");
        }
        let by_keyword = |k: &str| v.iter().find(|x| x.keyword == k).unwrap();
        let t = by_keyword("type");
        assert_eq!(t.pointer, format!("/{key}"));
        assert!(t.message.starts_with(&format!("\"{}…", "x".repeat(MAX_VALUE_CHARS - 1))) && t.message.len() < 120, "{t:?}");
        assert!(by_keyword("enum").message.ends_with('…'));
        let extra = by_keyword("additionalProperties");
        assert_eq!(extra.pointer, format!("/{}", "z".repeat(200)));
        assert!(extra.message.len() < 120, "{extra:?}");
        // Short values are shown whole, as before.
        let short = Schema::compile(&json!({"properties": {"a": {"type": "integer"}}})).unwrap().check(&json!({"a": "seven"}));
        assert_eq!(short[0].message, "\"seven\" is not of type \"integer\"");
    }
}
