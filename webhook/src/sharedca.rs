//! One CA for every replica in self-managed mode. The CA, serving cert and key live
//! in one Secret (`istio-system/mesh-webhook-certs` by default); replicas converge
//! on it through the API server's own concurrency control:
//!
//! - missing: generate and `create`; on 409 AlreadyExists another replica won, so
//!   read and use the winner's;
//! - near expiry (or unreadable): generate and `replace` with the `resourceVersion`
//!   we read; on 409 Conflict another replica rotated first, so read and use theirs.
//!   The new `ca.crt` keeps the previous CA next to the new one while it is still
//!   valid, so a replica that has not picked up the rotation yet stays trusted;
//! - every round, each replica serves the Secret's cert and makes the caBundle of
//!   both webhook configurations equal to the Secret's `ca.crt`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::kubeapi::{ApiClient, ApiError};
use crate::selfca::{sync_ca_bundle_of, SelfCaError, SelfManaged, WebhookKind};
use crate::tls::CertStore;

/// Where the shared certificate lives and how long certificates last.
#[derive(Debug, Clone)]
pub struct SharedCa {
    pub namespace: String,
    pub secret: String,
    /// The Service the serving cert is for.
    pub service: String,
    pub lifetime: Duration,
    /// Rotate when less than this is left.
    pub renew_before: Duration,
}

impl SharedCa {
    pub fn new(namespace: &str, secret: &str, service: &str) -> Self {
        SharedCa {
            namespace: namespace.into(),
            secret: secret.into(),
            service: service.into(),
            lifetime: Duration::from_secs(365 * 24 * 3600),
            renew_before: Duration::from_secs(90 * 24 * 3600),
        }
    }

    fn collection(&self) -> String {
        format!("/api/v1/namespaces/{}/secrets", self.namespace)
    }

    fn path(&self) -> String {
        format!("{}/{}", self.collection(), self.secret)
    }
}

/// The certificate material every replica serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    /// Current CA, then the previous one while it is still valid.
    pub ca_bundle: String,
    pub cert_pem: String,
    pub key_pem: String,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn field(secret: &Value, key: &str) -> Option<String> {
    let raw = secret["data"][key].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
    String::from_utf8(bytes).ok()
}

/// The Secret's content if it is complete and the cert still has more than
/// `renew_before` left; `None` when it must be (re)generated.
fn usable(secret: &Value, renew_before: Duration) -> Option<Shared> {
    let s = Shared {
        ca_bundle: field(secret, "ca.crt")?,
        cert_pem: field(secret, "tls.crt")?,
        key_pem: field(secret, "tls.key")?,
    };
    crate::tls::load_certified_key(s.cert_pem.as_bytes(), s.key_pem.as_bytes()).ok()?;
    let left = not_after(&s.cert_pem)?
        .duration_since(SystemTime::now())
        .ok()?;
    (left > renew_before).then_some(s)
}

/// Expiry of the first certificate in `pem`.
pub fn not_after(pem: &str) -> Option<SystemTime> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = p.parse_x509().ok()?;
    let secs = cert.validity().not_after.timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Still-valid CA certificates of a PEM bundle, re-encoded as PEM.
fn valid_cas(bundle: &str) -> Vec<String> {
    let now = SystemTime::now();
    x509_parser::pem::Pem::iter_from_buffer(bundle.as_bytes())
        .filter_map(Result::ok)
        .filter(|p| {
            p.parse_x509()
                .ok()
                .and_then(|c| u64::try_from(c.validity().not_after.timestamp()).ok())
                .is_some_and(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t) > now)
        })
        .map(|p| {
            let b = base64::engine::general_purpose::STANDARD.encode(&p.contents);
            let lines: Vec<&str> = b
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap_or(""))
                .collect();
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            )
        })
        .collect()
}

fn fresh(cfg: &SharedCa, previous: Option<&str>) -> Result<Shared, SelfCaError> {
    let sm = SelfManaged::generate_for(&cfg.service, &cfg.namespace, cfg.lifetime)?;
    let mut bundle = sm.ca_pem.clone();
    // Only the newest previous CA: one rotation of overlap is enough.
    if let Some(old) = previous.and_then(|p| valid_cas(p).into_iter().next()) {
        bundle.push_str(&old);
    }
    Ok(Shared {
        ca_bundle: bundle,
        cert_pem: sm.cert_pem,
        key_pem: sm.key_pem,
    })
}

