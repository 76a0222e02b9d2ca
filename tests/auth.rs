//! Every `/auth` route against real PostgreSQL, Redis, the worker and an SMTP
//! server the tests read mail back from.

use lvd_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

const PASSWORD: &str = "correct horse battery staple";
const MAIL_WAIT: Duration = Duration::from_secs(20);

fn unique_email() -> String {
    format!("User-{}@Example.com", uuid::Uuid::new_v4().simple())
}

/// Registers, reads the code from the mail, verifies; returns the tokens.
async fn signed_up(app: &TestApp, email: &str) -> Value {
    let resp = app.post_json("/auth/register", &json!({ "email": email, "password": PASSWORD })).await;
    assert_eq!(resp.status(), 202);
    let code = app.smtp().wait_for(&email.to_lowercase(), 1, MAIL_WAIT).await.code();
    let resp = app.post_json("/auth/verify", &json!({ "email": email, "code": code })).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn me(app: &TestApp, access: &str) -> reqwest::Response {
    app.client.get(app.url("/auth/me")).bearer_auth(access).send().await.unwrap()
}

async fn problem(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn the_whole_journey_from_sign_up_to_logout() {
    let app = spawn_app().await;
    let email = unique_email();

    let resp = app.post_json("/auth/register", &json!({ "email": email, "password": PASSWORD })).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({ "status": "verification_sent" }));
    let mail = app.smtp().wait_for(&email.to_lowercase(), 1, MAIL_WAIT).await;
    assert!(!mail.html.is_empty() && mail.html.contains(&mail.code()), "the HTML part carries the code too");
    let resp = app.post_json("/auth/verify", &json!({ "email": email, "code": mail.code() })).await;
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("lvd_refresh=") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/auth"), "{cookie}");
    let tokens: Value = resp.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);

    let resp = me(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["email"], email.to_lowercase());
    assert!(uuid::Uuid::parse_str(body["id"].as_str().unwrap()).is_ok());
    assert!(chrono_like(body["created_at"].as_str().unwrap()), "{body}");

    let old = tokens["refresh_token"].as_str().unwrap().to_owned();
    let resp = app.post_json("/auth/refresh", &json!({ "refresh_token": old })).await;
    assert_eq!(resp.status(), 200);
    let rotated: Value = resp.json().await.unwrap();
    assert_ne!(rotated["refresh_token"], old);

    // Reusing the rotated token fails and kills the whole family.
    let (status, body) = problem(app.post_json("/auth/refresh", &json!({ "refresh_token": old })).await).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (401, "invalid_token"));
    let (status, _) = problem(app.post_json("/auth/refresh", &json!({ "refresh_token": rotated["refresh_token"] })).await).await;
    assert_eq!(status, 401, "the newest token of a reused family must die too");

    let fresh: Value = app.post_json("/auth/login", &json!({ "email": email, "password": PASSWORD })).await.json().await.unwrap();
    let access = fresh["access_token"].as_str().unwrap();
    let resp = app
        .client
        .post(app.url("/auth/logout"))
        .bearer_auth(access)
        .json(&json!({ "refresh_token": fresh["refresh_token"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (status, body) = problem(me(&app, access).await).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (401, "invalid_token"));
    let (status, _) = problem(app.post_json("/auth/refresh", &json!({ "refresh_token": fresh["refresh_token"] })).await).await;
    assert_eq!(status, 401);
    // Logout is idempotent.
    assert_eq!(app.post_json("/auth/logout", &json!({ "refresh_token": fresh["refresh_token"] })).await.status(), 204);
}

fn chrono_like(s: &str) -> bool {
    s.len() >= 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T'
}

#[tokio::test]
async fn the_refresh_cookie_alone_refreshes_and_logs_out() {
    let app = spawn_app().await;
    signed_up(&app, &unique_email()).await; // the client keeps the cookie

    let resp = app.client.post(app.url("/auth/refresh")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "refresh from the cookie");
    assert_eq!(app.client.post(app.url("/auth/logout")).send().await.unwrap().status(), 204);
    assert_eq!(app.client.post(app.url("/auth/refresh")).send().await.unwrap().status(), 401, "logout cleared the cookie");
}

#[tokio::test]
async fn a_password_reset_kills_every_earlier_refresh_token() {
    let app = spawn_app().await;
    let email = unique_email();
    let first = signed_up(&app, &email).await;
    let second: Value = app.post_json("/auth/login", &json!({ "email": email, "password": PASSWORD })).await.json().await.unwrap();

    assert_eq!(app.post_json("/auth/password/forgot", &json!({ "email": email })).await.status(), 202);
    let mail = app.smtp().wait_for(&email.to_lowercase(), 2, MAIL_WAIT).await;
    assert!(mail.subject.to_lowercase().contains("reset"), "{}", mail.subject);
    let new_password = "an entirely new passphrase";
    let resp = app
        .post_json("/auth/password/reset", &json!({ "email": email, "code": mail.code(), "new_password": new_password }))
        .await;
    assert_eq!(resp.status(), 204);

    for t in [&first, &second] {
        assert_eq!(app.post_json("/auth/refresh", &json!({ "refresh_token": t["refresh_token"] })).await.status(), 401);
    }
    assert_eq!(app.post_json("/auth/login", &json!({ "email": email, "password": PASSWORD })).await.status(), 401);
    assert_eq!(app.post_json("/auth/login", &json!({ "email": email, "password": new_password })).await.status(), 200);
}

#[tokio::test]
async fn register_and_forgot_reply_alike_for_taken_and_unknown_emails() {
    let app = spawn_app().await;
    let taken = unique_email();
    signed_up(&app, &taken).await;

    let a = app.post_json("/auth/register", &json!({ "email": taken, "password": "another password here" })).await;
    let b = app.post_json("/auth/register", &json!({ "email": unique_email(), "password": PASSWORD })).await;
    assert_eq!((a.status(), b.status()), (reqwest::StatusCode::ACCEPTED, reqwest::StatusCode::ACCEPTED));
    assert_eq!(a.json::<Value>().await.unwrap(), b.json::<Value>().await.unwrap());
    let c = app.post_json("/auth/password/forgot", &json!({ "email": unique_email() })).await;
    assert_eq!(c.status(), 202);
    // The verified account's password did not change.
    assert_eq!(app.post_json("/auth/login", &json!({ "email": taken, "password": PASSWORD })).await.status(), 200);
}

#[tokio::test]
async fn bad_input_gets_the_contracts_errors() {
    let app = spawn_app().await;

    for (password, why) in [("short pass", "11 characters"), (&"p".repeat(129), "129 characters")] {
        let (status, body) = problem(app.post_json("/auth/register", &json!({ "email": unique_email(), "password": password })).await).await;
        assert_eq!((status, body["code"].as_str().unwrap()), (422, "validation_failed"), "{why}");
        assert_eq!(body["errors"][0]["pointer"], "/password", "{why}");
    }
    // Twelve characters, 24 bytes: length counts characters.
    assert_eq!(app.post_json("/auth/register", &json!({ "email": unique_email(), "password": "é".repeat(12) })).await.status(), 202);

    let resp = app.client.post(app.url("/auth/login")).header("content-type", "application/json").body("{\"email\":").send().await.unwrap();
    let (status, body) = problem(resp).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (400, "malformed_json"));

    let resp = app.client.post(app.url("/auth/login")).header("content-type", "text/plain").body("{}").send().await.unwrap();
    let (status, body) = problem(resp).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (415, "unsupported_media_type"));

    let (status, body) = problem(app.post_json("/auth/login", &json!({ "email": "not-an-email" })).await).await;
    assert_eq!(status, 422);
    let pointers: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
    assert_eq!(pointers, ["/email", "/password"]);

    let (status, body) = problem(app.post_json("/auth/verify", &json!({ "email": unique_email(), "code": "12ab56" })).await).await;
    assert_eq!((status, body["errors"][0]["pointer"].as_str().unwrap()), (422, "/code"));
    let body = body.to_string();
    assert!(!body.contains("SELECT") && !body.contains("argon2"), "an error leaked internals: {body}");
}

