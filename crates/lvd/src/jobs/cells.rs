//! CSV a spreadsheet opens safely. Quoting is RFC 4180's (the `csv` crate:
//! a field holding a comma, a quote, CR or LF is quoted, quotes doubled,
//! records end with CRLF). A cell a spreadsheet would run as a formula —
//! one starting with `=`, `+`, `-`, `@`, a tab or a CR (OWASP's list for
//! CSV injection) — gets a leading `'`, which spreadsheets show as text and
//! a reader of the file can strip.

use std::borrow::Cow;

/// `value` as a cell no spreadsheet evaluates.
pub fn neutralise(value: &str) -> Cow<'_, str> {
    match value.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => Cow::Owned(format!("'{value}")),
        _ => Cow::Borrowed(value),
    }
}

/// A CSV writer with the product's dialect, into `out`.
pub fn writer<W: std::io::Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).quote_style(csv::QuoteStyle::Necessary).from_writer(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised_and_everything_else_is_left_alone() {
        for bad in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "=HYPERLINK(\"http://x\")"] {
            assert_eq!(neutralise(bad), format!("'{bad}"));
        }
        for good in ["", "signup", "1", "{\"a\":1}", "'quoted", " =x"] {
            assert_eq!(neutralise(good), good);
        }
    }

    #[test]
    fn fields_are_quoted_as_rfc_4180_says() {
        let mut w = writer(Vec::new());
        w.write_record(["a,b", "say \"hi\"", "two\nlines", "plain", &neutralise("=cmd")]).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(text, "\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",plain,'=cmd\r\n");
    }
}
