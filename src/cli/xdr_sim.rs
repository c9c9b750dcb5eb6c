//! `pivotwatch xdr-sim --listen ADDR`: serves the replay tenant in the data directory
//! over the Cortex XDR public API, so the client and everything above it can be tried
//! against "a tenant" with no network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::DataDirArg;
use crate::xdr::replay::Replay;
use crate::xdr::sim::{SimConfig, XdrSim};
use crate::xdr::{ApiKey, KeyType};

#[derive(Debug, clap::Args)]
pub struct XdrSimArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Address to listen on; callers use `http://ADDR` as the XDR URL.
    #[arg(long, default_value = "127.0.0.1:8780")]
    pub listen: SocketAddr,
    /// The key id callers must send (`x-xdr-auth-id`).
    #[arg(long, env = "PIVOTWATCH_XDR_API_KEY_ID")]
    pub api_key_id: String,
    /// The key callers must hold; read it from the environment rather than the command
    /// line so that it stays out of shell history and process listings.
    #[arg(long, env = "PIVOTWATCH_XDR_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// `standard` (the key is sent as it is) or `advanced` (each request is signed).
    #[arg(long, env = "PIVOTWATCH_XDR_KEY_TYPE", default_value = "advanced")]
    pub key_type: String,
    /// How long a query stays PENDING before its results are ready.
    #[arg(long, default_value = "500ms", value_parser = crate::timefmt::parse_duration)]
    pub query_latency: f64,
}

pub fn run(args: XdrSimArgs) -> anyhow::Result<i32> {
    let key_type: KeyType = args.key_type.parse().map_err(|err| anyhow::anyhow!("{err}"))?;
    let replay = Replay::open(&args.data_dir.data_dir)?;
    let info = replay.info().clone();
    let config = SimConfig {
        key_id: args.api_key_id.trim().to_string(),
        key: ApiKey::new(args.api_key),
        key_type,
        query_latency: Duration::from_secs_f64(args.query_latency.max(0.0)),
    };
    let sim = Arc::new(XdrSim::new(replay, config));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "replay tenant ({} flows, {} devices) served at http://{addr}/public_api/v1/ \
             with a {} key; Ctrl-C stops",
            info.flows,
            info.devices,
            args.key_type.to_ascii_lowercase()
        );
        axum::serve(listener, sim.router())
            .with_graceful_shutdown(async {
                // If the signal cannot be installed, serve until killed.
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            })
            .await
            .context("serving the simulated tenant")?;
        anyhow::Ok(0)
    })
}
