//! `mesh-cni install`: the node DaemonSet. Copies the binary into the host's CNI bin
//! folder (temp file + rename), writes the plugin's kubeconfig from the mounted
//! service-account token (rewritten when the token rotates), appends the plugin to the
//! primary conflist (converting a `.conf`), re-inserts it within a poll interval when
//! another CNI rewrites the file, serves `/readyz`, and on shutdown removes exactly
//! what it added.

pub mod conflist;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("invalid argument {0:?}: {1}")]
    Usage(String, String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.display().to_string();
    move |source| InstallError::Io { what, path, source }
}

/// The installer's configuration (paths as the installer sees them).
#[derive(Debug, Clone)]
pub struct InstallConfig {
    pub cni_bin_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub source_binary: PathBuf,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
    pub api_server: String,
    pub kubeconfig_name: String,
    /// Where the plugin (on the host) finds the kubeconfig.
    pub kubeconfig_host_path: PathBuf,
    /// Created when installed.
    pub ready_file: PathBuf,
    /// The same file as the plugin (on the host) sees it; its STATUS reads it.
    pub ready_file_host_path: PathBuf,
    /// Extra fields for our conflist entry (e.g. `podDir`, `excludeNamespaces`).
    pub plugin_extra: serde_json::Map<String, serde_json::Value>,
    pub poll: Duration,
}

impl InstallConfig {
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.cni_conf_dir.join(&self.kubeconfig_name)
    }

    pub fn binary_path(&self) -> PathBuf {
        self.cni_bin_dir.join("mesh-cni")
    }

    /// Our conflist entry.
    pub fn entry(&self) -> String {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), conflist::PLUGIN_TYPE.into());
        m.insert(
            "kubernetes".into(),
            serde_json::json!({"kubeconfig": self.kubeconfig_host_path}),
        );
        m.insert(
            "readyFile".into(),
            serde_json::json!(self.ready_file_host_path),
        );
        for (k, v) in &self.plugin_extra {
            m.insert(k.clone(), v.clone());
        }
        serde_json::Value::Object(m).to_string()
    }
}

/// Atomic write: temp file in the same folder, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_file_name(format!(
        ".{}.mesh-cni-tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// The kubeconfig text for a token.
pub fn kubeconfig_text(server: &str, ca_pem: &[u8], token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: mesh-cni\n  user:\n    token: {token}\ncontexts:\n- name: mesh-cni\n  context:\n    cluster: local\n    user: mesh-cni\ncurrent-context: mesh-cni\n"
    )
}

/// What the installer changed, so shutdown undoes exactly that.
#[derive(Debug, Default)]
struct Touched {
    /// conflists we inserted into.
    lists: Vec<PathBuf>,
    /// `.conf` files we converted: original path -> (original bytes, our conflist).
    converted: BTreeMap<PathBuf, (Vec<u8>, PathBuf)>,
    binary: bool,
    kubeconfig_token: Option<String>,
}

/// The running installer.
pub struct Installer {
    cfg: InstallConfig,
    touched: Touched,
    ready: Arc<AtomicBool>,
    /// Reconcile passes finished (successful or not): what a caller waits on to
    /// know the installer has looked at the files again.
    passes: Arc<AtomicU64>,
}

impl Installer {
    pub fn new(cfg: InstallConfig, ready: Arc<AtomicBool>) -> Installer {
        Installer {
            cfg,
            touched: Touched::default(),
            ready,
            passes: Arc::default(),
        }
    }

    /// The number of reconcile passes [`Installer::run`] has finished.
    pub fn passes(&self) -> Arc<AtomicU64> {
        self.passes.clone()
    }

    fn install_binary(&mut self) -> Result<(), InstallError> {
        let dest = self.cfg.binary_path();
        if self.touched.binary && dest.exists() {
            return Ok(());
        }
        let bytes = std::fs::read(&self.cfg.source_binary)
            .map_err(io("cannot read binary", &self.cfg.source_binary))?;
        std::fs::create_dir_all(&self.cfg.cni_bin_dir)
            .map_err(io("cannot create", &self.cfg.cni_bin_dir))?;
        write_atomic(&dest, &bytes, 0o755).map_err(io("cannot install binary", &dest))?;
        self.touched.binary = true;
        tracing::info!(path = %dest.display(), "binary installed");
        Ok(())
    }

