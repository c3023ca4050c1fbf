//! `lintas`: command line entry point. Everything else lives in the library crates.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// One binary: load balancer (L4/L7) with health checks, stats and a runtime API.
#[derive(Parser)]
#[command(name = "lintas", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the services configured in FILE (SIGHUP reloads, SIGINT/SIGTERM drain and stop).
    Run {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate FILE and report every problem as file:line:col: key: message.
    Check {
        /// Configuration file (TOML).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Start three demo backends with an HTTP and a TCP balancer, the admin console, a
    /// relay, MQTT and the chat hub in front of them; needs nothing else.
    Demo,
    /// Serve one demo backend (what `demo` starts, as a process of its own).
    #[command(after_help = BACKEND_ROUTES)]
    Backend {
        /// Name the backend answers with.
        #[arg(long)]
        name: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Run at most N `/work` jobs at once, like a worker with N threads; the rest wait
        /// their turn in arrival order (answered with `x-waited: yes`).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        jobs: Option<u32>,
    },
    /// Read a password on standard input and print its hash for `admin.password_hash`.
    HashPassword,
}

/// What a demo backend answers, for `lintas backend --help` (the README has the same table).
const BACKEND_ROUTES: &str = "\
Routes (every answer carries x-backend: NAME):
  GET  /             its name and a newline
  GET  /work?ms=N    waits N ms first (a long or short job; at most 600000); with
                     --jobs, at most N at once, the rest waiting their turn
                     (x-waited: yes)
  GET  /health       ok
  GET  /headers      the request headers it received, one per line
  POST /echo         the request body (up to 1 MiB)
  POST /kill?for=10s stops listening and drops its connections, back after the duration
                     (never, without `for`)
  GET  /ws           WebSocket echo";

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Colour codes only for a person at a terminal: a file, journald or `docker logs`
    // would keep them as bytes.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check { config } => {
            lintas::config::load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "no password on standard input");
            println!("{}", admin::Auth::hash_password(password));
            Ok(())
        }
        Command::Run { config } => serve(|workers| lintas::run::run(config, workers)),
        Command::Demo => serve(lintas::demo::run),
        Command::Backend { name, listen, jobs } => runtime()?.block_on(async {
            let shutdown = CancellationToken::new();
            let listener = tokio::net::TcpListener::bind(listen).await?;
            println!("{name} listening on {}", listener.local_addr()?);
            let jobs = jobs.map(|n| n as usize);
            let serve = lintas::demo::backend::serve(name, listener, jobs, shutdown.clone());
            tokio::select! {
                _ = serve => {}
                _ = tokio::signal::ctrl_c() => shutdown.cancel(),
            }
            Ok(())
        }),
    }
}

/// Runs `main` on a control runtime (signals, health checks, admin, reloads) while
/// connections are served by worker threads, one current-thread runtime each
/// (`LINTAS_WORKER_THREADS`, default one per core; see `net::WorkerThreads` for why).
fn serve<F, Fut>(main: F) -> anyhow::Result<()>
where
    F: FnOnce(net::Workers) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let threads = match std::env::var("LINTAS_WORKER_THREADS") {
        Ok(n) => n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
            anyhow::anyhow!("LINTAS_WORKER_THREADS=`{n}` is not a positive number")
        })?,
        Err(_) => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let workers = net::WorkerThreads::start(threads)?;
    let result = runtime()?.block_on(main(workers.workers()));
    drop(workers);
    result
}

/// A single-threaded runtime: for the control runtime and the demo backend.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
