//! The worker's Prometheus metrics.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Jobs settled, by queue and outcome (sent, retried, dead_lettered).
    pub jobs: IntCounterVec,
    /// Entries waiting per queue, sampled.
    pub queue_depth: IntGaugeVec,
    pub send_seconds: prometheus::Histogram,
    /// Events written to `log_entries`.
    pub rows: prometheus::IntCounter,
    /// Rows PostgreSQL refused, kept in `quarantined_rows`.
    pub quarantined: prometheus::IntCounter,
    /// Entries being worked now, and how many may be at once, by queue:
    /// their ratio is the worker's utilisation.
    pub busy: IntGaugeVec,
    pub concurrency: IntGaugeVec,
    /// 1 from the shutdown signal until the entries in flight are done.
    pub draining: prometheus::IntGauge,
    /// Entries still in flight when a drain ran out of time (reclaimed by
    /// another worker later).
    pub drain_abandoned: prometheus::IntCounter,
    /// Password hashes and verifications asked of the worker, by op (hash,
    /// verify) and outcome (ok, refused, busy, failed).
    pub password_hashes: IntCounterVec,
    /// Alert evaluations, by outcome (ok, firing, failed).
    pub alert_evaluations: IntCounterVec,
    /// Alert state changes recorded, by state (firing, resolved).
    pub alert_changes: IntCounterVec,
    /// Alert notifications, by channel (email, webhook) and outcome (sent,
    /// retried, failed).
    pub alert_notifications: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let jobs = IntCounterVec::new(Opts::new("lvd_worker_jobs_total", "Jobs settled, by queue and outcome"), &["queue", "outcome"])
            .expect("valid metric");
        let queue_depth =
            IntGaugeVec::new(Opts::new("lvd_worker_queue_depth", "Entries waiting per queue"), &["queue"]).expect("valid metric");
        let send = Histogram::with_opts(HistogramOpts::new("lvd_worker_send_seconds", "Time to hand one email to SMTP"))
            .expect("valid metric");
        registry.register(Box::new(jobs.clone())).expect("unique metric");
        registry.register(Box::new(queue_depth.clone())).expect("unique metric");
        let rows = prometheus::IntCounter::new("lvd_worker_events_stored_total", "Events written to log_entries").expect("valid metric");
        registry.register(Box::new(send.clone())).expect("unique metric");
        registry.register(Box::new(rows.clone())).expect("unique metric");
        let quarantined =
            prometheus::IntCounter::new("lvd_worker_rows_quarantined_total", "Rows PostgreSQL refused, kept in quarantined_rows")
                .expect("valid metric");
        registry.register(Box::new(quarantined.clone())).expect("unique metric");
        let busy = IntGaugeVec::new(Opts::new("lvd_worker_busy", "Entries being worked now, by queue"), &["queue"]).expect("valid metric");
        let concurrency = IntGaugeVec::new(Opts::new("lvd_worker_concurrency", "Entries that may be worked at once, by queue"), &["queue"])
            .expect("valid metric");
        let draining = prometheus::IntGauge::new("lvd_worker_draining", "1 while the worker finishes its entries before exiting")
            .expect("valid metric");
        let drain_abandoned =
            prometheus::IntCounter::new("lvd_worker_drain_abandoned_total", "Entries still in flight when a drain ran out of time")
                .expect("valid metric");
        let password_hashes = IntCounterVec::new(
            Opts::new("lvd_worker_password_hashes_total", "Password hashes and verifications asked of the worker, by op and outcome"),
            &["op", "outcome"],
        )
        .expect("valid metric");
        let alert_evaluations =
            IntCounterVec::new(Opts::new("lvd_worker_alert_evaluations_total", "Alert evaluations, by outcome"), &["outcome"]).expect("valid metric");
        let alert_changes =
            IntCounterVec::new(Opts::new("lvd_worker_alert_changes_total", "Alert state changes recorded, by state"), &["state"]).expect("valid metric");
        let alert_notifications = IntCounterVec::new(
            Opts::new("lvd_worker_alert_notifications_total", "Alert notifications, by channel and outcome"),
            &["channel", "outcome"],
        )
        .expect("valid metric");
        for m in [
            Box::new(alert_evaluations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(alert_changes.clone()),
            Box::new(alert_notifications.clone()),
            Box::new(busy.clone()),
            Box::new(concurrency.clone()),
            Box::new(draining.clone()),
            Box::new(drain_abandoned.clone()),
            Box::new(password_hashes.clone()),
        ] {
            registry.register(m).expect("unique metric");
        }
        Self {
            registry,
            jobs,
            queue_depth,
            send_seconds: send,
            rows,
            quarantined,
            busy,
            concurrency,
            draining,
            drain_abandoned,
            password_hashes,
            alert_evaluations,
            alert_changes,
            alert_notifications,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("Prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
