//! The install manifests (manifests/, kustomize) as a cluster would get them:
//! rendered with `kubectl kustomize`, schema-checked with `kubernetes-validate
//! --strict` for the newest and the oldest Kubernetes we claim, and checked for what
//! the schema cannot see: Istio's injection selectors, least-privilege RBAC, the
//! mesh config accepted by the real parsers, one image name, and the wiring between
//! objects (selectors, ports, flags, mounts).
//!
//! This file names the renders; the checks live beside the helpers of
//! `manifests_support/mod.rs`: `schema.rs` (strict schemas, CRDs, validating
//! webhook), `injection.rs` (injection selectors, OSSM membership), `rbac.rs`,
//! `wiring.rs` and `gateways.rs`. They see this file's items and the helpers
//! through `use super::*`; this file uses none of theirs.

mod manifests_support;

use anyhow::{ensure, Context, Result};
use manifests_support::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;

const RENDERS: [&str; 5] = [
    "manifests",
    "manifests/overlays/cni",
    "manifests/overlays/cert-manager",
    "manifests/overlays/egress-gateway",
    MAISTRA,
];
/// OpenShift Service Mesh 2.x compatibility (membership instead of injection labels).
const MAISTRA: &str = "manifests/overlays/maistra";

#[path = "manifests_support/schema.rs"]
mod schema;

#[path = "manifests_support/injection.rs"]
mod injection;

#[path = "manifests_support/rbac.rs"]
mod rbac;

#[path = "manifests_support/wiring.rs"]
mod wiring;

#[path = "manifests_support/gateways.rs"]
mod gateways;
