//! `meshctl demo`: the foundation demo. Builds a node with the real CNI plugins,
//! starts `mesh-echo` in one pod and calls it from another, over HTTP/1.1 and h2c.

fn main_placeholder() {}