fn secret_object(cfg: &SharedCa, s: &Shared, resource_version: Option<&str>) -> Value {
    let mut meta = json!({"name": cfg.secret, "namespace": cfg.namespace,
        "labels": {"app": "mesh-webhook", "app.kubernetes.io/part-of": "mesh"}});
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = json!(rv);
    }
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "kubernetes.io/tls",
        "data": {"ca.crt": b64(&s.ca_bundle), "tls.crt": b64(&s.cert_pem), "tls.key": b64(&s.key_pem)}})
}

/// What [`ensure`] did, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Rotated,
    /// Used what was there (possibly after losing a create/rotate race).
    Used,
}

/// Makes sure the Secret holds a usable certificate and returns it.
pub async fn ensure(api: &ApiClient, cfg: &SharedCa) -> Result<(Shared, Outcome), SelfCaError> {
    let current = match api.get(&cfg.path()).await {
        Ok(s) => Some(s),
        Err(e) if e.status() == Some(404) => None,
        Err(e) => return Err(e.into()),
    };
    match current {
        None => {
            let mine = fresh(cfg, None)?;
            match api
                .create(&cfg.collection(), &secret_object(cfg, &mine, None))
                .await
            {
                Ok(_) => Ok((mine, Outcome::Created)),
                Err(e) if e.status() == Some(409) => {
                    Ok((read_winner(api, cfg).await?, Outcome::Used))
                }
                Err(e) => Err(e.into()),
            }
        }
        Some(secret) => {
            if let Some(s) = usable(&secret, cfg.renew_before) {
                return Ok((s, Outcome::Used));
            }
            let rv = secret["metadata"]["resourceVersion"].as_str();
            let mine = fresh(cfg, field(&secret, "ca.crt").as_deref())?;
            match api
                .replace(&cfg.path(), &secret_object(cfg, &mine, rv))
                .await
            {
                Ok(_) => Ok((mine, Outcome::Rotated)),
                Err(e) if e.status() == Some(409) => {
                    Ok((read_winner(api, cfg).await?, Outcome::Used))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

async fn read_winner(api: &ApiClient, cfg: &SharedCa) -> Result<Shared, SelfCaError> {
    let secret = api.get(&cfg.path()).await?;
    // The winner's cert is fresh; only refuse one that is unreadable.
    usable(&secret, Duration::ZERO).ok_or_else(|| {
        SelfCaError::Api(ApiError::Io {
            method: "GET",
            path: cfg.path(),
            error: "the Secret another replica wrote is incomplete or expired".into(),
        })
    })
}

/// One round: converge on the Secret, serve its cert, publish its CA bundle.
/// Returns the material now served.
pub async fn sync_once(
    api: &ApiClient,
    cfg: &SharedCa,
    store: &CertStore,
    served: Option<&Shared>,
    webhook_configs: &[(WebhookKind, String)],
) -> Result<Shared, SelfCaError> {
    let (shared, outcome) = ensure(api, cfg).await?;
    if served != Some(&shared) {
        store.swap(crate::tls::load_certified_key(
            shared.cert_pem.as_bytes(),
            shared.key_pem.as_bytes(),
        )?);
        tracing::info!(secret = %cfg.secret, ?outcome, "serving the shared certificate");
    }
    for (kind, name) in webhook_configs {
        let mut r = sync_ca_bundle_of(api, *kind, name, &shared.ca_bundle).await;
        // Another replica patched the same config at the same moment (its patch
        // carries the same bundle): read again instead of waiting a whole round.
        if matches!(&r, Err(SelfCaError::Api(e)) if e.status() == Some(409)) {
            r = sync_ca_bundle_of(api, *kind, name, &shared.ca_bundle).await;
        }
        if r? {
            tracing::info!(webhook_config = %name, "caBundle patched");
        }
    }
    Ok(shared)
}

/// Repeats [`sync_once`] every `every` until `stop` turns true.
pub fn keep_shared(
    api: Arc<ApiClient>,
    cfg: SharedCa,
    store: Arc<CertStore>,
    mut served: Option<Shared>,
    webhook_configs: Vec<(WebhookKind, String)>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            match sync_once(&api, &cfg, &store, served.as_ref(), &webhook_configs).await {
                Ok(s) => served = Some(s),
                Err(e) => tracing::warn!(error = %e, "shared certificate sync failed; retrying"),
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
