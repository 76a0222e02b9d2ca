//! Causes of faults, kept whole for the log line of the reply they end in.
//! Adapters wrap the driver's own error (or, for a fault with no error
//! value, a sentence) as a [`Cause`]; the component that answers 500 or 503
//! logs [`chain`] of it. Causes never reach a client (`crate::problem`).

/// A fault's underlying error.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error and every `source()` under it, outermost first, joined by `": "`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let line = cause.to_string();
        // Wrappers often repeat their cause's text (`#[error(transparent)]`,
        // `{0}`); say it once.
        if !text.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        next = cause.source();
    }
    text
}

/// PostgreSQL's own refusal of a statement: its SQLSTATE and message, as
/// either adapter received them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServerError {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("database unavailable")]
    struct Outer(#[source] Cause);

    #[test]
    fn a_chain_names_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(chain(&Outer(Box::new(io))), "database unavailable: connection refused");
        let server = ServerError { code: "22P02".into(), message: "bad input".into() };
        assert_eq!(chain(&Outer(Box::new(server))), "database unavailable: 22P02: bad input");
    }
}
