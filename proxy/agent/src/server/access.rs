//! Who may follow which pod's view. On the TLS port of an agent with a CA a
//! subscription is authenticated like a CSR (the pod's token: TokenReview in
//! Kubernetes, the local tokens file otherwise) or by the workload certificate
//! the caller presented as TLS client ([`super::peer`]), and the proven
//! (namespace, service account) must be the subscribed pod's namespace and the
//! `serviceAccountName` of that pod as the agent knows it. A view lists every
//! service's endpoints and the pod's inbound policy, so a caller gets only the
//! views of its own pods.
//!
//! A caller presenting both credentials must present two that agree
//! ([`combine`]): each is verified, neither is ignored.
//!
//! A pod the agent does not know (yet) is not served on the caller's word: its
//! object may still be on its way (a watch lagging behind pod creation, an
//! agent that just started, a `meshctl local` Pod file not yet read). The
//! stream waits a short grace for it to show up, then refuses with a reason;
//! the proxy retries with backoff and subscribes as soon as the pod is known.
//!
//! Plaintext ports (`--plaintext-listen`, and 15012 of an agent without CA,
//! which has no way to authenticate anyone) trust their network, as Istio's
//! 15010 does: they check nothing here.

use super::peer::CertRefusal;
use crate::ca::auth::AuthError;
use mesh_api::syncapi::ProxyIdentity;
use mesh_api::Identity;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a subscription is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("subscription not authenticated: {0}")]
    Unauthenticated(#[from] AuthError),
    #[error("subscription not authenticated: {0}")]
    Certificate(#[from] CertRefusal),
    #[error("the client certificate is for {certificate}, the token for {token}: the credentials disagree")]
    Disagree { certificate: String, token: String },
    #[error(
        "the credential is for namespace {caller:?}, not for pod {namespace}/{pod}'s namespace"
    )]
    Namespace {
        caller: String,
        namespace: String,
        pod: String,
    },
    #[error("pod {namespace}/{pod} is not known to this agent (yet); retry when it is")]
    UnknownPod { namespace: String, pod: String },
    #[error(
        "pod {namespace}/{pod} runs as service account {pod_sa:?}, the credential is for {caller_sa:?}"
    )]
    ServiceAccount {
        namespace: String,
        pod: String,
        pod_sa: String,
        caller_sa: String,
    },
}

impl Refusal {
    /// The label of this refusal in `/metrics`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated(_) => "unauthenticated",
            Refusal::Certificate(_) => "certificate",
            Refusal::Disagree { .. } => "credentials_disagree",
            Refusal::Namespace { .. } => "namespace",
            Refusal::UnknownPod { .. } => "unknown_pod",
            Refusal::ServiceAccount { .. } => "service_account",
        }
    }
}

/// Every refusal reason, in `/metrics` order.
pub const REASONS: [&str; 6] = [
    "unauthenticated",
    "certificate",
    "credentials_disagree",
    "namespace",
    "unknown_pod",
    "service_account",
];

/// Which credential authenticated a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Token,
    Certificate,
    /// Both, agreeing.
    Both,
}

/// Every [`Auth`] label, in `/metrics` order.
pub const AUTHS: [&str; 3] = ["token", "certificate", "certificate_and_token"];

impl Auth {
    /// The label of this credential in `/metrics`.
    pub fn label(self) -> &'static str {
        AUTHS[self as usize]
    }
}

/// The caller, from the identity its certificate proved and the one its token
/// proved (each already verified). When both are there they must name the
/// same identity: taking either alone would let a caller pair its own valid
/// token with a certificate it holds for another identity (or the reverse) and
/// leave the mismatch unnoticed; refusing makes a confused or tampered proxy
/// visible instead of silently picking one of its claims.
pub fn combine(
    certificate: Option<Identity>,
    token: Option<Identity>,
) -> Result<(Identity, Auth), Refusal> {
    match (certificate, token) {
        (Some(c), Some(t)) if c != t => Err(Refusal::Disagree {
            certificate: c.to_string(),
            token: t.to_string(),
        }),
        (Some(c), Some(_)) => Ok((c, Auth::Both)),
        (Some(c), None) => Ok((c, Auth::Certificate)),
        (None, Some(t)) => Ok((t, Auth::Token)),
        (None, None) => Err(Refusal::Unauthenticated(AuthError::Empty)),
    }
}

