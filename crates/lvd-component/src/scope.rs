//! What one request carries through the adapters it uses: its id, and the
//! cache reads it made (for `/metrics`). [`serve`](crate::serve::serve)
//! makes one per request and hands it to the component's configuration,
//! whose Redis and key-value adapters then carry it; nothing keeps it past
//! the request (statics outlive requests under Spin: see `host`).

use std::cell::RefCell;
use std::rc::Rc;

#[derive(Clone, Debug, Default)]
pub struct Scope(Rc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    id: String,
    cache: RefCell<Vec<(String, bool)>>,
}

impl Scope {
    pub fn new(id: String) -> Self {
        Self(Rc::new(Inner { id, cache: RefCell::default() }))
    }

    /// The request's id: the client's `X-Request-Id` when it was a valid
    /// one, else one made here.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    pub(crate) fn note_cache(&self, cache: &str, hit: bool) {
        self.0.cache.borrow_mut().push((cache.to_owned(), hit));
    }

    pub(crate) fn cache_reads(&self) -> Vec<(String, bool)> {
        self.0.cache.borrow().clone()
    }
}

pub use lvd::request_id::request_id;
