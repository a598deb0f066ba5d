//! `meshctl local down`: removing everything a local mesh created, from the
//! state kept in its run directory, so that it also works after a crash or a
//! half-finished `up`.

use std::time::Duration;

use anyhow::bail;

use super::node;
use super::pod;
use super::proc;
use super::state::RunDir;

/// Removes everything recorded in the state: processes, pods (CNI DEL), agent,
/// node, files. Goes on past errors and reports them at the end.
pub fn down(run: &RunDir) -> anyhow::Result<()> {
    if !run.exists() {
        if run.0.exists() {
            let _ = std::fs::remove_dir_all(&run.0);
        }
        println!("no local mesh at {}: nothing to remove", run.0.display());
        return Ok(());
    }
    let st = run.load()?;
    let mut errors = Vec::new();
    if let Some(f) = &st.forwarder {
        proc::stop(f, Duration::from_secs(3));
    }
    for p in st.pods.iter().rev() {
        errors.extend(pod::remove(&st, run, p));
    }
    if let Some(a) = &st.agent {
        proc::stop(a, Duration::from_secs(3));
    }
    if let Some(c) = &st.collector {
        proc::stop(c, Duration::from_secs(3));
    }
    errors.extend(node::del_node(&st));
    if let Err(e) = std::fs::remove_dir_all(&run.0) {
        errors.push(format!("removing {}: {e}", run.0.display()));
    }
    println!(
        "removed {} pods, the agent and node {}",
        st.pods.len(),
        st.node_netns
    );
    if !errors.is_empty() {
        bail!(
            "some things could not be removed:\n  {}",
            errors.join("\n  ")
        );
    }
    Ok(())
}
