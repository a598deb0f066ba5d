//! Schema checks: every rendered object passes `kubernetes-validate --strict`
//! for the oldest and newest Kubernetes we claim (and that check can fail), the
//! committed CRDs are what gen-crds writes, and the validating webhook covers
//! every version they serve. What the schema cannot see is in the other files.

use super::*;

/// Newest and oldest Kubernetes versions we claim (manifests/README.md). 1.33 is
/// where native sidecars (`nativeSidecars: auto`) are on everywhere.
const K8S_VERSIONS: [&str; 2] = ["1.37.0", "1.33.0"];

/// Writes the objects one per file and runs kubernetes-validate --strict on them.
/// Returns the tool's output lines that are not about cert-manager kinds (whose
/// schemas the tool does not ship).
fn validate(objs: &[Value], version: &str) -> Result<(bool, Vec<String>)> {
    let bin = tool("kubernetes-validate", "kubernetes-validate")?;
    let dir = tempfile::tempdir()?;
    let mut files = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        let p = dir
            .path()
            .join(format!("{i:03}-{}.yaml", o["kind"].as_str().unwrap_or("x")));
        std::fs::write(&p, serde_yaml_ng::to_string(o)?)?;
        files.push(p);
    }
    let out = Command::new(bin)
        .args(["--strict", "--quiet", "-k", version])
        .args(&files)
        .output()
        .context("running kubernetes-validate")?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let other: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !(l.contains("Couldn't find schema") && l.contains("cert-manager.io/v1")))
        .map(String::from)
        .collect();
    Ok((out.status.success(), other))
}

#[test]
fn every_rendered_object_passes_strict_schema_validation_on_oldest_and_newest_kubernetes(
) -> Result<()> {
    let mut all: Vec<Value> = Vec::new();
    for dir in RENDERS {
        for o in render(dir)? {
            if !all.contains(&o) {
                all.push(o);
            }
        }
    }
    let kinds: BTreeSet<&str> = all.iter().filter_map(|o| o["kind"].as_str()).collect();
    for k in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "DaemonSet",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        ensure!(kinds.contains(k), "no {k} rendered: {kinds:?}");
    }
    for v in K8S_VERSIONS {
        let (ok, lines) = validate(&all, v)?;
        ensure!(
            ok && lines.is_empty(),
            "Kubernetes {v}: {}",
            lines.join("\n")
        );
    }
    Ok(())
}

#[test]
fn schema_validation_catches_an_unknown_field() -> Result<()> {
    // The check above must be able to fail: one typo in a rendered Deployment.
    let mut objs = render("manifests")?;
    let d = objs
        .iter_mut()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    d["spec"]["replica"] = 2.into();
    let (ok, lines) = validate(&objs, K8S_VERSIONS[0])?;
    ensure!(!ok, "a Deployment with spec.replica passed: {lines:?}");
    ensure!(lines.iter().any(|l| l.contains("replica")), "{lines:?}");
    Ok(())
}

#[test]
fn crd_kustomization_lists_every_generated_crd_and_they_are_current() -> Result<()> {
    let dir = repo().join("manifests/crds");
    let k: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml"))?)?;
    let listed: BTreeSet<String> = strs(&k["resources"]).into_iter().collect();
    let generated: BTreeSet<String> = mesh_agent::crdgen::render()?
        .into_iter()
        .map(|(name, body)| {
            let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
            assert_eq!(
                on_disk, body,
                "manifests/crds/{name} is stale: run gen-crds"
            );
            name
        })
        .collect();
    ensure!(
        listed == generated,
        "crds/kustomization.yaml lists {listed:?}, gen-crds writes {generated:?}"
    );
    Ok(())
}

#[test]
fn validating_webhook_covers_every_mesh_crd_version() -> Result<()> {
    let objs = render("manifests")?;
    let vwc = find(&objs, "ValidatingWebhookConfiguration", "mesh-validator");
    let hook = &vwc["webhooks"][0];
    ensure!(hook["clientConfig"]["service"]["path"] == "/validate");
    ensure!(hook["clientConfig"]["service"]["name"] == "mesh-webhook");
    let mut covered = BTreeSet::new();
    for r in hook["rules"].as_array().context("rules")? {
        ensure!(strs(&r["operations"]) == ["CREATE", "UPDATE"]);
        for g in strs(&r["apiGroups"]) {
            for v in strs(&r["apiVersions"]) {
                for res in strs(&r["resources"]) {
                    covered.insert(format!("{res}.{g}/{v}"));
                }
            }
        }
    }
    let mut want = BTreeSet::new();
    // OSSM's objects are not validated at admission: the agent reports their
    // problems in their status, as OSSM's operator does.
    for crd in
        of_kind(&objs, "CustomResourceDefinition").filter(|c| c["spec"]["group"] != "maistra.io")
    {
        let s = &crd["spec"];
        for v in s["versions"].as_array().context("versions")? {
            want.insert(format!(
                "{}.{}/{}",
                s["names"]["plural"].as_str().unwrap_or(""),
                s["group"].as_str().unwrap_or(""),
                v["name"].as_str().unwrap_or("")
            ));
        }
    }
    ensure!(
        want.len() >= 7 && covered == want,
        "webhook covers {covered:?}, CRDs serve {want:?}"
    );
    Ok(())
}
