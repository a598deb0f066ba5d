//! The injector's counters under istiod's names, which the Webhooks row of
//! Istio's control-plane dashboard reads: `sidecar_injection_requests_total`
//! (every `POST /inject`), then exactly one of `..._success_total` (a patch
//! adding the sidecar was sent), `..._skip_total` (allowed without a patch:
//! not selected for injection, or nothing to add) or `..._failure_total`
//! (denied, or the request could not be read). Served on `GET /metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::admission::Reviewed;

/// How one injection request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    Skipped,
    Failed,
}

impl Outcome {
    /// What an answered review amounts to.
    pub fn of(r: &Reviewed) -> Outcome {
        match (r.allowed, r.patch_ops) {
            (false, _) => Outcome::Failed,
            (true, 0) => Outcome::Skipped,
            (true, _) => Outcome::Injected,
        }
    }
}

#[derive(Debug, Default)]
pub struct InjectionMetrics {
    requests: AtomicU64,
    success: AtomicU64,
    skip: AtomicU64,
    failure: AtomicU64,
}

impl InjectionMetrics {
    pub fn record(&self, o: Outcome) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let c = match o {
            Outcome::Injected => &self.success,
            Outcome::Skipped => &self.skip,
            Outcome::Failed => &self.failure,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, c) in [
            (
                "sidecar_injection_requests_total",
                "Injection requests received.",
                &self.requests,
            ),
            (
                "sidecar_injection_success_total",
                "Injection requests answered with the sidecar patch.",
                &self.success,
            ),
            (
                "sidecar_injection_skip_total",
                "Injection requests allowed without a patch.",
                &self.skip,
            ),
            (
                "sidecar_injection_failure_total",
                "Injection requests denied or unreadable.",
                &self.failure,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                c.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review;
    use crate::{InjectContext, MeshConfig};
    use serde_json::json;

    fn reviewed(annotations: serde_json::Value) -> Reviewed {
        let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "namespace": "shop", "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "app"}]}}}});
        review(
            &serde_json::to_vec(&body).unwrap(),
            &MeshConfig::default(),
            &InjectContext::default(),
        )
    }

    #[test]
    fn each_request_counts_once_under_its_outcome() {
        let injected = reviewed(json!({}));
        let skipped = reviewed(json!({"sidecar.istio.io/inject": "false"}));
        let failed = reviewed(json!({"traffic.sidecar.istio.io/excludeInboundPorts": "70000"}));
        assert_eq!(Outcome::of(&injected), Outcome::Injected);
        assert_eq!(Outcome::of(&skipped), Outcome::Skipped);
        assert_eq!(Outcome::of(&failed), Outcome::Failed);

        let m = InjectionMetrics::default();
        for o in [
            Outcome::of(&injected),
            Outcome::Injected,
            Outcome::of(&skipped),
            Outcome::of(&failed),
        ] {
            m.record(o);
        }
        let t = m.render();
        for line in [
            "sidecar_injection_requests_total 4",
            "sidecar_injection_success_total 2",
            "sidecar_injection_skip_total 1",
            "sidecar_injection_failure_total 1",
            "# TYPE sidecar_injection_skip_total counter",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} in\n{t}");
        }
    }
}
