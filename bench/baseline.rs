//! The benchmark's yardstick: a bare axum handler answering a constant JSON body of the same
//! size as `GET /api/organization`. Not part of the product.
//!
//! Usage: `baseline <bind-address>` (prints the same "listening on" line as orgd).

use axum::Router;
use axum::http::header;
use axum::routing::get;

const BODY: &str = r#"{"success":true,"organization":{"id":"507f191e810c19729de860ea","name":"Acme Corp","slug":"acme-corp","plan":"free","limits":{"maxProjects":1,"maxTestRuns":100,"maxUsers":3,"maxConcurrentRuns":1,"maxStorageBytes":10737418240,"maxStorage":10737418240,"currentStorageUsedBytes":0},"userCount":2,"userLimit":3,"aiAnalysisEnabled":true,"createdAt":"2026-01-15T10:00:00.000Z","updatedAt":"2026-02-08T14:30:00.000Z"}}"#;

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
