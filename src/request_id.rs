//! What the request being served keeps on its task: its id, so a 500's message can name it,
//! and the rate-limit decision that counted it, for the response's headers.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use crate::ratelimit::Decision;

pub struct RequestContext {
    pub id: String,
    decision: OnceLock<Decision>,
}

impl RequestContext {
    pub fn new(id: String) -> Arc<Self> {
        Arc::new(Self {
            id,
            decision: OnceLock::new(),
        })
    }

    /// The decision of the bucket that counted the request, if one did.
    pub fn decision(&self) -> Option<Decision> {
        self.decision.get().copied()
    }
}

tokio::task_local! {
    static CURRENT: Arc<RequestContext>;
}

/// The id of the request being served on this task (for 500 messages).
pub fn current_request_id() -> String {
    CURRENT
        .try_with(|context| context.id.clone())
        .unwrap_or_else(|_| "unknown".into())
}

/// Keeps the decision that counted the request being served (the first one wins: a request
/// is counted once).
pub fn record_decision(decision: Decision) {
    let _ = CURRENT.try_with(|context| context.decision.set(decision));
}

/// Runs `handled` as the request of `context`.
pub async fn scope<F: Future>(context: Arc<RequestContext>, handled: F) -> F::Output {
    CURRENT.scope(context, handled).await
}
