//! The command line of the benchmark: the mesh's and the run's sizes, the
//! agent's source and where the report goes. Imports only `feed`'s flag type;
//! `main` parses it and the phases read it
//! through [`crate::ctx::Ctx`].

use crate::feed::SourceArg;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser, Debug, Clone)]
#[command(about = "mesh-agent scale benchmark (issue 19)")]
pub struct Args {
    /// In-process sync clients (proxies).
    #[arg(long, default_value_t = 5000)]
    pub proxies: usize,
    /// Services in the mesh (one EndpointSlice of 10 endpoints each).
    #[arg(long, default_value_t = 10_000)]
    pub services: usize,
    /// Namespaces the services and proxies are spread over.
    #[arg(long, default_value_t = 100)]
    pub namespaces: usize,
    /// VirtualServices (and as many DestinationRules), on the first services.
    #[arg(long, default_value_t = 1000)]
    pub virtual_services: usize,
    /// On-demand lookups per proxy, of services in other namespaces.
    #[arg(long, default_value_t = 3)]
    pub lookups: usize,
    /// EndpointSlice changes in the series.
    #[arg(long, default_value_t = 50)]
    pub changes: usize,
    /// Pause after each change has reached its proxies (longer than the
    /// agent's 100 ms debounce, so every change is measured on its own).
    #[arg(long, default_value_t = 250)]
    pub change_gap_ms: u64,
    /// Services rolled out together in phase 3b (each replaces its pods one
    /// by one: one EndpointSlice change per pod); 0 skips the phase.
    #[arg(long, default_value_t = 50)]
    pub rollout_services: usize,
    /// How long the rollout's changes are spread over.
    #[arg(long, default_value_t = 2000)]
    pub rollout_ms: u64,
    /// Where the agent reads the mesh: `files` (a YAML directory) or
    /// `kubernetes` (the in-process fake API server, watched by kube-rs).
    #[arg(long, value_enum, default_value = "files")]
    pub source: SourceArg,
    /// Skip phase 5 (the real mesh-proxy's RSS).
    #[arg(long)]
    pub no_sidecar: bool,
    /// Write the report as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only write the mesh's YAML into this directory and exit (to run
    /// `mesh-agent --config-dir` on it by hand, e.g. with a sidecar under
    /// heaptrack).
    #[arg(long)]
    pub write_mesh: Option<PathBuf>,
}
