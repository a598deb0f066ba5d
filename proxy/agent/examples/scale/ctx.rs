//! What phases 1 to 4 share: the command line, the clock tick for `/proc`
//! CPU times, the probe the proxies report to, and the feed of the mesh and
//! the agent log the agent is (re)started with. Built once in `main`; imports only
//! `args`, `clients` and `feed`.

use crate::args::Args;
use crate::clients::Probe;
use crate::feed::{Feed, Shape};
use std::path::PathBuf;
use std::sync::Arc;

pub struct Ctx {
    pub args: Args,
    /// VirtualServices, and as many DestinationRules, on the first services.
    pub vs: usize,
    /// Clock ticks per second.
    pub tck: f64,
    pub probe: Arc<Probe>,
    /// Where the agent reads the mesh (a directory or the fake API server).
    pub feed: Feed,
    /// The agent's stderr.
    pub log: PathBuf,
}

impl Ctx {
    pub fn shape(&self) -> Shape {
        Shape {
            services: self.args.services,
            namespaces: self.args.namespaces,
            vs: self.vs,
        }
    }
}
