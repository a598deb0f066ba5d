//! Reconcilers for OpenShift Service Mesh objects (Kubernetes source only): the
//! control plane ([`controlplane`]: SMCP → mesh config, gateways, status) and
//! membership ([`members`]: SMMR/SMM → namespace labels, NetworkPolicies, status,
//! the namespaces the agent serves).

pub mod controlplane;
pub mod members;
