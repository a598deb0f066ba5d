//! `mesh-cni validate`: what the `istio-validation` init container runs when the CNI
//! plugin writes the rules. It listens on the outbound capture port, connects to an
//! address that only exists if the capture is in place, and checks through
//! `SO_ORIGINAL_DST` that the accepted connection was redirected from that address.
//! Exit 0 when it was, 126 (Istio's code) when not.
//!
//! The injector runs `istio-validation` as the proxy's UID (1337), like Istio, and
//! that UID's outbound traffic is exactly what the rules leave alone. As that UID
//! the probe therefore takes the one path the rules do capture for it: a connection
//! over loopback to a local address other than 127.0.0.1 (a pod calling itself
//! through its own address), which goes to the inbound capture port.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt::OriginalDst};

/// Exit code of a failed validation (same as Istio's).
pub const EXIT_NOT_REDIRECTED: u8 = 126;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidateConfig {
    /// Where the probe connection goes (must be captured by the outbound rules).
    pub target: SocketAddrV4,
    /// Port the redirect sends outbound traffic to.
    pub capture_port: u16,
    pub timeout: Duration,
}

impl ValidateConfig {
    /// The probe that the rules capture for a process running as `uid`.
    pub fn for_uid(uid: u32) -> ValidateConfig {
        if uid == mesh_api::ports::PROXY_UID {
            ValidateConfig {
                target: SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 6), 15002),
                capture_port: mesh_api::ports::INBOUND_CAPTURE,
                ..ValidateConfig::default()
            }
        } else {
            ValidateConfig::default()
        }
    }
}

impl Default for ValidateConfig {
    fn default() -> Self {
        ValidateConfig {
            target: SocketAddrV4::new(Ipv4Addr::new(10, 255, 255, 254), 6000),
            capture_port: mesh_api::ports::OUTBOUND_CAPTURE,
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("invalid argument {0:?}: {1}")]
    Usage(String, String),
    #[error("cannot listen on capture port {port}: {source}")]
    Listen { port: u16, source: std::io::Error },
    #[error(
        "traffic to {target} was not redirected to port {port} within {timeout:?}: the capture rules are missing ({detail})"
    )]
    NotRedirected {
        target: SocketAddrV4,
        port: u16,
        timeout: Duration,
        detail: String,
    },
    #[error(
        "a connection reached port {port}, but its original destination was {got}, not {target}"
    )]
    WrongDestination {
        target: SocketAddrV4,
        port: u16,
        got: String,
    },
}

/// The destination a redirected connection was originally sent to.
pub fn original_dst(s: &TcpStream) -> std::io::Result<SocketAddrV4> {
    let raw = getsockopt(s, OriginalDst).map_err(std::io::Error::from)?;
    Ok(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(raw.sin_addr.s_addr)),
        u16::from_be(raw.sin_port),
    ))
}

/// Runs the check in the current network namespace.
pub fn validate(cfg: &ValidateConfig) -> Result<(), ValidateError> {
    let port = cfg.capture_port;
    let listener = TcpListener::bind(("0.0.0.0", port))
        .map_err(|e| ValidateError::Listen { port, source: e })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ValidateError::Listen { port, source: e })?;
    let target = cfg.target;
    let timeout = cfg.timeout;
    let connector = std::thread::spawn(move || {
        TcpStream::connect_timeout(&SocketAddr::V4(target), timeout).map(|_| ())
    });
    let deadline = Instant::now() + cfg.timeout;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                let got = original_dst(&s);
                return match got {
                    Ok(d) if d == target => Ok(()),
                    Ok(d) => Err(ValidateError::WrongDestination {
                        target,
                        port,
                        got: d.to_string(),
                    }),
                    Err(e) => Err(ValidateError::WrongDestination {
                        target,
                        port,
                        got: format!("unknown ({e})"),
                    }),
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(ValidateError::Listen { port, source: e }),
        }
        if connector.is_finished() || Instant::now() >= deadline {
            // Give an in-flight accept one last chance before judging.
            std::thread::sleep(Duration::from_millis(20));
            if let Ok((s, _)) = listener.accept() {
                if original_dst(&s).is_ok_and(|d| d == target) {
                    return Ok(());
                }
            }
            let detail = match connector.join() {
                Ok(Ok(())) => "the connection went somewhere else".to_string(),
                Ok(Err(e)) => format!("connect: {e}"),
                Err(_) => "connect thread panicked".to_string(),
            };
            return Err(ValidateError::NotRedirected {
                target,
                port,
                timeout,
                detail,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn parse(args: &[String]) -> Result<ValidateConfig, ValidateError> {
    let mut cfg = ValidateConfig::for_uid(nix::unistd::geteuid().as_raw());
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| ValidateError::Usage(flag.clone(), "needs a value".into()))
        };
        match flag.as_str() {
            "--target" => {
                let v = value()?;
                cfg.target = v
                    .parse()
                    .map_err(|e| ValidateError::Usage(v.clone(), format!("{e}")))?;
            }
            "--port" => {
                let v = value()?;
                cfg.capture_port = v
                    .parse()
                    .map_err(|e| ValidateError::Usage(v.clone(), format!("{e}")))?;
            }
            "--timeout-ms" => {
                let v = value()?;
                let ms: u64 = v
                    .parse()
                    .map_err(|e| ValidateError::Usage(v.clone(), format!("{e}")))?;
                cfg.timeout = Duration::from_millis(ms);
            }
            other => {
                return Err(ValidateError::Usage(
                    other.to_string(),
                    "unknown flag".into(),
                ))
            }
        }
    }
    Ok(cfg)
}

pub fn main(args: &[String]) -> ExitCode {
    crate::redirect::init_stderr_logging();
    let cfg = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mesh-cni validate: {e}");
            return ExitCode::from(2);
        }
    };
    match validate(&cfg) {
        Ok(()) => {
            eprintln!(
                "mesh-cni validate: traffic to {} is redirected to port {}",
                cfg.target, cfg.capture_port
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mesh-cni validate: FAILED: {e}");
            ExitCode::from(EXIT_NOT_REDIRECTED)
        }
    }
}