#[tokio::test]
async fn wrong_expired_and_exhausted_codes_are_refused() {
    let app = spawn_app().await;
    let email = unique_email();
    app.post_json("/auth/register", &json!({ "email": email, "password": PASSWORD })).await;
    let code = app.smtp().wait_for(&email.to_lowercase(), 1, MAIL_WAIT).await.code();
    let wrong = if code == "000000" { "111111" } else { "000000" };

    for _ in 0..5 {
        let (status, body) = problem(app.post_json("/auth/verify", &json!({ "email": email, "code": wrong })).await).await;
        assert_eq!((status, body["code"].as_str().unwrap()), (400, "invalid_code"));
    }
    let (status, body) = problem(app.post_json("/auth/verify", &json!({ "email": email, "code": code })).await).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (429, "too_many_attempts"), "the sixth try fails even with the right code");

    // A new code (after the resend interval) — then let it expire.
    let db = app.db.client().await;
    app.redis_cmd(&["EVAL", "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end return 1", "0", "lvd:otp:sent:*"]).await;
    assert_eq!(app.post_json("/auth/otp/resend", &json!({ "email": email })).await.status(), 202);
    let code = app.smtp().wait_for(&email.to_lowercase(), 2, MAIL_WAIT).await.code();
    db.execute("UPDATE one_time_codes SET expires_at = now() - interval '1 second' WHERE consumed_at IS NULL", &[]).await.unwrap();
    let (status, body) = problem(app.post_json("/auth/verify", &json!({ "email": email, "code": code })).await).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (400, "code_expired"));
}

