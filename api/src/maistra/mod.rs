//! OpenShift Service Mesh 2.x (Maistra) objects: `maistra.io/v2`
//! ServiceMeshControlPlane ([`smcp`]) and `maistra.io/v1` ServiceMeshMemberRoll /
//! ServiceMeshMember ([`member`]). Users coming from OSSM apply these instead of
//! labelling namespaces and editing the mesh ConfigMap; the agent maps them onto
//! our own mesh config and membership.

pub mod member;
pub mod membership;
pub mod smcp;
pub mod smcp_check;
pub mod smcp_map;
