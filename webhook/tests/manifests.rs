//! The mesh configs shipped in `manifests/` load as our MeshConfig (the webhook
//! would refuse to start otherwise) and inject what they say.

use mesh_webhook::config::parse_mesh_config;
use mesh_webhook::inject::mutate;
use mesh_webhook::InjectContext;
use serde_json::json;

const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests");

#[test]
fn shipped_mesh_configs_load_and_inject() {
    for (file, cni) in [
        ("base/mesh.yaml", false),
        ("overlays/cni/mesh.yaml", true),
        ("overlays/maistra/mesh.yaml", false),
    ] {
        let text = std::fs::read_to_string(format!("{MANIFESTS}/{file}")).unwrap();
        let mesh = parse_mesh_config(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(mesh.cni.enabled, cni, "{file}");
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "app"}]}});
        mutate(&mut pod, &mesh, &InjectContext::default()).unwrap();
        let init = if cni {
            "istio-validation"
        } else {
            "istio-init"
        };
        assert_eq!(pod["spec"]["initContainers"][0]["name"], init, "{file}");
        assert_eq!(
            pod["spec"]["initContainers"][1]["name"], "istio-proxy",
            "{file}"
        );
    }
}
