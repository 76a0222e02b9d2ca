//! What one request carries through the adapters it uses: its id, and what
//! `/metrics` counts of it (method, route, arrival, cache reads, and whether
//! a script it ran has counted it already). [`serve`](crate::serve::serve)
//! makes one per request and hands it to the component's configuration,
//! whose Redis and key-value adapters then carry it; nothing keeps it past
//! the request (statics outlive requests under Spin: see `host`).

use lvd::metrics::{Pending, Sample};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct Scope(Rc<Inner>);

#[derive(Debug)]
struct Inner {
    id: String,
    method: String,
    /// The route pattern that matched, or `unmatched`.
    route: &'static str,
    started: Instant,
    cache: RefCell<Vec<(String, bool)>>,
    /// Whether the request is to be counted at all (`request_metrics`).
    counting: bool,
    /// A script the request ran has counted it (`lvd::metrics::Pending`).
    counted: Cell<bool>,
}

impl Scope {
    /// `counting`: whether `/metrics` counts the request (`request_metrics`).
    pub fn new(id: String, method: &str, route: &'static str, counting: bool) -> Self {
        let (started, cache, counted) = (Instant::now(), RefCell::default(), Cell::new(false));
        Self(Rc::new(Inner { id, method: method.to_owned(), route, started, cache, counting, counted }))
    }

    /// The request, for a script that counts it itself; `None` when it is
    /// not to be counted.
    pub(crate) fn pending(&self) -> Option<&dyn Pending> {
        self.0.counting.then_some(self as &dyn Pending)
    }

    /// The request's id: the client's `X-Request-Id` when it was a valid
    /// one, else one made here.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    pub(crate) fn note_cache(&self, cache: &str, hit: bool) {
        self.0.cache.borrow_mut().push((cache.to_owned(), hit));
    }

    /// What the request adds to the figures once its reply has `status`;
    /// `None` when it is not counted, or a script it ran counted it already.
    pub(crate) fn figures(&self, status: u16, seconds: f64) -> Option<Sample<'_>> {
        (self.0.counting && !self.0.counted.get()).then(|| Sample { status, seconds, ..self.sample() })
    }
}

impl Pending for Scope {
    fn sample(&self) -> Sample<'_> {
        let cache = self.0.cache.borrow().clone();
        Sample { method: &self.0.method, route: self.0.route, status: 0, seconds: self.0.started.elapsed().as_secs_f64(), cache: cache.into() }
    }

    fn counted(&self) {
        self.0.counted.set(true);
    }
}

pub use lvd::request_id::request_id;