#[tokio::test]
async fn a_code_is_single_use_and_resends_are_throttled() {
    let app = spawn_app().await;
    let email = unique_email();
    app.post_json("/auth/register", &json!({ "email": email, "password": PASSWORD })).await;
    let code = app.smtp().wait_for(&email.to_lowercase(), 1, MAIL_WAIT).await.code();

    assert_eq!(app.post_json("/auth/otp/resend", &json!({ "email": email })).await.status(), 202);
    let db = app.db.client().await;
    let codes: i64 = db.query_one("SELECT count(*) FROM one_time_codes", &[]).await.unwrap().get(0);
    assert_eq!(codes, 1, "a resend within 60 s makes no new code");

    assert_eq!(app.post_json("/auth/verify", &json!({ "email": email, "code": code })).await.status(), 200);
    let (status, body) = problem(app.post_json("/auth/verify", &json!({ "email": email, "code": code })).await).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (400, "invalid_code"));
    let stored: Vec<u8> = db.query_one("SELECT code_hash FROM one_time_codes", &[]).await.unwrap().get(0);
    assert_ne!(stored, code.as_bytes(), "the code is stored only as a keyed hash");
    assert_eq!(stored.len(), 32);
}

#[tokio::test]
async fn login_fails_alike_for_unknown_email_and_wrong_password_and_waits_for_verification() {
    let app = spawn_app().await;
    let email = unique_email();
    app.post_json("/auth/register", &json!({ "email": email, "password": PASSWORD })).await;

    let (status, body) = problem(app.post_json("/auth/login", &json!({ "email": email, "password": PASSWORD })).await).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (403, "email_not_verified"));
    let (s1, wrong) = problem(app.post_json("/auth/login", &json!({ "email": email, "password": "not the password" })).await).await;
    let (s2, unknown) = problem(app.post_json("/auth/login", &json!({ "email": unique_email(), "password": PASSWORD })).await).await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(wrong, unknown, "the two failures must be indistinguishable");
    assert_eq!(wrong["code"], "invalid_credentials");
}

#[tokio::test]
async fn ten_failed_logins_lock_the_account_even_for_the_right_password() {
    let app = spawn_app().await;
    let email = unique_email();
    signed_up(&app, &email).await;

    for i in 1..=10 {
        let resp = app.post_json("/auth/login", &json!({ "email": email, "password": "not the password" })).await;
        assert_eq!(resp.status(), 401, "failure {i}");
    }
    let resp = app.post_json("/auth/login", &json!({ "email": email, "password": PASSWORD })).await;
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    let (status, body) = problem(resp).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (429, "account_locked"));
    assert!((890..=900).contains(&retry), "locked for {retry} s, expected 15 minutes from the 10th failure");
}

