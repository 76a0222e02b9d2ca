//! Spin's HTTP routing: exact routes, trailing `/...` wildcards and `:name`
//! segments, the most specific match winning (the `routefinder` crate, which
//! Spin itself routes with). Also computes the `spin-*` headers Spin gives a
//! component about how its request was matched.

use anyhow::{Result, anyhow};
use std::borrow::Cow;
use std::net::SocketAddr;

use crate::manifest::HttpRoute;

#[derive(Debug, Clone)]
struct Handler {
    component: String,
    /// The route as declared, e.g. `/api/...`.
    raw_route: String,
    /// The route with the base (always `/` here) applied and one trailing `/` stripped.
    based_route: String,
}

pub struct Router {
    inner: routefinder::Router<Handler>,
}

/// What a request path matched.
pub struct RouteMatch<'a> {
    handler: &'a Handler,
    path: &'a str,
    wildcard: Option<String>,
    captures: Vec<(String, String)>,
}

impl Router {
    pub fn build(routes: &[HttpRoute]) -> Result<Self> {
        let mut inner = routefinder::Router::new();
        // A later duplicate replaces an earlier one in the earlier one's
        // place (Spin keeps its routes in an insertion-ordered map), and is
        // logged: the earlier one will never be used.
        let mut seen: Vec<(String, Handler)> = Vec::new();
        for r in routes {
            let based_route = sanitize(&absolutize(&r.route));
            let handler = Handler {
                component: r.component.clone(),
                raw_route: r.route.clone(),
                based_route,
            };
            match seen.iter_mut().find(|(raw, _)| *raw == r.route) {
                Some(slot) => {
                    tracing::error!(route = r.route, "duplicate route: the earlier one will never be used");
                    slot.1 = handler;
                }
                None => seen.push((r.route.clone(), handler)),
            }
        }
        for (_, handler) in seen {
            let spec = match handler.based_route.strip_suffix("/...") {
                Some(prefix) => format!("{prefix}/*"),
                None => handler.based_route.clone(),
            };
            let spec = if spec.is_empty() { "/".to_owned() } else { spec };
            inner
                .add(spec.as_str(), handler.clone())
                .map_err(|e| anyhow!("invalid route {:?} of component {:?}: {e}", handler.raw_route, handler.component))?;
        }
        Ok(Self { inner })
    }

    pub fn route<'a>(&'a self, path: &'a str) -> Option<RouteMatch<'a>> {
        let m = self.inner.best_match(path)?;
        let captures = m.captures();
        let wildcard = captures.wildcard().map(str::to_owned);
        let named = captures.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        Some(RouteMatch { handler: m.handler(), path, wildcard, captures: named })
    }
}

impl RouteMatch<'_> {
    pub fn component(&self) -> &str {
        &self.handler.component
    }

    pub fn raw_route(&self) -> &str {
        &self.handler.raw_route
    }

    /// The part of the path a trailing wildcard matched, as `spin-path-info`.
    pub fn path_info(&self) -> Cow<'_, str> {
        match self.wildcard.as_deref() {
            None => Cow::Borrowed(""),
            Some(s) => match (s.is_empty(), self.path.ends_with('/')) {
                (true, false) => Cow::Borrowed(s),
                (true, true) => Cow::Borrowed("/"),
                (false, false) => Cow::Owned(format!("/{s}")),
                (false, true) => Cow::Owned(format!("/{s}/")),
            },
        }
    }

    /// The headers Spin adds to every request it hands a component.
    pub fn spin_headers(&self, full_url: &str, client: SocketAddr) -> Vec<(String, String)> {
        let raw_or_prefix = self.handler.raw_route.strip_suffix("/...").unwrap_or(&self.handler.raw_route);
        let mut h = vec![
            ("spin-path-info".to_owned(), self.path_info().into_owned()),
            ("spin-full-url".to_owned(), full_url.to_owned()),
            ("spin-matched-route".to_owned(), self.handler.based_route.clone()),
            ("spin-base-path".to_owned(), "/".to_owned()),
            ("spin-raw-component-route".to_owned(), self.handler.raw_route.clone()),
            ("spin-component-route".to_owned(), raw_or_prefix.to_owned()),
            ("spin-client-addr".to_owned(), client.to_string()),
        ];
        // Spin names these `SPIN_PATH_MATCH_<NAME>`, then turns `_` into `-`
        // and lower-cases: `:app_id` is `spin-path-match-app-id`.
        for (name, value) in &self.captures {
            h.push((format!("spin-path-match-{}", name.to_ascii_lowercase().replace('_', "-")), value.clone()));
        }
        h
    }
}

fn absolutize(s: &str) -> String {
    if s.starts_with('/') { s.to_owned() } else { format!("/{s}") }
}

fn sanitize(s: &str) -> String {
    s.strip_suffix('/').unwrap_or(s).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let r = |route: &str, component: &str| HttpRoute { route: route.into(), component: component.into() };
        Router::build(&[
            r("/...", "fallback"),
            r("/api/...", "api"),
            r("/api/apps/:app/rules", "rules"),
            r("/health", "health"),
        ])
        .unwrap()
    }

    #[test]
    fn the_most_specific_route_wins() {
        let r = router();
        assert_eq!(r.route("/health").unwrap().component(), "health");
        assert_eq!(r.route("/api/apps/42/rules").unwrap().component(), "rules");
        assert_eq!(r.route("/api/apps/42").unwrap().component(), "api");
        assert_eq!(r.route("/elsewhere").unwrap().component(), "fallback");
    }

    #[test]
    fn wildcards_report_path_info_and_parameters_their_values() {
        let r = router();
        let m = r.route("/api/apps/x/").unwrap();
        assert_eq!(m.path_info(), "/apps/x/");
        let m = r.route("/api/apps/abc/rules").unwrap();
        let headers = m.spin_headers("http://h/api/apps/abc/rules", "127.0.0.1:9".parse().unwrap());
        assert!(headers.contains(&("spin-path-match-app".into(), "abc".into())));
        assert!(headers.contains(&("spin-matched-route".into(), "/api/apps/:app/rules".into())));
    }

    #[test]
    fn without_a_catch_all_unknown_paths_do_not_match() {
        let r = Router::build(&[HttpRoute { route: "/health".into(), component: "h".into() }]).unwrap();
        assert!(r.route("/nope").is_none());
        assert!(r.route("/health/deeper").is_none());
    }
}
