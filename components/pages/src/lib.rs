//! The dashboard page, and the 404 of every path nothing else serves.
//! `/` redirects to `/dashboard`; `/dashboard` is one
//! HTML page whose script talks to the public API like any client; its
//! assets are served from `/assets/<name>.<hash>.<ext>`, immutable.
//!
//! Everything comes from this origin: the Content-Security-Policy allows
//! nothing else (no CDN, no inline script or style, no framing).

use http::Method;
use lvd::problem::Problem;
use lvd_component::http as h;
use lvd_component::routes::{Route, Routes};
use lvd_component::serve::serve;
use lvd_component::{Reply, Request};

include!(concat!(env!("OUT_DIR"), "/assets.rs"));
const DASHBOARD: &str = include_str!(concat!(env!("OUT_DIR"), "/dashboard.html"));

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

#[derive(Clone, Copy)]
enum Op {
    Home,
    Dashboard,
}

const ROUTES: Routes<Op> = Routes(&[
    Route { path: "/", methods: &[(Method::GET, Op::Home), (Method::HEAD, Op::Home)] },
    Route { path: "/dashboard", methods: &[(Method::GET, Op::Dashboard), (Method::HEAD, Op::Dashboard)] },
]);

lvd_component::entry!(handle);

/// Also the app's catch-all route (`/...`): a path no other component
/// serves is a 404 problem here, whatever the method, because the runtimes'
/// own 404 is an empty body (Spin's), not the contract's problem document.
async fn handle(req: Request) -> Reply {
    serve::<(), _, _>("pages", &ROUTES, req, async |req, _| match ROUTES.find(req.method(), req.uri().path()) {
        Ok(at) => match at.op {
            Op::Home => redirect("/dashboard"),
            Op::Dashboard => page(DASHBOARD, "text/html; charset=utf-8", "no-cache"),
        },
        Err(p) if p.status == 404 => asset(&req).unwrap_or_else(|p| h::problem(&p)),
        Err(p) => h::problem(&p),
    })
    .await
}

/// A fingerprinted asset, cached for good; 404 when there is none by that name.
fn asset(req: &Request) -> Result<h::Response, Problem> {
    let path = req.uri().path();
    let (_, content_type, text) = ASSETS.iter().find(|(url, _, _)| *url == path).ok_or_else(Problem::not_found)?;
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(Problem::method_not_allowed("GET, HEAD"));
    }
    Ok(page(text, content_type, "public, max-age=31536000, immutable"))
}

fn page(text: &str, content_type: &'static str, cache: &'static str) -> h::Response {
    let mut resp = http::Response::new(text.to_owned());
    let headers = resp.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static(cache));
    headers.insert(http::header::CONTENT_SECURITY_POLICY, http::HeaderValue::from_static(CSP));
    headers.insert(http::header::X_CONTENT_TYPE_OPTIONS, http::HeaderValue::from_static("nosniff"));
    headers.insert(http::header::REFERRER_POLICY, http::HeaderValue::from_static("no-referrer"));
    resp
}

fn redirect(to: &'static str) -> h::Response {
    let mut resp = http::Response::new(String::new());
    *resp.status_mut() = http::StatusCode::FOUND;
    resp.headers_mut().insert(http::header::LOCATION, http::HeaderValue::from_static(to));
    resp
}