/// May `caller` follow the view of the pod `id` names? `pods` maps
/// (namespace, pod) to its service account, as the agent knows them.
pub fn check(
    caller: &Identity,
    pods: &BTreeMap<(String, String), String>,
    id: &ProxyIdentity,
) -> Result<(), Refusal> {
    if caller.namespace != id.namespace {
        return Err(Refusal::Namespace {
            caller: caller.namespace.clone(),
            namespace: id.namespace.clone(),
            pod: id.pod.clone(),
        });
    }
    let Some(sa) = pods.get(&(id.namespace.clone(), id.pod.clone())) else {
        return Err(Refusal::UnknownPod {
            namespace: id.namespace.clone(),
            pod: id.pod.clone(),
        });
    };
    if *sa != caller.service_account {
        return Err(Refusal::ServiceAccount {
            namespace: id.namespace.clone(),
            pod: id.pod.clone(),
            pod_sa: sa.clone(),
            caller_sa: caller.service_account.clone(),
        });
    }
    Ok(())
}

/// Refused subscriptions so far, by [`REASONS`] index.
#[derive(Debug, Default)]
pub struct Refusals([AtomicU64; REASONS.len()]);

impl Refusals {
    pub fn count(&self, r: &Refusal) {
        let i = REASONS.iter().position(|x| *x == r.reason()).unwrap_or(0);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: &str) -> u64 {
        REASONS
            .iter()
            .position(|x| *x == reason)
            .map_or(0, |i| self.0[i].load(Ordering::Relaxed))
    }
}

/// Authenticated subscriptions so far, by [`AUTHS`] index.
#[derive(Debug, Default)]
pub struct Accepted([AtomicU64; AUTHS.len()]);

impl Accepted {
    pub fn count(&self, a: Auth) {
        self.0[a as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, a: Auth) -> u64 {
        self.0[a as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> BTreeMap<(String, String), String> {
        [(("shop", "web-0"), "web"), (("shop", "cart-0"), "cart")]
            .into_iter()
            .map(|((ns, p), sa)| ((ns.into(), p.into()), sa.into()))
            .collect()
    }

    fn sub(ns: &str, pod: &str) -> ProxyIdentity {
        ProxyIdentity {
            pod: pod.into(),
            namespace: ns.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_pods_own_account_may_follow_its_view() {
        let web = Identity::new("cluster.local", "shop", "web").unwrap();
        let bank = Identity::new("cluster.local", "bank", "web").unwrap();
        assert_eq!(check(&web, &pods(), &sub("shop", "web-0")), Ok(()));
        let cases = [
            (&web, sub("shop", "cart-0"), "service_account", "\"cart\""),
            (&bank, sub("shop", "web-0"), "namespace", "\"bank\""),
            (&web, sub("shop", "web-9"), "unknown_pod", "shop/web-9"),
            // Same pod name in another namespace: the namespace decides first.
            (&web, sub("bank", "web-0"), "namespace", "bank/web-0"),
        ];
        for (caller, id, reason, names) in cases {
            let e = check(caller, &pods(), &id).unwrap_err();
            assert_eq!(e.reason(), reason, "{id:?}: {e}");
            assert!(e.to_string().contains(names), "{id:?}: {e}");
        }
    }

    #[test]
    fn both_credentials_must_name_the_same_identity() {
        let id = |ns: &str, sa: &str| Identity::new("cluster.local", ns, sa).unwrap();
        let web = id("shop", "web");
        assert_eq!(
            combine(Some(web.clone()), None),
            Ok((web.clone(), Auth::Certificate))
        );
        assert_eq!(
            combine(None, Some(web.clone())),
            Ok((web.clone(), Auth::Token))
        );
        assert_eq!(
            combine(Some(web.clone()), Some(web.clone())),
            Ok((web.clone(), Auth::Both))
        );
        let e = combine(Some(web.clone()), Some(id("shop", "cart"))).unwrap_err();
        assert_eq!(e.reason(), "credentials_disagree");
        assert!(
            e.to_string().contains("/sa/web") && e.to_string().contains("/sa/cart"),
            "{e}"
        );
        let e = combine(None, None).unwrap_err();
        assert_eq!(e.reason(), "unauthenticated");
        assert_eq!(Auth::Both.label(), "certificate_and_token");
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let r = Refusals::default();
        r.count(&Refusal::UnknownPod {
            namespace: "a".into(),
            pod: "b".into(),
        });
        r.count(&Refusal::Unauthenticated(AuthError::Empty));
        r.count(&Refusal::Unauthenticated(AuthError::Unknown));
        assert_eq!(r.get("unknown_pod"), 1);
        assert_eq!(r.get("unauthenticated"), 2);
        assert_eq!(r.get("namespace"), 0);
    }
}