#[tokio::test]
async fn the_per_ip_limit_holds_across_two_runtime_instances() {
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_RATE_LIMIT_AUTH_PER_IP".into(), "5".into()));
    let app = spawn_with(opts).await;
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_RATE_LIMIT_AUTH_PER_IP".into(), "5".into()));
    let dir = TempDir::new();
    let (_second, second) = start_runtime(&opts, &app.db, &app.redis, &dir).await.unwrap();
    let client = reqwest::Client::new();
    let body = json!({ "email": unique_email() });

    let mut statuses = Vec::new();
    let mut last = None;
    for i in 0..6 {
        let base = if i % 2 == 0 { &app.address } else { &second };
        let resp = client.post(format!("{base}/auth/password/forgot")).json(&body).send().await.unwrap();
        statuses.push(resp.status().as_u16());
        last = Some(resp);
    }

    assert_eq!(statuses, [202, 202, 202, 202, 202, 429]);
    let resp = last.unwrap();
    let h = resp.headers();
    assert_eq!(h["ratelimit-limit"], "5");
    assert_eq!(h["ratelimit-remaining"], "0");
    let reset: u64 = h["ratelimit-reset"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&reset));
    assert_eq!(h["retry-after"].to_str().unwrap(), reset.to_string());
    let (_, body) = problem(resp).await;
    assert_eq!(body["code"], "rate_limited");
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_RATE_LIMIT_AUTH_PER_IP".into(), "2".into()));
    // The client's address, then a second proxy of ours that nginx heard from.
    opts.env.push(("SPIN_VARIABLE_TRUSTED_PROXIES".into(), "127.0.0.1,10.9.9.9".into()));
    let app = spawn_with(opts).await;
    let forgot = |ip: &'static str| {
        app.client
            .post(app.url("/auth/password/forgot"))
            .header("x-forwarded-for", format!("{ip}, 10.9.9.9"))
            .json(&json!({ "email": "nobody@example.com" }))
            .send()
    };

    let a: Vec<u16> = [forgot("203.0.113.7").await, forgot("203.0.113.7").await, forgot("203.0.113.7").await]
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    let b = forgot("198.51.100.1").await.unwrap().status();

    assert_eq!(a, [202, 202, 429], "one client behind the proxy is limited");
    assert_eq!(b, 202, "another client behind the same proxy has its own budget");

    // Without a trusted proxy the header is ignored: every request counts for the peer.
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_RATE_LIMIT_AUTH_PER_IP".into(), "2".into()));
    let direct = spawn_with(opts).await;
    let mut statuses = Vec::new();
    for ip in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        let resp = direct
            .client
            .post(direct.url("/auth/password/forgot"))
            .header("x-forwarded-for", ip)
            .json(&json!({ "email": "nobody@example.com" }))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 429], "a spoofed X-Forwarded-For must not buy a fresh budget");
}

#[tokio::test]
async fn a_forged_first_hop_behind_a_trusted_proxy_does_not_buy_a_fresh_budget() {
    // nginx and cloud balancers append the address they heard from, so a
    // client that sends its own X-Forwarded-For arrives as "forged, real".
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_RATE_LIMIT_AUTH_PER_IP".into(), "2".into()));
    opts.env.push(("SPIN_VARIABLE_TRUSTED_PROXIES".into(), "127.0.0.1".into()));
    let app = spawn_with(opts).await;
    let mut statuses = Vec::new();
    for forged in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        let resp = app
            .client
            .post(app.url("/auth/password/forgot"))
            .header("x-forwarded-for", format!("{forged}, 203.0.113.7"))
            .json(&json!({ "email": "nobody@example.com" }))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 429], "every request counted for 203.0.113.7, the hop the proxy wrote");
}

#[tokio::test]
async fn a_forged_spin_client_addr_does_not_buy_a_fresh_budget() {
    // Spin 4.0.2 hands a component the client's own headers before its
    // `spin-*` ones, so a client can send `spin-client-addr` and the
    // component sees two values: the forged one first, Spin's last.
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_RATE_LIMIT_AUTH_PER_IP".into(), "2".into()));
    opts.env.push(("SPIN_VARIABLE_TRUSTED_PROXIES".into(), "203.0.113.9".into()));
    let app = spawn_with(opts).await;
    let mut statuses = Vec::new();
    // The last forgery even names a trusted proxy, to have X-Forwarded-For believed.
    for (forged, xff) in [("192.0.2.1:1", "192.0.2.11"), ("192.0.2.2:1", "192.0.2.12"), ("203.0.113.9:1", "192.0.2.13")] {
        let resp = app
            .client
            .post(app.url("/auth/password/forgot"))
            .header("spin-client-addr", forged)
            .header("x-forwarded-for", xff)
            .json(&json!({ "email": "nobody@example.com" }))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 429], "every request counted for the real peer");
}

