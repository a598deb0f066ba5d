//! SPIFFE workload identities: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`,
//! the only form Istio issues and the form peers check in mTLS and AuthorizationPolicy.
//! [`spiffe_identity`] reads it from a workload certificate's URI SAN (sidecars
//! check their peers with it, the agent authenticates 15012 subscriptions by it).

use std::fmt;
use std::str::FromStr;

/// Where the injector mounts the projected service-account token (audience
/// `istio-ca`) that a sidecar presents to the mesh CA, as Istio does.
pub const CA_TOKEN_PATH: &str = "/var/run/secrets/tokens/istio-token";

/// Where the injector mounts the `istio-ca-root-cert` ConfigMap's bundle, the
/// roots a sidecar verifies the mesh CA / config server (15012) with, as
/// pilot-agent reads it.
pub const CA_ROOT_PATH: &str = "/var/run/secrets/istio/root-cert.pem";

/// The name the config server / CA on 15012 is verified as (istiod's service name).
pub const ISTIOD_SERVER_NAME: &str = "istiod.istio-system.svc";

/// A workload identity as issued by the mesh CA.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

/// Why a string is not a workload identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("identity {0:?} does not start with \"spiffe://\"")]
    Scheme(String),
    #[error("identity {0:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")]
    Shape(String),
    #[error("identity {value:?} has an invalid {part} {segment:?}: {why}")]
    Segment {
        value: String,
        part: &'static str,
        segment: String,
        why: &'static str,
    },
}

impl Identity {
    /// Builds an identity, checking each segment.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, IdentityError> {
        let id = Identity {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        };
        id.check(&id.to_string())?;
        Ok(id)
    }

    fn check(&self, whole: &str) -> Result<(), IdentityError> {
        let seg = |part: &'static str, s: &str, dns_label: bool| -> Result<(), IdentityError> {
            let bad = |why| IdentityError::Segment {
                value: whole.to_string(),
                part,
                segment: s.to_string(),
                why,
            };
            if s.is_empty() {
                return Err(bad("it is empty"));
            }
            let allowed = |c: char| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || c == '-'
                    || c == '.'
                    || (!dns_label && (c == '_' || c.is_ascii_uppercase()))
            };
            if !s.chars().all(allowed) {
                return Err(bad(
                    "only lower-case letters, digits, '-' and '.' are allowed",
                ));
            }
            Ok(())
        };
        seg("trust domain", &self.trust_domain, false)?;
        seg("namespace", &self.namespace, true)?;
        seg("service account", &self.service_account, true)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdentityError::Scheme(s.to_string()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] => {
                let id = Identity {
                    trust_domain: td.to_string(),
                    namespace: ns.to_string(),
                    service_account: sa.to_string(),
                };
                id.check(s)?;
                Ok(id)
            }
            _ => Err(IdentityError::Shape(s.to_string())),
        }
    }
}

/// Why a peer certificate gives no identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    #[error("the peer certificate is not valid X.509 DER")]
    Parse,
    #[error("the peer certificate has no SPIFFE URI SAN")]
    NoSpiffe,
    #[error("peer identity {0} belongs to trust domain {1:?}, not ours")]
    TrustDomain(String, String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// The SPIFFE identity in a certificate's URI SAN (exactly one, Istio's shape).
pub fn spiffe_identity(der: &[u8]) -> Result<Identity, PeerError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| PeerError::Parse)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| PeerError::Parse)?
        .ok_or(PeerError::NoSpiffe)?;
    let uri = san
        .value
        .general_names
        .iter()
        .find_map(|g| match g {
            GeneralName::URI(u) if u.starts_with("spiffe://") => Some(*u),
            _ => None,
        })
        .ok_or(PeerError::NoSpiffe)?;
    Ok(uri.parse()?)
}

/// Like [`spiffe_identity`], also requiring our trust domain.
pub fn mesh_identity(der: &[u8], trust_domain: &str) -> Result<Identity, PeerError> {
    let id = spiffe_identity(der)?;
    if id.trust_domain != trust_domain {
        return Err(PeerError::TrustDomain(id.to_string(), id.trust_domain));
    }
    Ok(id)
}

impl serde::Serialize for Identity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Identity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id: Identity = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
            .parse()
            .unwrap();
        assert_eq!(id.namespace, "default");
        assert_eq!(id.service_account, "bookinfo-reviews");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
        );
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<Identity>(&json).unwrap(), id);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "http://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/namespace/a/sa/b",
            "spiffe:///ns/a/sa/b",
            "spiffe://td/ns/A_B/sa/b",
            "spiffe://td/ns/a/sa/",
        ] {
            let err = bad.parse::<Identity>().unwrap_err();
            assert!(err.to_string().contains(bad), "{err} should name {bad}");
        }
    }

    #[test]
    fn new_validates() {
        assert!(Identity::new("cluster.local", "ns", "sa").is_ok());
        assert!(Identity::new("cluster.local", "n s", "sa").is_err());
    }
}
