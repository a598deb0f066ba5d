//! Locating the workspace's binaries from a test of another crate. Cargo only
//! exposes a package's own binaries (`CARGO_BIN_EXE_*`), so tests that chain
//! several (proxy + CNI plugin + echo app) find the others beside the running
//! test executable, in the same target directory.

use std::path::PathBuf;

/// Path of the workspace binary `name` (e.g. `mesh-cni`) in the current target
/// directory. Panics with the command to run when it has not been built.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("test executable lives in a target directory");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build --workspace --bins` first (tests/run.sh does)",
        path.display()
    );
    path
}
