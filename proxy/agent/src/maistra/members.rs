//! ServiceMeshMemberRoll / ServiceMeshMember reconciler.
