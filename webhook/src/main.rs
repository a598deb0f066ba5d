//! `mesh-webhook`: parses its Config, loads cert/key and mesh config (failing fast
//! with what to fix), binds, and runs the admission server until SIGTERM/SIGINT.

use std::sync::Arc;

use clap::Parser;
use mesh_webhook::config::Config;
use mesh_webhook::selfca::WebhookKind;
use mesh_webhook::server::{serve, AppState};
use mesh_webhook::sharedca::{self, SharedCa};
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
    match (&loaded.self_managed, &cfg.tls_cert, &cfg.tls_key) {
        (Some(_), _, _) => {
            let api = match mesh_webhook::kubeapi::ApiClient::in_cluster() {
                Ok(a) => Arc::new(a),
                Err(e) => {
                    eprintln!("mesh-webhook: self-managed mode needs the Kubernetes API: {e}");
                    std::process::exit(2);
                }
            };
            let shared = SharedCa::new(
                &cfg.self_managed_namespace,
                &cfg.certs_secret,
                cfg.self_managed_service
                    .as_deref()
                    .unwrap_or("mesh-webhook"),
            );
            let mut configs = vec![(WebhookKind::Mutating, cfg.webhook_config.clone())];
            if !cfg.validating_webhook_config.is_empty() {
                configs.push((
                    WebhookKind::Validating,
                    cfg.validating_webhook_config.clone(),
                ));
            }
            // Serve only the shared cert: a replica with a private one would fail
            // every call the API server sends it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let served = loop {
                match sharedca::sync_once(&api, &shared, &store, None, &configs).await {
                    Ok(s) => break s,
                    Err(e) if std::time::Instant::now() < deadline => {
                        tracing::warn!(error = %e, "shared certificate not ready; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    }
                    Err(e) => {
                        eprintln!(
                            "mesh-webhook: shared certificate Secret {}/{}: {e}",
                            cfg.self_managed_namespace, cfg.certs_secret
                        );
                        std::process::exit(1);
                    }
                }
            };
            sharedca::keep_shared(
                api,
                shared,
                store.clone(),
                Some(served),
                configs,
                std::time::Duration::from_secs(30),
                stop_rx.clone(),
            );
        }
        (None, Some(cert), Some(key)) => {
            reload::watch_cert(
                store.clone(),
                cert.clone(),
                key.clone(),
                cfg.reload_interval(),
                stop_rx.clone(),
            );
        }
        _ => unreachable!("Config::load checked the certificate source"),
    }
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
