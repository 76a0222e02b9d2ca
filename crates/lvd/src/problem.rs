//! RFC 9457 problem documents: the one shape every error reply takes.
//!
//! A problem never carries internal text (driver messages, SQL, stack traces,
//! secrets): callers choose `detail` for the client and log causes separately.

use serde::Serialize;

/// Media type of every error reply.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// An error reply as the API contract describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: u16,
    pub title: &'static str,
    pub detail: String,
    /// Stable snake_case code clients branch on.
    pub code: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds for a `Retry-After` header; not part of the body.
    #[serde(skip)]
    pub retry_after: Option<u64>,
    /// The methods for an `Allow` header (every 405 carries one, RFC 9110).
    #[serde(skip)]
    pub allow: Option<String>,
    /// The limit decision for `RateLimit-*` headers, when one bound the
    /// request; not part of the body.
    #[serde(skip)]
    pub rate_limit: Option<crate::limits::Decision>,
}

/// One offending input field, located by a JSON pointer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    pub pointer: String,
    pub message: String,
}

impl FieldError {
    pub fn new(pointer: &str, message: impl Into<String>) -> Self {
        Self { pointer: pointer.to_owned(), message: message.into() }
    }
}

impl Problem {
    /// 422 `validation_failed` with one entry per offending field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self::new(422, "validation_failed", "The request has invalid fields.").with_errors(errors)
    }

    /// 415 for a body that is not `application/json`.
    pub fn unsupported_media_type() -> Self {
        Self::new(415, "unsupported_media_type", "The request body must be application/json.")
    }

    /// 413 for a body over the limit.
    pub fn payload_too_large() -> Self {
        Self::new(413, "payload_too_large", "The request body exceeds the limit of 1 MiB.")
    }

    /// 500: opaque to the client; the cause is logged, not sent.
    pub fn internal() -> Self {
        Self::new(500, "internal_error", "Something went wrong on our side.")
    }

    /// A problem with the title the contract associates with `status`.
    pub fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank",
            status,
            title: title_for(status),
            detail: detail.into(),
            code,
            errors: Vec::new(),
            retry_after: None,
            allow: None,
            rate_limit: None,
        }
    }

    /// 503 `unavailable`: a dependency is down; the client should retry later.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(503, "unavailable", detail)
    }

    /// 404 `not_found`.
    pub fn not_found() -> Self {
        Self::new(404, "not_found", "No resource exists at this path.")
    }

    /// 405 `method_not_allowed`; `allow` is what the path does accept
    /// (`"GET, HEAD"`), sent as the `Allow` header.
    pub fn method_not_allowed(allow: impl Into<String>) -> Self {
        let mut p = Self::new(405, "method_not_allowed", "This path does not accept that method.");
        p.allow = Some(allow.into());
        p
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 429 `rate_limited`, with the decision that refused.
    pub fn rate_limited(decision: crate::limits::Decision) -> Self {
        Self::new(429, "rate_limited", "Too many requests; retry after the time in Retry-After.").with_rate_limit(decision)
    }

    pub fn with_rate_limit(mut self, decision: crate::limits::Decision) -> Self {
        self.rate_limit = Some(decision);
        self
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a problem always serializes")
    }
}

/// A problem is also the error of a client's request that the contract
/// refuses, so route groups can carry one in their error enums.
impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.detail)
    }
}

impl std::error::Error for Problem {}

fn title_for(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_serializes_with_the_contract_fields() {
        let p = Problem::new(422, "validation_failed", "bad input").with_errors(vec![FieldError {
            pointer: "/email".into(),
            message: "not an email".into(),
        }]);
        let v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(v["status"], 422);
        assert_eq!(v["title"], "Unprocessable Content");
        assert_eq!(v["code"], "validation_failed");
        assert_eq!(v["errors"][0]["pointer"], "/email");
    }

    #[test]
    fn a_problem_without_field_errors_omits_the_list() {
        let v: serde_json::Value =
            serde_json::from_slice(&Problem::unavailable("down").to_json()).unwrap();
        assert!(v.get("errors").is_none());
        assert_eq!(v["status"], 503);
    }
}
