//! Self-managed certificates: the webhook makes its own CA and serving cert (SANs =
//! the Service's DNS names) and keeps the `caBundle` of its
//! MutatingWebhookConfiguration equal to that CA through the Kubernetes API,
//! re-patching whenever it drifts (e.g. a GitOps tool re-applied the manifest).
//! With several replicas the CA is shared through a Secret: see [`crate::sharedca`].

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::sign::CertifiedKey;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::kubeapi::{ApiClient, ApiError};
use crate::tls::{load_certified_key, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum SelfCaError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{kind} {name}: {reason}")]
    Shape {
        kind: &'static str,
        name: String,
        reason: String,
    },
}

/// A CA and the serving cert it signed.
pub struct SelfManaged {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl SelfManaged {
    /// CA + serving cert for Service `service` in `namespace`, valid for a year.
    pub fn generate(service: &str, namespace: &str) -> Result<Self, SelfCaError> {
        Self::generate_for(service, namespace, Duration::from_secs(365 * 24 * 3600))
    }

    /// Same, valid from five minutes ago (clock skew between nodes) for `lifetime`.
    pub fn generate_for(
        service: &str,
        namespace: &str,
        lifetime: Duration,
    ) -> Result<Self, SelfCaError> {
        let now = time::OffsetDateTime::now_utc();
        let (from, until) = (now - Duration::from_secs(300), now + lifetime);
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca.not_before = from;
        ca.not_after = until;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("{service}.{namespace} webhook CA"),
        );
        let ca_key = rcgen::KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let names = vec![
            service.to_string(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ];
        let mut leaf = rcgen::CertificateParams::new(names)?;
        leaf.not_before = from;
        leaf.not_after = until;
        let key = rcgen::KeyPair::generate()?;
        let cert = leaf.signed_by(&key, &issuer)?;
        Ok(SelfManaged {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    pub fn certified_key(&self) -> Result<CertifiedKey, TlsError> {
        load_certified_key(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
    }
}

/// Which kind of webhook configuration carries the caBundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    Mutating,
    Validating,
}

impl WebhookKind {
    fn path(self, name: &str) -> String {
        let plural = match self {
            WebhookKind::Mutating => "mutatingwebhookconfigurations",
            WebhookKind::Validating => "validatingwebhookconfigurations",
        };
        format!("/apis/admissionregistration.k8s.io/v1/{plural}/{name}")
    }

    fn kind(self) -> &'static str {
        match self {
            WebhookKind::Mutating => "MutatingWebhookConfiguration",
            WebhookKind::Validating => "ValidatingWebhookConfiguration",
        }
    }
}

/// Makes every webhook of `name` carry `ca_pem` as its caBundle. Returns whether a
/// patch was needed. The patch tests `resourceVersion`, so a concurrent writer
/// makes it fail (and the next round retries) instead of being overwritten.
pub async fn sync_ca_bundle(
    api: &ApiClient,
    name: &str,
    ca_pem: &str,
) -> Result<bool, SelfCaError> {
    sync_ca_bundle_of(api, WebhookKind::Mutating, name, ca_pem).await
}

/// [`sync_ca_bundle`] for either kind of webhook configuration.
pub async fn sync_ca_bundle_of(
    api: &ApiClient,
    kind: WebhookKind,
    name: &str,
    ca_pem: &str,
) -> Result<bool, SelfCaError> {
    let want = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let path = |n: &str| kind.path(n);
    let cfg = api.get(&path(name)).await?;
    let shape = |reason: &str| SelfCaError::Shape {
        kind: kind.kind(),
        name: name.into(),
        reason: reason.into(),
    };
    let webhooks = cfg["webhooks"]
        .as_array()
        .ok_or_else(|| shape("has no webhooks list"))?;
    let mut ops: Vec<Value> = Vec::new();
    if let Some(rv) = cfg["metadata"]["resourceVersion"].as_str() {
        ops.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}));
    }
    for (i, w) in webhooks.iter().enumerate() {
        if !w["clientConfig"].is_object() {
            return Err(shape(&format!("webhooks[{i}] has no clientConfig")));
        }
        if w["clientConfig"]["caBundle"].as_str() != Some(want.as_str()) {
            ops.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": want}));
        }
    }
    if ops.iter().all(|o| o["op"] == "test") {
        return Ok(false);
    }
    api.patch_json(&path(name), &Value::Array(ops)).await?;
    Ok(true)
}

/// Re-checks the caBundle every `every` until `stop` turns true.
pub fn keep_ca_bundle(
    api: Arc<ApiClient>,
    name: String,
    ca_pem: String,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            match sync_ca_bundle(&api, &name, &ca_pem).await {
                Ok(true) => tracing::info!(webhook_config = %name, "caBundle patched"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(webhook_config = %name, error = %e, "caBundle sync failed; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    });
}
