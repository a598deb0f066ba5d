//! What phases 1 to 4 share: the command line, the clock tick for `/proc`
//! CPU times, the probe the proxies report to, and the mesh directory and
//! agent log the agent is (re)started with. Built once in `main`; imports only `args` and `clients`.

use crate::args::Args;
use crate::clients::Probe;
use std::path::PathBuf;
use std::sync::Arc;

pub struct Ctx {
    pub args: Args,
    /// VirtualServices, and as many DestinationRules, on the first services.
    pub vs: usize,
    /// Clock ticks per second.
    pub tck: f64,
    pub probe: Arc<Probe>,
    /// The agent's `--config-dir`.
    pub mesh_dir: PathBuf,
    /// The agent's stderr.
    pub log: PathBuf,
}
