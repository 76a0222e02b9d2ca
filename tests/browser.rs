//! The dashboard page in a real browser (Debian's headless Chromium, driven
//! by playwright-core; both installed by script/test) against the app, its
//! worker and MailDev. The scenario is `browser/dashboard.mjs`; screenshots
//! of the live view, the jobs list, an HTML report opened in Chromium and an
//! alert that fired land in `target/screenshots/`.

use lvd_tests::*;

#[tokio::test]
async fn a_new_user_signs_up_sets_a_rule_and_watches_events_arrive_live() {
    let app = spawn_app().await;
    let shots = repo_root().join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let output = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/browser/dashboard.mjs"))
        .arg(&app.address)
        .arg(format!("http://127.0.0.1:{}", app.smtp().web_port))
        .arg(&shots)
        .output()
        .await
        .expect("node must be installed (script/test installs it)");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("{stdout}{stderr}");
    assert!(output.status.success(), "the browser scenario failed (see target/screenshots/failure.png)");
    for shot in ["02-live-view.png", "03-invalid-event.png", "04-phone.png", "05-jobs.png", "06-report.png", "07-alerts.png", "08-alerts-phone.png"] {
        assert!(std::fs::metadata(shots.join(shot)).is_ok_and(|m| m.len() > 10_000), "{shot} was not saved");
    }
}
