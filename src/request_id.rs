//! The id of the request being served, kept for the task so a 500's message can name it.

use std::future::Future;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served on this task (for 500 messages).
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs `handled` as the request `id`.
pub async fn scope<F: Future>(id: String, handled: F) -> F::Output {
    REQUEST_ID.scope(id, handled).await
}
