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
    let (subject, lead, code) = match job {
        EmailJob::VerificationCode { code, .. } => {
            ("Your Live Validation Dashboard verification code", "Use this code to verify your email address:", code)
        }
        EmailJob::PasswordReset { code, .. } => {
            ("Reset your Live Validation Dashboard password", "Use this code to choose a new password:", code)
        }
    };
    let text = format!("{lead}\n\n    {code}\n\nThe code expires in 10 minutes. If you did not ask for it, ignore this email.\n");
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><p>{lead}</p>\
         <p style=\"font-size:28px;letter-spacing:4px;font-weight:bold\">{code}</p>\
         <p>The code expires in 10 minutes. If you did not ask for it, ignore this email.</p></body></html>"
    );
    (subject.to_owned(), text, html)
}
