//! `maistra.io/v1` ServiceMeshMemberRoll and ServiceMeshMember: which namespaces
//! belong to a control plane.
