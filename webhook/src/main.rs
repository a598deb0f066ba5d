//! `mesh-webhook`: parses its Config, loads cert/key and mesh config (failing fast
//! with what to fix), binds, and runs the admission server until SIGTERM/SIGINT.

use std::sync::Arc;

use clap::Parser;
use mesh_webhook::config::Config;
use mesh_webhook::server::{serve, AppState};
use mesh_webhook::{reload, tls};

#[derive(Parser)]
#[command(
    name = "mesh-webhook",
    version,
    about = "Istio-compatible sidecar injection webhook"
)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = Cli::parse().config;
    let loaded = match cfg.load() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mesh-webhook: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    let store = tls::CertStore::new(loaded.cert);
    let state = AppState::new(loaded.mesh, cfg.limits());
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "mesh-webhook listening (HTTPS)");
    println!("listening on {addr}");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    reload::watch_cert(
        store.clone(),
        cfg.tls_cert.clone(),
        cfg.tls_key.clone(),
        cfg.reload_interval(),
        stop_rx.clone(),
    );
    if let Some(p) = &cfg.mesh_config {
        reload::watch_mesh_config(
            Arc::clone(&state),
            p.clone(),
            cfg.reload_interval(),
            stop_rx,
        );
    }
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    serve(listener, tls::server_config(store), state, shutdown).await?;
    let _ = stop_tx.send(true);
    Ok(())
}
