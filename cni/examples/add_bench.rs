//! Benchmark (run by hand, not part of the test suite): latency of a CNI ADD of an
//! injected pod through the real `mesh-cni` binary, next to a bare `iptables-restore`
//! of the same rules, in the same run, each into a fresh network namespace.
//!
//! `cargo run -p mesh-cni --example add_bench [-- ITERATIONS [nft|legacy]]` (as root).
//! The plugin binary is taken from `$MESH_CNI_BIN`, else next to this example's folder.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn netns(name: &str, add: bool) {
    let op = if add { "add" } else { "del" };
    let ok = Command::new("ip")
        .args(["netns", op, name])
        .status()
        .unwrap()
        .success();
    assert!(ok || !add, "ip netns {op} {name}");
}

fn stats(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
    println!(
        "{name:<34} n={:<4} median={:>7.2}ms p90={:>7.2}ms min={:>7.2}ms mean={:>7.2}ms",
        v.len(),
        ms(v[v.len() / 2]),
        ms(v[v.len() * 9 / 10]),
        ms(v[0]),
        mean
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50);
    let backend = args.get(2).cloned().unwrap_or_else(|| "nft".into());
    let bin = std::env::var_os("MESH_CNI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().parent().unwrap().join("mesh-cni")
        });
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pods")).unwrap();
    std::fs::write(
        dir.path().join("pods/p.yaml"),
        "metadata:\n  name: bench\n  namespace: default\n  annotations:\n    sidecar.istio.io/status: x\nspec:\n  containers: [{name: app}, {name: istio-proxy}]\n",
    )
    .unwrap();
    let params =
        mesh_api::RedirectParams::for_pod(&Default::default(), &Default::default()).unwrap();
    let rules = mesh_cni::rules::build(&params).v4;
    // The same rules as one restore transaction, as the plugin writes them.
    let mut restore_input = String::new();
    for (table, tr) in &rules.tables {
        restore_input.push_str(&format!("*{table}\n"));
        for c in &tr.chains {
            restore_input.push_str(&format!(":{c} - [0:0]\n"));
        }
        for r in tr.all_rules() {
            restore_input.push_str(&r.append_line());
            restore_input.push('\n');
        }
        restore_input.push_str("COMMIT\n");
    }
    let restore_bin = format!("iptables-{backend}-restore");
    let (mut add, mut bare) = (Vec::new(), Vec::new());
    for i in 0..n {
        let ns = format!("mcni-bench-{}-{i}", std::process::id());
        let path = format!("/var/run/netns/{ns}");
        // Bare iptables-restore into a fresh netns, from a thread inside it.
        netns(&ns, true);
        let input = restore_input.clone();
        let rb = restore_bin.clone();
        let d = mesh_cni::netns::run_in(std::path::Path::new(&path), move || {
            let t = Instant::now();
            let mut c = Command::new(&rb)
                .arg("--noflush")
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            assert!(c.wait().unwrap().success());
            t.elapsed()
        })
        .unwrap();
        bare.push(d);
        netns(&ns, false);

        // Plugin ADD of an injected pod into a fresh netns.
        netns(&ns, true);
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "mesh-cni",
            "podDir": dir.path().join("pods"), "stateDir": dir.path().join("state"),
            "iptablesBackend": backend,
            "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/16"}]},
        })
        .to_string();
        let run = |cmd: &str| {
            let t = Instant::now();
            let mut c = Command::new(&bin)
                .env("CNI_COMMAND", cmd)
                .env("CNI_CONTAINERID", &ns)
                .env("CNI_NETNS", &path)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
            assert!(c.wait().unwrap().success(), "{cmd} failed");
            t.elapsed()
        };
        add.push(run("ADD"));
        run("DEL");
        netns(&ns, false);
    }
    println!(
        "backend {backend}, {} rules in the IPv4 nat table",
        restore_input.matches("-A ").count()
    );
    stats("bare iptables-restore", bare.clone());
    stats("mesh-cni ADD (injected pod)", add.clone());
    bare.sort();
    add.sort();
    let overhead = add[n / 2].saturating_sub(bare[n / 2]);
    println!(
        "plugin overhead over a bare restore (median): {:.2}ms",
        overhead.as_secs_f64() * 1000.0
    );
}
