//! `mesh-cni redirect`: what the `istio-init` container runs. Parses istio-iptables
//! flags, then prints the rules (`--dry-run`) or writes them into the current netns.

use std::process::ExitCode;

use crate::capture;
use crate::flags::{self, RedirectArgs};
use crate::iptables;
use crate::rules;

/// Initialises logging to stderr (stdout carries the dry-run output).
pub fn init_stderr_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESH_CNI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the command; returns the text printed on success.
pub fn run(args: &RedirectArgs) -> Result<String, capture::CaptureError> {
    let set = rules::build(&args.params);
    if args.dry_run {
        return Ok(set.render());
    }
    let backend = iptables::detect(args.backend);
    if args.params.interception_mode != mesh_api::InterceptionMode::Tproxy {
        // A rerun that switched away from TPROXY must not keep its policy routing.
        capture::remove_tproxy_routing(&args.params);
    }
    capture::write(backend, &args.params)?;
    tracing::info!(
        backend = backend.name(),
        ipv6 = args.params.enable_ipv6,
        "capture rules written"
    );
    Ok(String::new())
}

pub fn main(argv: &[String]) -> ExitCode {
    init_stderr_logging();
    let args = match flags::parse(argv, |k| std::env::var(k).ok()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mesh-cni redirect: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mesh-cni redirect: {e}");
            ExitCode::FAILURE
        }
    }
}
