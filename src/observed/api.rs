//! What the HTTPS API saw: requests by route and status, failed authentications, requests
//! refused unread, event streams open. Relaxed atomics, read when `/metrics` is scraped;
//! the labels are bounded (the route templates, a fixed list of statuses).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The routes counted: method and path template.
pub type Routes = &'static [(&'static str, &'static str)];

/// Statuses counted apart; any other is counted as `other`.
pub const STATUSES: [u16; 16] = [
    200, 202, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 431, 500, 503,
];

/// The API's counters.
#[derive(Debug)]
pub struct ApiCounters {
    routes: Routes,
    /// `[route][status]`: the last route is "no route", the last status `other`.
    requests: Box<[[AtomicU64; STATUSES.len() + 1]]>,
    /// Requests whose token (or client certificate) was missing or wrong.
    pub auth_failures: AtomicU64,
    /// Requests refused unread because their source failed too often (429).
    pub throttled: AtomicU64,
    /// Event streams being followed now.
    pub streams: AtomicU64,
}

impl ApiCounters {
    /// Counters of requests to `routes` (the API's route table).
    pub fn new(routes: Routes) -> ApiCounters {
        ApiCounters {
            routes,
            requests: (0..=routes.len()).map(|_| Default::default()).collect(),
            auth_failures: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            streams: AtomicU64::new(0),
        }
    }

    /// Counts a request to `route` (an index into the routes) answered with `status`.
    pub fn request(&self, route: Option<usize>, status: u16) {
        let route = route.unwrap_or(self.routes.len()).min(self.routes.len());
        let status = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len());
        self.requests[route][status].fetch_add(1, Relaxed);
    }

    /// Every count so far that is not zero: method, route, status, count.
    pub fn requests(&self) -> Vec<(&'static str, &'static str, String, u64)> {
        let mut all = Vec::new();
        for (r, counts) in self.requests.iter().enumerate() {
            let (method, route) = self.routes.get(r).copied().unwrap_or(("", "none"));
            for (s, count) in counts.iter().enumerate() {
                let count = count.load(Relaxed);
                if count > 0 {
                    let status = STATUSES.get(s).map_or("other".into(), u16::to_string);
                    all.push((method, route, status, count));
                }
            }
        }
        all
    }
}
