//! `mesh-agent` (partial while building).
pub mod crdgen;
pub mod objects;
pub mod validate;