/// Lets the next `register`, `resend` or `forgot` start a new code at once,
/// as if the one-code-a-minute interval had passed.
async fn skip_resend_interval(app: &TestApp) {
    app.redis_cmd(&["EVAL", "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end return 1", "0", "lvd:otp:sent:*"]).await;
}

/// A six-digit code that is not `code`.
fn wrong_code(code: &str) -> &'static str {
    if code == "000000" { "111111" } else { "000000" }
}

#[tokio::test]
async fn a_sign_up_code_activates_only_the_password_registered_with_it() {
    let app = spawn_app().await;
    let email = unique_email();
    let attackers = "the attacker's own password";
    app.post_json("/auth/register", &json!({ "email": email, "password": PASSWORD })).await;
    let victims_code = app.smtp().wait_for(&email.to_lowercase(), 1, MAIL_WAIT).await.code();

    // Someone registers the same unverified email with their own password:
    // within the resend interval (no new mail), then after it (a new code,
    // bound to their password, goes to the victim's mailbox).
    assert_eq!(app.post_json("/auth/register", &json!({ "email": email, "password": attackers })).await.status(), 202);
    skip_resend_interval(&app).await;
    assert_eq!(app.post_json("/auth/register", &json!({ "email": email, "password": attackers })).await.status(), 202);
    app.smtp().wait_for(&email.to_lowercase(), 2, MAIL_WAIT).await;

    let resp = app.post_json("/auth/verify", &json!({ "email": email, "code": victims_code })).await;
    assert_eq!(resp.status(), 200, "the victim's code still verifies");
    assert_eq!(app.post_json("/auth/login", &json!({ "email": email, "password": attackers })).await.status(), 401);
    assert_eq!(app.post_json("/auth/login", &json!({ "email": email, "password": PASSWORD })).await.status(), 200);
}

#[tokio::test]
async fn reset_codes_are_capped_per_account_over_a_day_without_locking_sign_in() {
    let app = spawn_app().await;
    let email = unique_email();
    signed_up(&app, &email).await;
    let new_password = "an entirely new passphrase";

    // Four new codes, five wrong tries each: twenty wrong codes.
    for round in 0..4 {
        skip_resend_interval(&app).await;
        assert_eq!(app.post_json("/auth/password/forgot", &json!({ "email": email })).await.status(), 202);
        let code = app.smtp().wait_for(&email.to_lowercase(), 2 + round, MAIL_WAIT).await.code();
        for _ in 0..5 {
            let body = json!({ "email": email, "code": wrong_code(&code), "new_password": new_password });
            let (status, body) = problem(app.post_json("/auth/password/reset", &body).await).await;
            assert_eq!((status, body["code"].as_str().unwrap()), (400, "invalid_code"), "round {round}");
        }
    }
    skip_resend_interval(&app).await;
    app.post_json("/auth/password/forgot", &json!({ "email": email })).await;
    let code = app.smtp().wait_for(&email.to_lowercase(), 6, MAIL_WAIT).await.code();

    let resp = app.post_json("/auth/password/reset", &json!({ "email": email, "code": code, "new_password": new_password })).await;
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let (status, body) = problem(resp).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (429, "too_many_attempts"), "the day's wrong codes are spent");
    assert!(retry.is_some_and(|s| (1..=24 * 3600).contains(&s)), "Retry-After {retry:?}");
    // A stranger can spend them; the owner still signs in with the password.
    assert_eq!(app.post_json("/auth/login", &json!({ "email": email, "password": PASSWORD })).await.status(), 200);
}

/// `(status, body)` of six tries of `code` at `path` for `email`.
async fn six_tries(app: &TestApp, path: &str, email: &str, code: &str) -> Vec<(u16, Value)> {
    let mut answers = Vec::new();
    for _ in 0..6 {
        let body = json!({ "email": email, "code": code, "new_password": "an entirely new passphrase" });
        answers.push(problem(app.post_json(path, &body).await).await);
    }
    answers
}