    fn write_kubeconfig(&mut self) -> Result<(), InstallError> {
        let token = std::fs::read_to_string(&self.cfg.token_file)
            .map_err(io("cannot read token", &self.cfg.token_file))?
            .trim()
            .to_string();
        let path = self.cfg.kubeconfig_path();
        if self.touched.kubeconfig_token.as_deref() == Some(token.as_str()) && path.exists() {
            return Ok(());
        }
        let ca =
            std::fs::read(&self.cfg.ca_file).map_err(io("cannot read CA", &self.cfg.ca_file))?;
        write_atomic(
            &path,
            kubeconfig_text(&self.cfg.api_server, &ca, &token).as_bytes(),
            0o600,
        )
        .map_err(io("cannot write kubeconfig", &path))?;
        tracing::info!(path = %path.display(), rotated = self.touched.kubeconfig_token.is_some(), "kubeconfig written");
        self.touched.kubeconfig_token = Some(token);
        Ok(())
    }

    /// Makes sure the primary config has our entry; `Ok(false)` when there is no
    /// primary config yet.
    fn ensure_entry(&mut self) -> Result<bool, InstallError> {
        let Some(primary) = conflist::primary(&self.cfg.cni_conf_dir) else {
            return Ok(false);
        };
        let text = std::fs::read_to_string(&primary).map_err(io("cannot read", &primary))?;
        let entry = self.cfg.entry();
        let is_list = primary.extension().is_some_and(|e| e == "conflist")
            || conflist::plugins_array(&text).is_some();
        if is_list {
            if conflist::has_entry(&text) {
                return Ok(true);
            }
            let Some(new) = conflist::insert(&text, &entry) else {
                return Ok(false);
            };
            write_atomic(&primary, new.as_bytes(), 0o644).map_err(io("cannot write", &primary))?;
            if !self.touched.lists.contains(&primary) {
                self.touched.lists.push(primary.clone());
            }
            tracing::info!(file = %primary.display(), "plugin inserted");
        } else {
            let Some(list) = conflist::conf_to_conflist(&text, &entry) else {
                return Ok(false);
            };
            let target = primary.with_extension("conflist");
            write_atomic(&target, list.as_bytes(), 0o644).map_err(io("cannot write", &target))?;
            std::fs::remove_file(&primary).map_err(io("cannot remove", &primary))?;
            self.touched
                .converted
                .insert(primary.clone(), (text.into_bytes(), target.clone()));
            tracing::info!(conf = %primary.display(), conflist = %target.display(), "converted to conflist with the plugin");
        }
        Ok(true)
    }

    /// One reconcile pass.
    pub fn tick(&mut self) -> Result<(), InstallError> {
        self.install_binary()?;
        self.write_kubeconfig()?;
        let ok = self.ensure_entry()?;
        if ok && !self.ready.load(Ordering::SeqCst) {
            write_atomic(&self.cfg.ready_file, b"ready\n", 0o644)
                .map_err(io("cannot write ready file", &self.cfg.ready_file))?;
            tracing::info!("installed: ready");
        }
        self.ready.store(ok, Ordering::SeqCst);
        Ok(())
    }

    /// Removes exactly what was added.
    pub fn uninstall(&mut self) {
        self.ready.store(false, Ordering::SeqCst);
        let _ = std::fs::remove_file(&self.cfg.ready_file);
        for (conf, (bytes, list)) in std::mem::take(&mut self.touched.converted) {
            let ours = std::fs::read_to_string(&list)
                .ok()
                .and_then(|t| {
                    conflist::conf_to_conflist(std::str::from_utf8(&bytes).ok()?, &self.cfg.entry())
                        .map(|x| x == t)
                })
                .unwrap_or(false);
            if ours {
                let _ = std::fs::remove_file(&list);
                if !conf.exists() {
                    let _ = write_atomic(&conf, &bytes, 0o644);
                }
            } else if let Ok(t) = std::fs::read_to_string(&list) {
                // Someone else changed it since: only take our entry out.
                let _ = write_atomic(&list, conflist::remove(&t).as_bytes(), 0o644);
            }
        }
        for list in std::mem::take(&mut self.touched.lists) {
            if let Ok(t) = std::fs::read_to_string(&list) {
                if conflist::has_entry(&t) {
                    if let Err(e) = write_atomic(&list, conflist::remove(&t).as_bytes(), 0o644) {
                        tracing::error!(file = %list.display(), error = %e, "cannot remove plugin entry");
                    }
                }
            }
        }
        if self.touched.kubeconfig_token.take().is_some() {
            let _ = std::fs::remove_file(self.cfg.kubeconfig_path());
        }
        if std::mem::take(&mut self.touched.binary) {
            let _ = std::fs::remove_file(self.cfg.binary_path());
        }
        tracing::info!("uninstalled");
    }

