//! Sending email over SMTP with lettre. Host, port, TLS mode and credentials
//! come from one URL (`smtp://host:1025`, `smtp://user:pass@host:587?tls=required`,
//! `smtps://user:pass@host:465`). Every message has a plain-text and an HTML part.

use anyhow::{Context, Result};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use lvd::queues::EmailJob;
use std::time::Duration;

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// Whether trying again later can help.
#[derive(Debug)]
pub enum SendError {
    Transient(String),
    Permanent(String),
}

impl Mailer {
    pub fn new(smtp_url: &str, from: &str) -> Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
            .context("invalid LVD_SMTP_URL")?
            .timeout(Some(Duration::from_secs(10)))
            .build();
        Ok(Self { transport, from: from.parse().context("invalid LVD_SMTP_FROM")? })
    }

    pub async fn send(&self, job: &EmailJob) -> Result<(), SendError> {
        let to: Mailbox = job.to().parse().map_err(|e| SendError::Permanent(format!("bad recipient: {e}")))?;
        let (subject, text, html) = render(job);
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| SendError::Permanent(format!("could not build the message: {e}")))?;
        self.transport.send(message).await.map(drop).map_err(|e| {
            if e.is_permanent() { SendError::Permanent(e.to_string()) } else { SendError::Transient(e.to_string()) }
        })
    }
}

/// Subject, text and HTML of an email. The code stands alone on its line so
/// people (and tests) can pick it out.
pub fn render(job: &EmailJob) -> (String, String, String) {
    if let EmailJob::JobFinished { job_kind, app, status, error, link, download_path, .. } = job {
        return render_job(job_kind, app, status, error.as_deref(), link, download_path);
    }
    if let EmailJob::AlertChanged { .. } = job {
        return render_alert(job);
    }
    let (subject, lead, code) = match job {
        EmailJob::VerificationCode { code, .. } => {
            ("Your Live Validation Dashboard verification code", "Use this code to verify your email address:", code)
        }
        EmailJob::PasswordReset { code, .. } => {
            ("Reset your Live Validation Dashboard password", "Use this code to choose a new password:", code)
        }
        EmailJob::JobFinished { .. } | EmailJob::AlertChanged { .. } => unreachable!("rendered above"),
    };
    let text = format!("{lead}\n\n    {code}\n\nThe code expires in 10 minutes. If you did not ask for it, ignore this email.\n");
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><p>{lead}</p>\
         <p style=\"font-size:28px;letter-spacing:4px;font-weight:bold\">{code}</p>\
         <p>The code expires in 10 minutes. If you did not ask for it, ignore this email.</p></body></html>"
    );
    (subject.to_owned(), text, html)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The mail that tells an owner an alert fired or resolved: what, the
/// figure against the threshold, and a link to the app's live view.
fn render_alert(job: &EmailJob) -> (String, String, String) {
    let EmailJob::AlertChanged { app, alert_kind, figure, event, state, value, threshold, window, events, at, link, .. } = job else {
        unreachable!("called for alert mail only")
    };
    let what = match event {
        Some(e) => format!("{alert_kind} on {e}"),
        None => alert_kind.clone(),
    };
    let verb = if state == "firing" { "FIRING" } else { "RESOLVED" };
    let subject = format!("[{verb}] {what} in {app}");
    let names = if events.is_empty() { String::new() } else { format!("New unplanned events: {}\n", events.join(", ")) };
    let text = format!(
        "Alert {what} in {app} is {state} as of {at}.\n\n{figure} over {window}: {value} (threshold {threshold})\n{names}\nLive view: {link}\n"
    );
    let html_names = if events.is_empty() { String::new() } else { format!("<p>New unplanned events: {}</p>", esc(&events.join(", "))) };
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><p>Alert <b>{}</b> in <b>{}</b> is <b>{}</b> as of {}.</p>\
         <p>{} over {}: <b>{}</b> (threshold {})</p>{}<p><a href=\"{}\">Open the live view</a></p></body></html>",
        esc(&what),
        esc(app),
        esc(state),
        esc(at),
        esc(figure),
        esc(window),
        value,
        threshold,
        html_names,
        esc(link)
    );
    (subject, text, html)
}

/// The mail that tells an owner their report (or export) is done or failed.
fn render_job(kind: &str, app: &str, status: &str, error: Option<&str>, link: &str, download_path: &str) -> (String, String, String) {
    if status == "done" {
        let subject = format!("Your {kind} of {app} is ready");
        let text = format!(
            "Your {kind} of {app} is ready.\n\nDownload it from the dashboard: {link}\n(API: GET {download_path})\n\nThe file is kept for a limited time.\n"
        );
        let html = format!(
            "<!doctype html><html><body style=\"font-family:sans-serif\"><p>Your {kind} of <b>{}</b> is ready.</p>\
             <p><a href=\"{}\">Download it from the dashboard</a> (API: <code>GET {}</code>).</p>\
             <p>The file is kept for a limited time.</p></body></html>",
            esc(app),
            esc(link),
            esc(download_path)
        );
        (subject, text, html)
    } else {
        let why = error.unwrap_or("an unknown error");
        let subject = format!("Your {kind} of {app} failed");
        let text = format!("Your {kind} of {app} could not be produced: {why}.\n\nYou can ask for it again from the dashboard: {link}\n");
        let html = format!(
            "<!doctype html><html><body style=\"font-family:sans-serif\"><p>Your {kind} of <b>{}</b> could not be produced: {}.</p>\
             <p><a href=\"{}\">Ask for it again from the dashboard</a>.</p></body></html>",
            esc(app),
            esc(why),
            esc(link)
        );
        (subject, text, html)
    }
}
