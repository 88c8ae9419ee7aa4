use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orgd::config::{KeyArgs, LogFormat, ServeArgs, StoreArgs};
use orgd::crypto::Vault;
use orgd::store::SqlStore;
use orgd::{AppState, Config};

#[derive(Parser)]
#[command(
    name = "orgd",
    version,
    about = "The organization service: plans, limits, usage, members, audit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations and serve the HTTP API.
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(StoreArgs),
    /// Manage the stored secrets.
    #[command(subcommand)]
    Secrets(SecretsCommand),
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Re-encrypt every stored secret under ENCRYPTION_KEY (old keys in ENCRYPTION_KEYS_OLD).
    Rotate {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        keys: KeyArgs,
    },
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received: finishing requests in flight");
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::from_args(&args)?;
    std::fs::create_dir_all(config.reports_dir())?;
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    let state = AppState::build(config, None).await?;
    orgd::serve(state, listener, shutdown_signal()).await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let logs = orgd::logging::init(args.log_format)?;
            let served = serve(*args).await;
            logs.flush();
            served
        }
        Command::Migrate(args) => {
            let _logs = orgd::logging::init(LogFormat::Pretty)?;
            if args.database_url.is_none() {
                std::fs::create_dir_all(&args.data_dir)?;
            }
            let store = SqlStore::connect(&args.database_url()).await?;
            store.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Secrets(SecretsCommand::Rotate { store, keys }) => {
            let _logs = orgd::logging::init(LogFormat::Pretty)?;
            rotate_secrets(&store, &keys).await
        }
    }
}

/// `orgd secrets rotate`: re-encrypts under the current key; fails when a secret cannot be
/// opened with any configured key (the others are still rotated).
async fn rotate_secrets(store_args: &StoreArgs, keys: &KeyArgs) -> anyhow::Result<()> {
    let keys = keys.for_command(store_args)?;
    let vault = Vault::new(&keys.current.0, &keys.old);
    let store = SqlStore::connect(&store_args.database_url()).await?;
    store.migrate().await?;
    let report = orgd::secrets::rotate(&store, &vault).await?;
    store.pool().close().await;
    println!(
        "re-encrypted {} secret(s) under key {}; {} already current; {} changed meanwhile (run again)",
        report.rotated,
        vault.current_key_id(),
        report.current,
        report.skipped
    );
    for (table, organization, provider, why) in &report.failed {
        eprintln!("cannot decrypt {table:?} {provider} of organization {organization}: {why}");
    }
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{} secret(s) could not be decrypted with the configured keys",
            report.failed.len()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orgd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