    /// Reconciles every poll interval until `shutdown`, then uninstalls.
    pub fn run(mut self, shutdown: &AtomicBool) {
        while !shutdown.load(Ordering::SeqCst) {
            if let Err(e) = self.tick() {
                self.ready.store(false, Ordering::SeqCst);
                tracing::warn!(error = %e, "install pass failed; retrying");
            }
            self.passes.fetch_add(1, Ordering::AcqRel);
            let mut waited = Duration::ZERO;
            while waited < self.cfg.poll && !shutdown.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                waited += Duration::from_millis(20);
            }
        }
        self.uninstall();
    }
}

/// Serves `GET /readyz` (200 when installed, 503 otherwise) on a bound listener.
pub fn serve_readyz(listener: TcpListener, ready: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match (path, ready.load(Ordering::SeqCst)) {
                ("/readyz", true) => ("200 OK", "ok\n"),
                ("/readyz", false) => ("503 Service Unavailable", "not ready\n"),
                _ => ("404 Not Found", "not found\n"),
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

fn parse(args: &[String]) -> Result<(InstallConfig, SocketAddr), InstallError> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST")
        .unwrap_or_else(|_| "kubernetes.default.svc".into());
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let api = if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    };
    let mut cfg = InstallConfig {
        cni_bin_dir: "/host/opt/cni/bin".into(),
        cni_conf_dir: "/host/etc/cni/net.d".into(),
        source_binary: std::env::current_exe().unwrap_or_else(|_| "/usr/local/bin/mesh-cni".into()),
        token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
        ca_file: "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt".into(),
        api_server: api,
        kubeconfig_name: "mesh-cni-kubeconfig".into(),
        kubeconfig_host_path: "/etc/cni/net.d/mesh-cni-kubeconfig".into(),
        ready_file: "/host/var/run/mesh-cni/ready".into(),
        ready_file_host_path: "/var/run/mesh-cni/ready".into(),
        plugin_extra: serde_json::Map::new(),
        poll: Duration::from_millis(200),
    };
    let mut readyz: SocketAddr = "0.0.0.0:8000".parse().expect("static");
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| InstallError::Usage(flag.clone(), "needs a value".into()))?
            .clone();
        let bad = |why: String| InstallError::Usage(v.clone(), why);
        match flag.as_str() {
            "--cni-bin-dir" => cfg.cni_bin_dir = v.into(),
            "--cni-conf-dir" => cfg.cni_conf_dir = v.into(),
            "--source-binary" => cfg.source_binary = v.into(),
            "--token-file" => cfg.token_file = v.into(),
            "--ca-file" => cfg.ca_file = v.into(),
            "--api-server" => cfg.api_server = v,
            "--kubeconfig-name" => cfg.kubeconfig_name = v,
            "--kubeconfig-host-path" => cfg.kubeconfig_host_path = v.into(),
            "--ready-file" => cfg.ready_file = v.into(),
            "--ready-file-host-path" => cfg.ready_file_host_path = v.into(),
            "--readyz-addr" => readyz = v.parse().map_err(|e| bad(format!("{e}")))?,
            "--poll-ms" => {
                cfg.poll = Duration::from_millis(v.parse().map_err(|e| bad(format!("{e}")))?)
            }
            "--plugin-config" => match serde_json::from_str(&v) {
                Ok(serde_json::Value::Object(m)) => cfg.plugin_extra = m,
                _ => return Err(bad("expected a JSON object".into())),
            },
            other => return Err(InstallError::Usage(other.into(), "unknown flag".into())),
        }
    }
    Ok((cfg, readyz))
}

pub fn main(args: &[String]) -> ExitCode {
    crate::redirect::init_stderr_logging();
    let (cfg, addr) = match parse(args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("mesh-cni install: {e}");
            return ExitCode::from(2);
        }
    };
    // Block the stop signals before any thread exists, then wait for them on one.
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGTERM);
    signals.add(nix::sys::signal::Signal::SIGINT);
    if let Err(e) = signals.thread_block() {
        eprintln!("mesh-cni install: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mesh-cni install: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(a) = listener.local_addr() {
        eprintln!("mesh-cni install: readyz listening on {a}");
    }
    let ready = Arc::new(AtomicBool::new(false));
    serve_readyz(listener, ready.clone());
    let shutdown = Arc::new(AtomicBool::new(false));
    let s2 = shutdown.clone();
    std::thread::spawn(move || {
        if let Ok(sig) = signals.wait() {
            tracing::info!(signal = ?sig, "stopping");
        }
        s2.store(true, Ordering::SeqCst);
    });
    Installer::new(cfg, ready).run(&shutdown);
    ExitCode::SUCCESS
}
