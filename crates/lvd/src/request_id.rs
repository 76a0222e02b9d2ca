//! Request ids: every request gets one, returned in `X-Request-Id` and
//! named in every log line it causes (the runtime's, the components', and
//! the worker's for the queue entries it made). The runtime and the
//! components judge an incoming id by this one rule, so an id the runtime
//! passes on is one the component keeps.

/// The longest `X-Request-Id` kept from a client.
const MAX_LEN: usize = 128;

/// The id of a request: `incoming` when it is 1 to 128 characters of
/// letters, digits and `-_.:@/+=` (what tracing systems and proxies send,
/// nginx's `$request_id` included; nothing that could forge a log line or a
/// header), else a new UUIDv7 (time-ordered, so ids sort as requests came).
pub fn request_id(incoming: Option<&str>) -> String {
    match incoming.map(str::trim) {
        Some(id) if is_valid(id) => id.to_owned(),
        _ => uuid::Uuid::now_v7().to_string(),
    }
}

pub fn is_valid(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:@/+=".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_incoming_id_is_kept_and_anything_else_replaced() {
        assert_eq!(request_id(Some("abc-123_x.y:z")), "abc-123_x.y:z");
        assert_eq!(request_id(Some(" 7f3a ")), "7f3a");
        for bad in [None, Some(""), Some("a b"), Some("x\"y"), Some("line\nbreak"), Some(&*"a".repeat(129))] {
            let made = request_id(bad);
            assert_eq!(uuid::Uuid::parse_str(&made).map(|u| u.get_version_num()), Ok(7), "{bad:?} gave {made}");
        }
    }
}
