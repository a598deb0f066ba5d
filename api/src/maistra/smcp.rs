//! `maistra.io/v2` ServiceMeshControlPlane: the subset we map onto the mesh config.
