//! Workload credentials in local mode. In a cluster a sidecar proves who it is to
//! the mesh CA with its projected service-account token; here each sidecar gets a
//! random token in a file only its UID can read, and the agent's tokens file maps
//! that token to the pod's namespace and service account (what a TokenReview
//! would answer). The agent publishes the root bundle next to it.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;

use super::state::RunDir;

pub fn dir(run: &RunDir) -> PathBuf {
    run.0.join("ca")
}

/// The agent's `--ca-tokens` file.
pub fn tokens_file(run: &RunDir) -> PathBuf {
    dir(run).join("tokens")
}

/// Where the agent publishes the root bundle (`istio-ca-root-cert`).
pub fn root_file(run: &RunDir) -> PathBuf {
    dir(run).join("root-cert.pem")
}

pub fn init(run: &RunDir) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let d = dir(run);
    std::fs::create_dir_all(d.join("pods")).with_context(|| format!("creating {}", d.display()))?;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(d.join("pods"), std::fs::Permissions::from_mode(0o755))?;
    let t = tokens_file(run);
    std::fs::write(&t, "")?;
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn token_path(run: &RunDir, ns: &str, pod: &str) -> PathBuf {
    dir(run).join("pods").join(format!("{ns}_{pod}.token"))
}

/// Issues a credential for `ns/pod` running as service account `sa`, readable
/// only by `uid` (the proxy's), and returns its path for `CA_TOKEN_FILE`.
pub fn issue(run: &RunDir, ns: &str, pod: &str, sa: &str, uid: u32) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mut raw = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let path = token_path(run, ns, pod);
    std::fs::write(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))?;
    nix::unistd::chown(
        &path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(uid)),
    )
    .with_context(|| format!("chown {}", path.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(tokens_file(run))
        .context("opening the CA tokens file")?;
    writeln!(f, "{token} {ns} {sa}")?;
    Ok(path)
}

/// Forgets `ns/pod`'s credential (its token no longer gets certificates).
pub fn revoke(run: &RunDir, ns: &str, pod: &str) {
    let path = token_path(run, ns, pod);
    let Ok(token) = std::fs::read_to_string(&path) else {
        return;
    };
    let _ = std::fs::remove_file(&path);
    let file = tokens_file(run);
    if let Ok(all) = std::fs::read_to_string(&file) {
        let kept: String = all
            .lines()
            .filter(|l| l.split_whitespace().next() != Some(token.trim()))
            .map(|l| format!("{l}\n"))
            .collect();
        let _ = super::state::write_file(&file, &kept);
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
    }
}