#[tokio::test]
async fn wrong_reset_codes_answer_alike_for_an_account_and_an_unknown_email() {
    let app = spawn_app().await;
    let known = unique_email();
    let unknown = unique_email();
    signed_up(&app, &known).await;
    for email in [&known, &unknown] {
        assert_eq!(app.post_json("/auth/password/forgot", &json!({ "email": email })).await.status(), 202);
    }
    let code = app.smtp().wait_for(&known.to_lowercase(), 2, MAIL_WAIT).await.code();

    let for_known = six_tries(&app, "/auth/password/reset", &known, wrong_code(&code)).await;
    let for_unknown = six_tries(&app, "/auth/password/reset", &unknown, wrong_code(&code)).await;

    assert_eq!(for_known, for_unknown);
    assert_eq!(for_known[5].0, 429, "the sixth try is refused for both");
}

#[tokio::test]
async fn wrong_sign_up_codes_answer_alike_for_a_pending_sign_up_and_an_unknown_email() {
    let app = spawn_app().await;
    let pending = unique_email();
    let unknown = unique_email();
    app.post_json("/auth/register", &json!({ "email": pending, "password": PASSWORD })).await;
    assert_eq!(app.post_json("/auth/otp/resend", &json!({ "email": unknown })).await.status(), 202);
    let code = app.smtp().wait_for(&pending.to_lowercase(), 1, MAIL_WAIT).await.code();
    // An expired code tells nobody it existed either.
    let db = app.db.client().await;
    db.execute("UPDATE one_time_codes SET expires_at = now() - interval '1 second'", &[]).await.unwrap();

    let for_pending = six_tries(&app, "/auth/verify", &pending, wrong_code(&code)).await;
    let for_unknown = six_tries(&app, "/auth/verify", &unknown, wrong_code(&code)).await;

    assert_eq!(for_pending, for_unknown);
    assert_eq!(for_pending[0].1["code"], "invalid_code");
    assert_eq!(for_pending[5].0, 429, "the sixth try is refused for both");
}

