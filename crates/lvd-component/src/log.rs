//! Components' log lines: one JSON object per line on stderr (which Spin
//! writes to its log files or terminal), each naming the component and the
//! request it is about. Callers pass causes and ids, never a secret, code,
//! token, password or event property: nothing here could tell them apart.

use serde_json::{Map, Value, json};

fn write(level: &str, component: &str, request_id: Option<&str>, fields: Map<String, Value>) {
    let mut line = Map::new();
    line.insert("ts".into(), chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into());
    line.insert("level".into(), level.into());
    line.insert("component".into(), component.into());
    if let Some(id) = request_id {
        line.insert("request_id".into(), id.into());
    }
    line.extend(fields);
    eprintln!("{}", Value::Object(line));
}

/// What a request's handler noted (a 5xx's cause), with the request.
pub fn request(component: &str, request_id: &str, method: &str, route: &str, status: u16, message: &str) {
    let fields = json!({ "method": method, "route": route, "status": status, "message": message });
    let Value::Object(fields) = fields else { unreachable!("an object literal") };
    write(if status >= 500 { "error" } else { "warn" }, component, Some(request_id), fields);
}

/// A fault outside a request's reply (a streamed body's task, a step after
/// the reply): `request_id` names the request it belongs to.
pub fn error(component: &str, request_id: Option<&str>, message: &str) {
    note("error", component, request_id, message);
}

/// Something worth an operator's attention that the request survived (a
/// fallback taken).
pub fn warn(component: &str, request_id: Option<&str>, message: &str) {
    note("warn", component, request_id, message);
}

fn note(level: &str, component: &str, request_id: Option<&str>, message: &str) {
    let mut fields = Map::new();
    fields.insert("message".into(), message.into());
    write(level, component, request_id, fields);
}
