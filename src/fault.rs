//! Crash injection for the atomicity tests. Every durable step of a change
//! (a journal write, an object, a ref update, a file rename) calls
//! [`point`]; with `KAWS_TEST_ABORT_AFTER=N` the process aborts right after
//! the N-th such step, exactly as a `kill -9` there would leave things.

use std::sync::atomic::{AtomicU64, Ordering};

static STEPS: AtomicU64 = AtomicU64::new(0);

pub fn point() {
    let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(limit) = std::env::var("KAWS_TEST_ABORT_AFTER").ok().and_then(|v| v.parse::<u64>().ok()) {
        if n >= limit {
            std::process::abort();
        }
    }
}