/// The `Set-Cookie` of a sign-in sent with these extra headers.
async fn login_cookie(app: &TestApp, email: &str, headers: &[(&str, &str)]) -> String {
    let mut req = app.client.post(app.url("/auth/login")).json(&json!({ "email": email, "password": PASSWORD }));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["set-cookie"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_refresh_cookie_is_secure_behind_a_tls_proxy_and_outside_loopback() {
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_TRUSTED_PROXIES".into(), "127.0.0.1".into()));
    let app = spawn_with(opts).await;
    let email = unique_email().to_lowercase();
    app.signed_in(&email).await;

    let via_tls_proxy = login_cookie(&app, &email, &[("x-forwarded-proto", "https")]).await;
    let public_host = login_cookie(&app, &email, &[("host", "dashboard.example.com")]).await;
    let plain_proxy = login_cookie(&app, &email, &[("x-forwarded-proto", "http"), ("host", "dashboard.example.com")]).await;
    let local = login_cookie(&app, &email, &[]).await;

    assert!(via_tls_proxy.ends_with("; Secure"), "a trusted proxy said https: {via_tls_proxy}");
    assert!(public_host.ends_with("; Secure"), "not loopback, so Secure by default: {public_host}");
    assert!(!plain_proxy.contains("Secure"), "a trusted proxy said http: {plain_proxy}");
    assert!(!local.contains("Secure"), "a loopback client of a loopback host: {local}");

    // From a proxy that is not trusted, X-Forwarded-Proto means nothing.
    let untrusted = spawn_with(AppOptions::product()).await;
    untrusted.signed_in(&email).await;
    let forged = login_cookie(&untrusted, &email, &[("x-forwarded-proto", "https")]).await;
    assert!(!forged.contains("Secure"), "{forged}");
}

#[tokio::test]
async fn a_secret_shorter_than_32_bytes_fails_every_request_naming_its_variable() {
    for (variable, name) in [("SPIN_VARIABLE_JWT_SECRET", "jwt_secret"), ("SPIN_VARIABLE_OTP_KEY", "otp_key")] {
        let mut opts = AppOptions::product();
        opts.env.push((variable.into(), "x".repeat(31)));
        let app = spawn_with(opts).await;

        let resp = app.post_json("/auth/login", &json!({ "email": unique_email(), "password": PASSWORD })).await;
        let (status, body) = problem(resp).await;

        assert_eq!((status, body["code"].as_str().unwrap()), (500, "internal_error"), "{name}: {body}");
        assert!(!body.to_string().contains("xxxx"), "the secret leaked: {body}");
        eventually(Duration::from_secs(5), &format!("the log to name {name}"), || async {
            app.runtime.log().iter().any(|l| l.contains(name) && l.contains("32")).then_some(())
        })
        .await;
    }
    // Every component that reads jwt_secret refuses it too.
    let mut opts = AppOptions::product();
    opts.env.push(("SPIN_VARIABLE_JWT_SECRET".into(), "short".into()));
    let app = spawn_with(opts).await;
    assert_eq!(app.client.get(app.url("/api/apps")).bearer_auth("any").send().await.unwrap().status(), 500);
}

/// The worker's count of hashes and verifications it made for the app.
async fn worker_hashes(app: &TestApp) -> (u64, u64) {
    let url = format!("{}/metrics", app.worker.as_ref().unwrap().address);
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let count = |op: &str| {
        let prefix = format!("lvd_worker_password_hashes_total{{op=\"{op}\",outcome=\"ok\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |n| n.parse().unwrap())
    };
    (count("hash"), count("verify"))
}

async fn stored_hash(app: &TestApp, email: &str) -> String {
    let db = app.db.client().await;
    db.query_one("SELECT password_hash FROM users WHERE email = $1", &[&email.to_lowercase()]).await.unwrap().get(0)
}

/// Where passwords are hashed: by the worker while it is up (each hash and
/// verification of a sign-up and three sign-ins counted there, the unknown
/// email's included), by the component when it is down (none counted);
/// the replies and the stored hash are the same either way.
#[tokio::test]
async fn passwords_are_hashed_by_the_worker_when_it_is_up_and_by_the_component_when_not() {
    let app = spawn_app().await;
    let email = unique_email();
    signed_up(&app, &email).await;
    let resp = app.post_json("/auth/login", &json!({ "email": email, "password": PASSWORD })).await;
    assert_eq!(resp.status(), 200);
    let (s1, wrong) = problem(app.post_json("/auth/login", &json!({ "email": email, "password": "not the password" })).await).await;
    let (s2, unknown) = problem(app.post_json("/auth/login", &json!({ "email": unique_email(), "password": PASSWORD })).await).await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(wrong, unknown);

    let expected = if sidecar_up() { (1, 3) } else { (0, 0) };
    assert_eq!(worker_hashes(&app).await, expected, "(hashes, verifications) by the worker");
    let phc = stored_hash(&app, &email).await;
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
}

/// A worker that stops answering mid-run (hung, then gone) costs sign-in
/// nothing but time: the component verifies the worker's hashes itself and
/// makes new ones of the same kind.
#[tokio::test]
async fn sign_in_and_up_keep_working_when_the_hasher_hangs_or_dies() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut app = spawn_app().await;
    let email = unique_email();
    signed_up(&app, &email).await;
    let pid = Pid::from_raw(app.worker.as_ref().unwrap().child.id().unwrap() as i32);

    kill(pid, Signal::SIGSTOP).unwrap();
    let resp = app.post_json("/auth/login", &json!({ "email": email, "password": PASSWORD })).await;
    assert_eq!(resp.status(), 200, "the component verified past a hung hasher");
    let (status, _) = problem(app.post_json("/auth/login", &json!({ "email": email, "password": "not the password" })).await).await;
    assert_eq!(status, 401);

    app.worker.as_mut().unwrap().kill().await;
    let resp = app.post_json("/auth/login", &json!({ "email": email, "password": PASSWORD })).await;
    assert_eq!(resp.status(), 200, "and past a dead one");
    let other = unique_email();
    let resp = app.post_json("/auth/register", &json!({ "email": other, "password": PASSWORD })).await;
    assert_eq!(resp.status(), 202);
    let db = app.db.client().await;
    let pending: String =
        db.query_one("SELECT password_hash FROM users WHERE email = $1", &[&other.to_lowercase()]).await.unwrap().get(0);
    assert!(pending.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{pending}");
}
