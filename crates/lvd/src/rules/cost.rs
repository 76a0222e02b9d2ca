//! What a schema can cost to check one event, counted before it is stored.
//!
//! Rules come from users and run on instances every tenant shares, so a
//! schema whose validation work can blow up must be refused when it is PUT.
//! The danger is references: `allOf: [{"$ref": next}, {"$ref": next}]` over 22
//! chained `$defs` is a 3 KB schema that costs four million subschema visits
//! per event. So the cost is the number of subschemas validation can visit at
//! one instance location and below it, with every reference expanded where it
//! is used (the size of the fully unrolled schema):
//!
//! - a subschema counts 1, plus the length of its `enum` (checked value by
//!   value);
//! - in-place applicators (`allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`,
//!   `dependentSchemas`, `$ref`, `$dynamicRef`) add their subschemas at the
//!   same depth; applicators that descend into the instance (`properties`,
//!   `items`, `additionalProperties`, …) add theirs one level deeper;
//! - a recursive reference is followed level by level until [`MAX_DEPTH`],
//!   the deepest an event's properties can nest (the body's JSON nesting
//!   limit), so a recursion that branches (reaches itself by two paths) is as
//!   costly as the tree it unrolls to, and is refused;
//! - a reference cycle that never descends into the instance would loop
//!   forever, and is refused;
//! - `$defs` and unknown keywords cost nothing until referenced.
//!
//! The count over-approximates: it assumes an instance deep enough for every
//! path and a `$dynamicRef` that may land on any anchor of its name. It must
//! never under-count. Counting stops at [`MAX_COST`] + 1, so it takes time
//! in proportion to the limit, whatever the schema.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// Most subschema visits one instance location and its descendants may
/// cost. A visit takes 5–10 ns natively (the review's wasm figure is about
/// 50 ns), so the worst schema that can be stored stays well under a
/// millisecond per event of ordinary size: `rules::tests::worst_accepted_…`
/// prints the figures.
pub const MAX_COST: u64 = 10_000;

/// The deepest an event's properties can nest: serde_json refuses bodies
/// nested deeper than 128, and the properties sit inside the body.
pub const MAX_DEPTH: u32 = 128;

/// Why a schema is refused: where, as a JSON pointer into the schema, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub pointer: String,
    pub message: String,
}

/// The schema's cost (see the module's comment), or where it exceeds
/// [`MAX_COST`] or loops. The pointer names the keyword, in the smallest
/// subschema whose expansion alone exceeds the limit, at which the count
/// crossed it.
pub fn cost(schema: &Value) -> Result<u64, Refusal> {
    let doc = Doc::index(schema);
    Counter { doc: &doc, memo: HashMap::new(), active: HashSet::new() }.count(schema, 0)
}

type Node = *const Value;

/// Where each subschema sits, which resource (`$id`) its `#...` references
/// resolve in, and every anchor by name.
struct Doc<'a> {
    root: &'a Value,
    pointer: HashMap<Node, String>,
    resource: HashMap<Node, &'a Value>,
    anchors: HashMap<&'a str, Vec<&'a Value>>,
}

impl<'a> Doc<'a> {
    fn index(root: &'a Value) -> Self {
        let mut doc = Doc { root, pointer: HashMap::new(), resource: HashMap::new(), anchors: HashMap::new() };
        doc.walk(root, String::new(), root);
        doc
    }

