//! ServiceMeshControlPlane reconciler.
