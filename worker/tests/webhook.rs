//! Webhook delivery against real HTTP receivers on loopback: each test runs
//! its own receiver (raw HTTP/1.1 over a tokio listener, so it can misbehave
//! on purpose) that counts the connections it accepts.

use lvd::webhook::{AllowList, verify};
use lvd_worker::webhook::{Attempt, Sender};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use uuid::Uuid;

/// How a receiver answers.
#[derive(Clone, Copy)]
enum Reply {
    /// This status, with a short body.
    Status(u16),
    /// `302 Found` to another address.
    Redirect(SocketAddr),
    /// `200 OK` and a body that never ends.
    Endless,
    /// Nothing, ever; the connection stays open.
    Silence,
}

struct Receiver {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: mpsc::UnboundedReceiver<Request>,
}

struct Request {
    /// Header lines, names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

async fn spawn_receiver(reply: Reply) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let (tx, requests) = mpsc::unbounded_channel();
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(answer(stream, reply, tx.clone()));
        }
    });
    Receiver { addr, connections, requests }
}

async fn answer(mut stream: TcpStream, reply: Reply, requests: mpsc::UnboundedSender<Request>) {
    let Some(request) = read_request(&mut stream).await else { return };
    let _ = requests.send(request);
    match reply {
        Reply::Status(code) => {
            let head = format!("HTTP/1.1 {code} Whatever\r\ncontent-length: 2\r\n\r\nok");
            let _ = stream.write_all(head.as_bytes()).await;
        }
        Reply::Redirect(to) => {
            let head = format!("HTTP/1.1 302 Found\r\nlocation: http://{to}/\r\ncontent-length: 0\r\n\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
        }
        Reply::Endless => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
            let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
            while stream.write_all(chunk.as_bytes()).await.is_ok() {}
        }
        Reply::Silence => {
            let mut sink = [0; 1024];
            while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        }
    }
}

/// One HTTP/1.1 request with a `content-length` body.
async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut more = [0; 4096];
        let n = stream.read(&mut more).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&more[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.iter().find(|(n, _)| n == "content-length")?.1.parse().ok()?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut more = [0; 4096];
        let n = stream.read(&mut more).await.ok().filter(|&n| n > 0)?;
        body.extend_from_slice(&more[..n]);
    }
    Some(Request { headers, body })
}

fn allowing(receiver: &Receiver) -> AllowList {
    AllowList::parse(&receiver.addr.to_string())
}

const BODY: &[u8] = br#"{"alert":"a","app":"b","kind":"error_rate","state":"firing","at":"2025-01-01T00:00:00Z","value":0.5,"threshold":0.1}"#;
const SECRET: &[u8] = b"whsec-test";

async fn post(sender: &Sender, url: &str) -> Attempt {
    sender.post(url, SECRET, BODY, Uuid::new_v4()).await
}

#[tokio::test]
async fn a_webhook_to_an_allowed_address_is_delivered_signed_and_labelled() {
    let mut receiver = spawn_receiver(Reply::Status(200)).await;
    let sender = Sender::new(allowing(&receiver)).unwrap();
    let delivery = Uuid::new_v4();

    let attempt = sender.post(&format!("http://{}/hook", receiver.addr), SECRET, BODY, delivery).await;

    assert_eq!(attempt, Attempt { status: Some(200), error: None });
    assert!(attempt.delivered());
    let request = receiver.requests.recv().await.unwrap();
    assert_eq!(request.body, BODY);
    assert!(verify(SECRET, BODY, request.header("x-lvd-signature").unwrap()));
    assert_eq!(request.header("x-lvd-delivery"), Some(delivery.to_string().as_str()));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert!(request.header("user-agent").unwrap().starts_with("lvd-webhook/"));
}

#[tokio::test]
async fn a_webhook_to_a_loopback_address_not_allowed_is_refused_without_connecting() {
    let receiver = spawn_receiver(Reply::Status(200)).await;
    let sender = Sender::new(AllowList::default()).unwrap();

    let http = post(&sender, &format!("http://{}/hook", receiver.addr)).await;
    let https = post(&sender, &format!("https://{}/hook", receiver.addr)).await;

    for attempt in [http, https] {
        assert!(!attempt.delivered());
        assert_eq!(attempt.error.as_deref(), Some("address not allowed: 127.0.0.1"));
    }
    assert_eq!(receiver.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_webhook_to_localhost_not_allowed_is_refused_without_connecting() {
    let receiver = spawn_receiver(Reply::Status(200)).await;
    let sender = Sender::new(AllowList::default()).unwrap();

    let attempt = post(&sender, &format!("https://localhost:{}/hook", receiver.addr.port())).await;

    assert!(!attempt.delivered());
    assert_eq!(attempt.status, None);
    assert!(attempt.error.unwrap().contains("must not point at a loopback"));
    assert_eq!(receiver.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_webhook_redirect_is_not_followed() {
    let target = spawn_receiver(Reply::Status(200)).await;
    let receiver = spawn_receiver(Reply::Redirect(target.addr)).await;
    let allow = AllowList::parse(&format!("{} {}", receiver.addr, target.addr));
    let sender = Sender::new(allow).unwrap();

    let attempt = post(&sender, &format!("http://{}/hook", receiver.addr)).await;

    assert!(!attempt.delivered());
    assert_eq!(attempt.status, Some(302));
    assert_eq!(attempt.error.as_deref(), Some("redirect not followed (status 302)"));
    assert_eq!(target.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_webhook_reply_body_is_read_only_up_to_a_small_bound() {
    let receiver = spawn_receiver(Reply::Endless).await;
    let sender = Sender::new(allowing(&receiver)).unwrap();
    let started = Instant::now();

    let attempt = post(&sender, &format!("http://{}/hook", receiver.addr)).await;

    // Reading the endless body would run into the 5 s timeout.
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(attempt, Attempt { status: Some(200), error: None });
}

#[tokio::test]
async fn a_webhook_receiver_that_never_answers_times_out() {
    let receiver = spawn_receiver(Reply::Silence).await;
    let sender = Sender::new(allowing(&receiver)).unwrap();
    let started = Instant::now();

    let attempt = post(&sender, &format!("http://{}/hook", receiver.addr)).await;

    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    assert_eq!(attempt, Attempt { status: None, error: Some("timeout".into()) });
    assert_eq!(receiver.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_webhook_to_a_closed_port_reports_the_refused_connection() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let sender = Sender::new(AllowList::parse(&closed.to_string())).unwrap();

    let attempt = post(&sender, &format!("http://{closed}/hook")).await;

    assert_eq!(attempt, Attempt { status: None, error: Some("connection refused".into()) });
}

#[tokio::test]
async fn a_webhook_answered_with_a_server_error_is_not_delivered() {
    let receiver = spawn_receiver(Reply::Status(500)).await;
    let sender = Sender::new(allowing(&receiver)).unwrap();

    let attempt = post(&sender, &format!("http://{}/hook", receiver.addr)).await;

    assert_eq!(attempt, Attempt { status: Some(500), error: Some("status 500".into()) });
}