    fn walk(&mut self, v: &'a Value, at: String, mut resource: &'a Value) {
        if let Value::Object(map) = v {
            if map.get("$id").is_some_and(Value::is_string) {
                resource = v;
            }
            for key in ["$anchor", "$dynamicAnchor"] {
                if let Some(Value::String(name)) = map.get(key) {
                    self.anchors.entry(name.as_str()).or_default().push(v);
                }
            }
        }
        self.resource.insert(v as Node, resource);
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    self.walk(child, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), resource);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    self.walk(child, format!("{at}/{i}"), resource);
                }
            }
            _ => {}
        }
        self.pointer.insert(v as Node, at);
    }

    fn pointer_of(&self, v: &Value) -> String {
        self.pointer.get(&(v as Node)).cloned().unwrap_or_default()
    }

    /// What a `#...` reference written in `from` can land on. One that does
    /// not resolve lands nowhere here; compiling the schema reports it.
    fn targets(&self, from: &'a Value, reference: &str) -> Vec<&'a Value> {
        let Some(fragment) = reference.strip_prefix('#') else { return Vec::new() };
        let base = self.resource.get(&(from as Node)).copied().unwrap_or(self.root);
        if fragment.is_empty() {
            return vec![base];
        }
        if fragment.starts_with('/') {
            let decoded = percent_decode(fragment);
            return base.pointer(&decoded).into_iter().collect();
        }
        // Conservative: every anchor of the name counts, in whichever
        // resource; the one a (dynamic) reference lands on is among them.
        self.anchors.get(fragment).cloned().unwrap_or_default()
    }
}

struct Counter<'d, 'a> {
    doc: &'d Doc<'a>,
    /// The cost of each (subschema, depth) already counted.
    memo: HashMap<(Node, u32), u64>,
    /// The (subschema, depth) pairs being counted: meeting one again is a
    /// loop that does not descend.
    active: HashSet<(Node, u32)>,
}

impl<'a> Counter<'_, 'a> {
    fn count(&mut self, node: &'a Value, depth: u32) -> Result<u64, Refusal> {
        if depth > MAX_DEPTH {
            return Ok(0);
        }
        let key = (node as Node, depth);
        if let Some(&c) = self.memo.get(&key) {
            return Ok(c);
        }
        if !self.active.insert(key) {
            return Err(Refusal {
                pointer: self.doc.pointer_of(node),
                message: "is reached again by references without descending into the event's properties: validation would never end"
                    .into(),
            });
        }
        let mut total: u64 = 1;
        if let Value::Object(map) = node {
            for (k, child) in map {
                let add = self.keyword(node, k, child, depth)?;
                total = total.saturating_add(add);
                if total > MAX_COST {
                    let at = format!("{}/{}", self.doc.pointer_of(node), k.replace('~', "~0").replace('/', "~1"));
                    return Err(Refusal {
                        pointer: at,
                        message: format!(
                            "makes validation visit more than {MAX_COST} subschemas per event once references are followed \
                             (each use of a $ref counts its target again); simplify the schema or share fewer references"
                        ),
                    });
                }
            }
        }
        self.active.remove(&key);
        self.memo.insert(key, total);
        Ok(total)
    }

    fn keyword(&mut self, node: &'a Value, k: &str, child: &'a Value, depth: u32) -> Result<u64, Refusal> {
        let each = |c: &mut Self, items: &'a Value, depth: u32| -> Result<u64, Refusal> {
            let mut sum = 0u64;
            let children: Box<dyn Iterator<Item = &'a Value>> = match items {
                Value::Array(a) => Box::new(a.iter()),
                Value::Object(m) => Box::new(m.values()),
                _ => Box::new(std::iter::empty()),
            };
            for s in children {
                sum = sum.saturating_add(c.count(s, depth)?);
            }
            Ok(sum)
        };
        match k {
            "allOf" | "anyOf" | "oneOf" => each(self, child, depth),
            "not" | "if" | "then" | "else" | "contentSchema" => self.count(child, depth),
            // 2019-09's `dependencies` mixes schemas and name lists; names cost nothing.
            "dependentSchemas" | "dependencies" => each(self, child, depth),
            "properties" | "patternProperties" | "prefixItems" => each(self, child, depth + 1),
            "items" | "additionalItems" if child.is_array() => each(self, child, depth + 1),
            "items" | "additionalItems" | "additionalProperties" | "unevaluatedProperties" | "unevaluatedItems" | "contains"
            | "propertyNames" => self.count(child, depth + 1),
            "$ref" | "$recursiveRef" | "$dynamicRef" => {
                let Value::String(r) = child else { return Ok(0) };
                let r = if k == "$recursiveRef" { "#" } else { r.as_str() };
                let mut sum = 0u64;
                for target in self.doc.targets(node, r) {
                    sum = sum.saturating_add(self.count(target, depth)?);
                }
                Ok(sum)
            }
            "enum" => Ok(child.as_array().map_or(0, |a| a.len() as u64)),
            _ => Ok(0),
        }
    }
}

