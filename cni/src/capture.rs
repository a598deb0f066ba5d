//! Writing and removing a pod's whole capture (both families plus TPROXY routing) in
//! the current network namespace, all-or-nothing: when the IPv6 transaction or the
//! routing fails after IPv4 was written, what was written is removed again.

use mesh_api::{InterceptionMode, RedirectParams};

use crate::iptables::{self, Applied, Backend, IptablesError};
use crate::route::{self, RouteError, TproxyRouting};
use crate::rules::{self, Family};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Iptables(#[from] IptablesError),
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// Everything needed to undo a capture exactly.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Written {
    pub backend: Backend,
    pub v4: Applied,
    pub v6: Option<Applied>,
    /// TPROXY routing `(mark, table)`, when it was set up.
    pub tproxy: Option<(u32, u32)>,
}

fn families(w: &Written) -> Vec<Family> {
    let mut f = vec![Family::V4];
    if w.v6.is_some() {
        f.push(Family::V6);
    }
    f
}

/// Writes the capture for `p` (replacing an earlier one).
pub fn write(backend: Backend, p: &RedirectParams) -> Result<Written, CaptureError> {
    let set = rules::build(p);
    let v4 = iptables::apply(backend, &set.v4)?;
    let mut written = Written {
        backend,
        v4,
        v6: None,
        tproxy: None,
    };
    if let Some(v6) = &set.v6 {
        match iptables::apply(backend, v6) {
            Ok(a) => written.v6 = Some(a),
            Err(e) => {
                undo_after_failure(&written);
                return Err(e.into());
            }
        }
    }
    if p.interception_mode == InterceptionMode::Tproxy {
        let r = TproxyRouting {
            mark: p.tproxy_mark,
            table: p.tproxy_route_table,
        };
        written.tproxy = Some((r.mark, r.table));
        for f in families(&written) {
            if let Err(e) = route::add(f, r) {
                undo_after_failure(&written);
                return Err(e.into());
            }
        }
    }
    Ok(written)
}

fn undo_after_failure(w: &Written) {
    if let Err(e) = remove(w) {
        tracing::error!(error = %e, "rolling back a partial capture failed");
    }
}

/// Removes exactly what [`write`] wrote; anything already gone is fine.
pub fn remove(w: &Written) -> Result<(), CaptureError> {
    iptables::remove(w.backend, Family::V4, &w.v4)?;
    if let Some(v6) = &w.v6 {
        iptables::remove(w.backend, Family::V6, v6)?;
    }
    if let Some((mark, table)) = w.tproxy {
        for f in families(w) {
            route::remove(f, TproxyRouting { mark, table })?;
        }
    }
    Ok(())
}

/// Lists what of `p`'s capture is missing (empty: complete).
pub fn check(backend: Backend, p: &RedirectParams) -> Result<Vec<String>, CaptureError> {
    let set = rules::build(p);
    let mut missing = Vec::new();
    for fr in set.families() {
        missing.extend(iptables::check(backend, fr)?);
    }
    Ok(missing)
}

/// Removes TPROXY policy routing for `p`'s mark and table, if present.
pub fn remove_tproxy_routing(p: &RedirectParams) {
    let r = TproxyRouting {
        mark: p.tproxy_mark,
        table: p.tproxy_route_table,
    };
    for f in [Family::V4, Family::V6] {
        if let Err(e) = route::remove(f, r) {
            tracing::debug!(error = %e, "no TPROXY routing to remove");
        }
    }
}
