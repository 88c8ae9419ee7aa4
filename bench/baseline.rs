//! The benchmark's yardstick: a bare axum handler answering a constant JSON body of the same
//! size and shape as `GET /api/organization`. Not part of the product.
//!
//! Usage: `baseline <bind-address>` (prints the same "listening on" line as orgd).

use axum::Router;
use axum::http::header;
use axum::routing::get;

/// `GET /api/organization`'s answer for the seed example, byte for byte in size and shape
/// (`tests/api/organization.rs` checks it against orgd's answer, so it follows the contract).
const BODY: &str = include_str!("organization.json");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let app = Router::new().route(
        "/api/organization",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], BODY) }),
    );
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    println!("baseline listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