/// `%XX` escapes in a URI fragment, as `$ref` pointers may carry them.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// The review's schema: `levels` `$defs`, each using the next twice.
    pub(crate) fn doubling_chain(levels: usize) -> Value {
        let mut defs = serde_json::Map::new();
        for i in 0..levels {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(format!("d{i}"), json!({"allOf": [{"$ref": next}, {"$ref": next}]}));
        }
        defs.insert(format!("d{levels}"), json!({"type": "object", "required": ["x"]}));
        json!({"$defs": defs, "$ref": "#/$defs/d0"})
    }

    #[test]
    fn a_doubling_reference_chain_is_refused_with_a_pointer() {
        let refusal = cost(&doubling_chain(22)).unwrap_err();
        // The smallest subschema whose expansion alone is over the limit.
        assert!(refusal.pointer.starts_with("/$defs/d") && refusal.pointer.ends_with("/allOf"), "{refusal:?}");
        assert!(refusal.message.contains("10000"), "{refusal:?}");
        assert!(cost(&doubling_chain(11)).unwrap() <= MAX_COST);
    }

    #[test]
    fn defs_cost_nothing_until_referenced_and_each_use_counts() {
        let unused = json!({"$defs": {"a": {"enum": (0..20_000).collect::<Vec<_>>()}}, "type": "object"});
        assert_eq!(cost(&unused).unwrap(), 1);
        let used_twice = json!({"$defs": {"a": {"enum": [1, 2, 3]}}, "properties": {"x": {"$ref": "#/$defs/a"}, "y": {"$ref": "#/$defs/a"}}});
        // root + x + a(1 + 3 values) + y + a again
        assert_eq!(cost(&used_twice).unwrap(), 1 + (1 + 4) * 2);
    }

    #[test]
    fn a_recursive_tree_schema_is_accepted_and_a_branching_one_is_refused() {
        let tree = json!({
            "$defs": {"node": {"type": "object", "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
            "$ref": "#/$defs/node"
        });
        assert!(cost(&tree).unwrap() <= MAX_COST);
        // Two recursive paths at the same location double per level of nesting.
        let branching = json!({
            "$defs": {"n": {"anyOf": [{"properties": {"x": {"$ref": "#/$defs/n"}}}, {"properties": {"x": {"$ref": "#/$defs/n"}}}]}},
            "$ref": "#/$defs/n"
        });
        assert!(cost(&branching).is_err());
    }

    #[test]
    fn a_reference_loop_that_never_descends_is_refused() {
        let refusal = cost(&json!({"$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})).unwrap_err();
        assert!(refusal.message.contains("never end"), "{refusal:?}");
        assert!(cost(&json!({"$ref": "#"})).is_err());
    }

    #[test]
    fn anchors_escaped_pointers_and_embedded_resources_are_followed() {
        let anchored = json!({"$defs": {"a": {"$anchor": "big", "enum": (0..6000).collect::<Vec<_>>()}}, "allOf": [{"$ref": "#big"}, {"$ref": "#big"}]});
        assert!(cost(&anchored).is_err());
        let escaped = json!({"$defs": {"a b/c": {"enum": (0..6000).collect::<Vec<_>>()}}, "allOf": [{"$ref": "#/$defs/a%20b~1c"}, {"$ref": "#/$defs/a%20b~1c"}]});
        assert!(cost(&escaped).is_err());
        // `#/...` inside an embedded resource is relative to that resource.
        let embedded = json!({
            "$id": "https://example.com/root",
            "$defs": {"inner": {"$id": "inner", "$defs": {"big": {"enum": (0..6000).collect::<Vec<_>>()}}, "allOf": [{"$ref": "#/$defs/big"}, {"$ref": "#/$defs/big"}]}},
            "$ref": "#/$defs/inner"
        });
        assert!(cost(&embedded).is_err());
    }
}
