//! `pivotwatch serve`: runs the HTTP server until SIGINT or SIGTERM, then finishes the
//! requests in flight and leaves queued work in the database.

use std::path::PathBuf;

use crate::server::{self, RawSettings, ServerConfig};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The configuration file (`pivotwatch.toml`); `PIVOTWATCH_*` variables override it.
    #[arg(long, env = "PIVOTWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Overrides `server.listen`.
    #[arg(long)]
    pub listen: Option<String>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<i32> {
    let mut raw = RawSettings::load(args.config.as_deref()).map_err(anyhow::Error::msg)?;
    if let Some(listen) = args.listen {
        raw.set("server.listen", &listen);
    }
    let config = match ServerConfig::validate(&raw) {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("error: the configuration is not valid:");
            for problem in problems {
                eprintln!("  - {problem}");
            }
            return Ok(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listen = config.listen;
        let state = server::build_state(config, &raw).await?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing requests in flight");
            let _ = stop.send(true);
        });
        eprintln!("pivotwatch serving on http://{}", listener.local_addr()?);
        server::serve(state, listener, stopped).await?;
        anyhow::Ok(0)
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
