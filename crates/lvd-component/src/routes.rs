//! A component's route table: each path pattern with the methods it takes
//! and the operation each one names. A path no pattern matches is 404; a
//! pattern that matches without the method is 405 with `Allow` listing the
//! methods it does take, so every 405 says what would work.
//!
//! Patterns are literal segments and `{name}` captures: `/api/apps/{app}`.
//! Captures are percent-decoded one by one (an event name may hold an
//! encoded `/`); one that is not UTF-8 matches nothing. One trailing slash
//! is ignored (`/api/apps/` is `/api/apps`).

use http::Method;
use lvd::problem::Problem;

/// One path pattern and what each of its methods does.
pub struct Route<Op: 'static> {
    pub path: &'static str,
    pub methods: &'static [(Method, Op)],
}

/// A component's routes, tried in order.
pub struct Routes<Op: 'static>(pub &'static [Route<Op>]);

/// The operation a request named, with its path's captures.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched<Op> {
    pub op: Op,
    captures: Vec<(&'static str, String)>,
}

impl<Op> Matched<Op> {
    /// The capture `{name}` of the pattern; empty when the pattern has none
    /// of that name (a programming error the first request would show).
    pub fn param(&self, name: &str) -> &str {
        self.captures.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| v.as_str())
    }
}

impl<Op: Copy> Routes<Op> {
    /// The operation for `method` on `path`: 404 or 405 (with `Allow`) when
    /// there is none.
    pub fn find(&self, method: &Method, path: &str) -> Result<Matched<Op>, Problem> {
        let path = path.strip_suffix('/').unwrap_or(path);
        let segments: Vec<&str> = if path.is_empty() { Vec::new() } else { path.split('/').skip(1).collect() };
        for route in self.0 {
            let Some(captures) = captures(route.path, &segments) else { continue };
            return match route.methods.iter().find(|(m, _)| m == method) {
                Some((_, op)) => Ok(Matched { op: *op, captures }),
                None => {
                    let allow: Vec<&str> = route.methods.iter().map(|(m, _)| m.as_str()).collect();
                    Err(Problem::method_not_allowed(allow.join(", ")))
                }
            };
        }
        Err(Problem::not_found())
    }
}

impl<Op> Routes<Op> {
    /// The pattern `path` matches, whatever the method: the `route` label of
    /// the request's figures (`lvd::metrics`).
    pub fn pattern(&self, path: &str) -> Option<&'static str> {
        let path = path.strip_suffix('/').unwrap_or(path);
        let segments: Vec<&str> = if path.is_empty() { Vec::new() } else { path.split('/').skip(1).collect() };
        self.0.iter().find(|r| captures(r.path, &segments).is_some()).map(|r| r.path)
    }
}

/// The captures of `pattern` in `segments`, or `None` when it does not match.
fn captures(pattern: &'static str, segments: &[&str]) -> Option<Vec<(&'static str, String)>> {
    let pattern: Vec<&'static str> = pattern.split('/').skip(1).filter(|s| !s.is_empty()).collect();
    if pattern.len() != segments.len() {
        return None;
    }
    let mut captures = Vec::new();
    for (want, raw) in pattern.iter().zip(segments) {
        let decoded = crate::http::decode_segment(raw)?;
        match want.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
            Some(name) => captures.push((name, decoded)),
            None if *want == decoded => {}
            None => return None,
        }
    }
    Some(captures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Op {
        List,
        Create,
        Get,
        Rule,
    }

    const ROUTES: Routes<Op> = Routes(&[
        Route { path: "/api/apps", methods: &[(Method::GET, Op::List), (Method::POST, Op::Create)] },
        Route { path: "/api/apps/{app}", methods: &[(Method::GET, Op::Get)] },
        Route { path: "/api/apps/{app}/rules/{event}", methods: &[(Method::PUT, Op::Rule)] },
    ]);

    #[test]
    fn a_path_and_method_name_one_operation_with_decoded_captures() {
        let m = ROUTES.find(&Method::PUT, "/api/apps/a1/rules/sign%2Fup").unwrap();
        assert_eq!((m.op, m.param("app"), m.param("event")), (Op::Rule, "a1", "sign/up"));
        assert_eq!(ROUTES.find(&Method::POST, "/api/apps/").unwrap().op, Op::Create);
    }

    #[test]
    fn an_unknown_path_is_404_and_a_known_one_with_another_method_405_with_allow() {
        assert_eq!(ROUTES.find(&Method::GET, "/api/apps/a1/nope").unwrap_err().status, 404);
        assert_eq!(ROUTES.find(&Method::GET, "/api/apps/%FF").unwrap_err().status, 404);
        let p = ROUTES.find(&Method::DELETE, "/api/apps").unwrap_err();
        assert_eq!((p.status, p.allow.as_deref()), (405, Some("GET, POST")));
    }
}
