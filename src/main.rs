use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orgd::cli;
use orgd::config::{KeyArgs, LogFormat, ReportsArgs, ServeArgs, StoreArgs};

use orgd::{AppState, Config};
use orgd_core::clock::{Clock, SystemClock};
use orgd_core::crypto::Vault;
use orgd_core::db::{Db, DbTimeouts};

/// glibc's allocator showed up as ~8 % of a request's CPU in `perf`; mimalloc's thread-local
/// heaps suit the many short-lived allocations of a request. Built without transparent huge
/// pages (`no_thp` in Cargo.toml): with them a barely used arena is resident in 2 MiB pages,
/// which took peak memory under load from 36 to 64.5 MiB for no measurable speed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Inspect organizations; change their plan and limits.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Usage counters.
    #[command(subcommand)]
    Usage(UsageCommand),
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

#[derive(Subcommand)]
enum OrgCommand {
    /// Every organization with its plan, this month's usage and its limit overrides.
    List(StoreArgs),
    /// Move an organization to another plan (its overrides are kept unless --reset-overrides).
    SetPlan {
        /// Organization id or slug.
        org: String,
        /// free, team or enterprise.
        plan: String,
        #[arg(long)]
        reset_overrides: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Override one limit: a number, `unlimited`, or `default` (the plan's value).
    SetLimit {
        /// Organization id or slug.
        org: String,
        /// maxTestRuns, maxUsers, maxStorageBytes (bytes), maxProjects or maxConcurrentRuns.
        limit: String,
        #[arg(allow_negative_numbers = true)]
        value: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum UsageCommand {
    /// Recompute test-run counters from the executions and storage from the report store
    /// (removing objects no file points to), fix any drift and print it.
    Reconcile {
        /// Organization id or slug (default: every organization).
        org: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        reports: ReportsArgs,
    },
}

/// Connects to the database of `args` (creating the SQLite directory) and migrates it.
async fn open_store(args: &StoreArgs) -> anyhow::Result<Db> {
    if args.database_url.is_none() {
        std::fs::create_dir_all(&args.data_dir)?;
    }
    let db = Db::connect(&args.database_url(), DbTimeouts::command()).await?;
    db.migrate().await?;
    Ok(db)
}

async fn run_org(command: OrgCommand) -> anyhow::Result<String> {
    let now = SystemClock.now_ms();
    match command {
        OrgCommand::List(args) => cli::org_list(&open_store(&args).await?, now).await,
        OrgCommand::SetPlan {
            org,
            plan,
            reset_overrides,
            store,
        } => {
            cli::set_plan(
                &open_store(&store).await?,
                &org,
                &plan,
                reset_overrides,
                now,
            )
            .await
        }
        OrgCommand::SetLimit {
            org,
            limit,
            value,
            store,
        } => cli::set_limit(&open_store(&store).await?, &org, &limit, &value, now).await,
    }
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
            open_store(&args).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Org(command) => {
            let _logs = orgd::logging::init(LogFormat::Pretty)?;
            print!("{}", run_org(command).await?);
            Ok(())
        }
        Command::Usage(UsageCommand::Reconcile {
            org,
            store: args,
            reports,
        }) => {
            let _logs = orgd::logging::init(LogFormat::Pretty)?;
            let store = open_store(&args).await?;
            let reports = orgd::state::open_reports(&reports.location(&args.data_dir)?).await?;
            print!(
                "{}",
                cli::usage_reconcile(
                    &store,
                    reports.as_ref(),
                    org.as_deref(),
                    SystemClock.now_ms()
                )
                .await?
            );
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
    let store = Db::connect(&store_args.database_url(), DbTimeouts::command()).await?;
    store.migrate().await?;
    let report = orgd_core::secrets::rotate(&store, &vault).await?;
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
