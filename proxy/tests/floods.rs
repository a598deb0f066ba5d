//! Connection-level abuse against a real sidecar: HTTP/2 floods written frame by
//! frame (Python `h2`'s hpack, tests/h2attack.py) must end in GOAWAY/close of the
//! attacking connection, the attacker's address be refused for a while after
//! (the penalty box), and other clients (h2load from another pod) see no
//! failure and a p99 within 2x their baseline; connections that never send a byte are
//! closed; the per-listener connection cap refuses connection N+1.

mod common;

use common::*;

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Load {
    succeeded: u64,
    failed: u64,
    p99_ms: f64,
}

/// h2load over 2 connections for `secs` against the HTTP/2 service; every
/// request's latency from its log (`--log-file`: start, status, elapsed µs).
fn h2load(pod: &Pod, secs: u32) -> Load {
    let url = format!("http://{H2_VIP}:8080/");
    // The log goes to a temporary file of the app user's, then to stdout.
    let cmd = format!(
        "f=$(mktemp) && timeout 60 h2load -c 2 -m 1 -D {secs} --log-file \"$f\" {url}; cat \"$f\"; rm -f \"$f\""
    );
    let out = pod.exec(APP, &["bash", "-c", &cmd]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lat: Vec<f64> = Vec::new();
    let mut non2xx = 0;
    for l in text.lines() {
        let cols: Vec<&str> = l.split('\t').collect();
        if let [_, status, us] = cols[..] {
            if let (Ok(status), Ok(us)) = (status.parse::<i64>(), us.parse::<f64>()) {
                lat.push(us / 1000.0);
                if !(200..300).contains(&status) {
                    non2xx += 1;
                }
            }
        }
    }
    let summary = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| {
            panic!(
                "h2load summary missing: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let field = |name: &str| -> u64 {
        summary
            .split(',')
            .find(|f| f.trim().ends_with(name))
            .and_then(|f| f.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or_else(|| panic!("{name} in {summary}"))
    };
    let (succeeded, failed, errored) = (field("succeeded"), field("failed"), field("errored"));
    assert!(!lat.is_empty(), "no request latencies in: {text}");
    lat.sort_by(f64::total_cmp);
    Load {
        succeeded,
        failed: failed + errored + non2xx,
        p99_ms: percentile(&lat, 99.0),
    }
}

#[derive(serde::Deserialize, Debug)]
struct Attack {
    mode: String,
    connections: u64,
    closed: u64,
    max_closed_secs: Option<f64>,
    goaways: u64,
    streams: u64,
    /// Connections reset at accept (the address was penalized).
    refused: u64,
}

/// The absolute floor of the p99 bound, in ms: on this shared 2-core machine
/// (other builds run beside the test) a debug-build baseline p99 of 2–5 ms
/// varies by a few ms between two runs a few seconds apart with no attack.
const FLOOR_MS: f64 = 5.0;

/// The floods measure latency and memory: one test at a time, so none of them
/// is measured during another's flood.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn h2_floods_end_in_goaway_and_spare_other_clients() {
    let _one_at_a_time = serial();
    // A short idle timeout: floods of control frames (no requests) and a stalled
    // zero-window stream are ended by it; the grace after GOAWAY is 2 s.
    let w = world_with(
        1,
        "ALLOW_ANY",
        &[
            "--http-idle-timeout",
            "2s",
            "--termination-drain-duration",
            "2s",
        ],
    );
    let attack = stage_script(&w.dir, "h2attack.py");
    let py = python();
    // Each attacker is another pod (no sidecar) calling the server pod directly:
    // the server sidecar's inbound listener is attacked, while the other
    // clients (h2load in the client pod) reach the same server sidecar from
    // another address. (The attacker's own address is what the sidecar
    // penalizes after a flood; a client sharing it, e.g. behind a NAT, would
    // share the penalty: that is why the penalty is bounded.)
    let target = w.servers[0].ip().to_string();
    h2load(&w.client, 1); // warm-up: pools, first connections
                          // (mode, per-connection deadline, attack for at least): every attacking
                          // connection must be closed well within its deadline, and the other
                          // clients' p99 stay within 2x their baseline (the goal).
    let modes = [
        ("paced", 10, 3),
        ("burst", 10, 3),
        ("continuation", 10, 3),
        ("settings", 10, 3),
        ("ping", 10, 3),
        ("zerowindow", 15, 0),
    ];
    let mut report = Vec::new();
    let mut slow = Vec::new();
    let mut pods = 0;
    // Each mode gets a second attempt only if its first one was too slow: a
    // spike of the shared machine rarely hits twice, an attack that costs the
    // other clients does every time (the SETTINGS flood was x6 in every run
    // before the penalty box and the smaller read slices).
    let attempts = modes.into_iter().flat_map(|m| [(m, 1), (m, 2)]);
    let mut passed: Vec<&str> = Vec::new();
    for ((mode, deadline, repeat), attempt) in attempts {
        if passed.contains(&mode) {
            continue;
        }
        // A fresh attacker (a new address) each time: the previous one's
        // penalty must not hide this one's flood.
        pods += 1;
        let attacker = w
            .node
            .add_pod(&format!("attacker-{pods}"), "default")
            .unwrap();
        // A baseline right before each attack: the machine's background load
        // drifts (other test binaries share its two cores).
        let base = h2load(&w.client, 3);
        assert!(base.succeeded > 0 && base.failed == 0, "baseline failed");
        eprintln!(
            "{mode} baseline: {} requests, p99 {:.2} ms",
            base.succeeded, base.p99_ms
        );
        let before = metrics(&w.servers[0]);
        let cpu0 = cpu_ms(&w.client_proxy);
        let scpu0 = cpu_ms(&w.server_procs[0].1);
        let (dl, rp) = (deadline.to_string(), repeat.to_string());
        let mut p = attacker
            // The script nices itself: it stands for another machine, not
            // for a process taking the sidecar's CPU on this one.
            .spawn(APP, &[&py, &attack, mode, &target, "8080", &dl, &rp])
            .unwrap();
        let load = h2load(&w.client, 3);
        // And one right after: the baseline is the worse of the two, so a
        // machine that got busier during the attack is not blamed on it.
        let _ = p.wait_for_line("\"mode\"", Duration::from_secs(deadline + repeat + 30));
        let after = h2load(&w.client, 3);
        let base = if after.p99_ms > base.p99_ms {
            after
        } else {
            base
        };
        let line = p
            .wait_for_line("\"mode\"", Duration::from_secs(deadline + repeat + 30))
            .unwrap_or_else(|e| panic!("{mode}: {e}: {:?}", p.output_lines()));
        let a: Attack = serde_json::from_str(&line).unwrap();
        assert_eq!(a.mode, mode);
        if matches!(mode, "paced" | "burst") {
            assert!(a.streams > 100, "{mode}: the flood was sent: {line}");
        }
        let cpu = cpu_ms(&w.client_proxy) - cpu0;
        let scpu = cpu_ms(&w.server_procs[0].1) - scpu0;
        eprintln!(
            "{}; CPU during attack + load: client sidecar {cpu} ms, server sidecar {scpu} ms",
            line.trim()
        );
        assert_eq!(
            a.closed, a.connections,
            "{mode}: an attacking connection outlived its {deadline}s deadline: {a:?}"
        );
        // Rapid reset is answered by GOAWAY and a close the server counts.
        // The client sees the GOAWAY unless the server dropped the socket with
        // the flood still unread (TCP then discards the client's receive
        // buffer on RST): with the penalty box only one or two connections get
        // through, so in a burst both may lose it. The server's count of
        // flood closes is the signal that does not depend on that race.
        if matches!(mode, "paced" | "burst") {
            let after = metrics(&w.servers[0]);
            let flood_closes = |m: &str| {
                ["h2_premature_reset", "h2_protocol_error"]
                    .iter()
                    .map(|r| {
                        metric_sum(
                            m,
                            "mesh_downstream_cx_closed_total",
                            &[&format!("reason=\"{r}\"")],
                        )
                    })
                    .sum::<f64>()
            };
            assert!(
                a.goaways >= 1 || flood_closes(&after) - flood_closes(&before) >= 1.0,
                "{mode}: no GOAWAY seen and no flood close counted: {a:?} {after}"
            );
        }
        assert_eq!(
            load.failed, 0,
            "{mode}: other clients saw failures during the attack"
        );
        let ratio = load.p99_ms / base.p99_ms;
        eprintln!(
            "{mode}: other clients {} ok, p99 {:.2} ms vs baseline {:.2} ms (x{ratio:.2})",
            load.succeeded, load.p99_ms, base.p99_ms
        );
        report.push((mode, attempt, ratio, a.max_closed_secs));
        // 2x the baseline, with a small absolute floor: FLOOR_MS below.
        if load.p99_ms <= (2.0 * base.p99_ms).max(base.p99_ms + FLOOR_MS) {
            passed.push(mode);
        } else if attempt == 2 {
            slow.push(format!(
                "{mode}: p99 {:.2} ms vs baseline {:.2} ms",
                load.p99_ms, base.p99_ms
            ));
        } else {
            eprintln!("{mode}: over 2x, measuring once more");
        }
        if mode != "zerowindow" {
            // Closed by our budgets or by h2's GOAWAY for a protocol
            // violation, the attacker's address is penalized: its
            // reconnections are refused (reset at accept) and counted. (A
            // zero-window stream is ended by the idle timeout: no penalty.)
            assert!(a.refused >= 1, "{mode}: reconnections not refused: {a:?}");
            let after = metrics(&w.servers[0]);
            let penalized = |m: &str| metric_sum(m, "mesh_downstream_cx_penalized_total", &[]);
            assert!(
                penalized(&after) - penalized(&before) >= a.refused as f64,
                "{mode}: refusals not counted: {a:?} {after}"
            );
        }
        if mode == "paced" {
            // The paced flood stays under h2's burst limit: our budget closes
            // it (GOAWAY code 0). On a loaded machine the sidecar may lag
            // enough for h2's own burst limit to fire first (code 11, counted
            // as h2_protocol_error); with the penalty box only one or two
            // connections get through in 3 s, so either close counts here
            // (the budget itself: downstream::tests::premature_resets_spend_the_budget).
            let after = metrics(&w.servers[0]);
            let closed = |m: &str| {
                metric_sum(
                    m,
                    "mesh_downstream_cx_closed_total",
                    &["reason=\"h2_premature_reset\""],
                ) + metric_sum(
                    m,
                    "mesh_downstream_cx_closed_total",
                    &["reason=\"h2_protocol_error\""],
                )
            };
            assert!(
                closed(&after) - closed(&before) >= 1.0,
                "paced flood not counted as premature-reset or h2 GOAWAY closes: {after}"
            );
        }
    }
    eprintln!("summary (mode, attempt, p99 ratio, slowest close s): {report:?}");
    // Checked after every mode ran, so one run reports every ratio.
    assert!(
        slow.is_empty(),
        "other clients slowed past 2x their baseline: {slow:?}"
    );
}

/// CPU time (user + system) a process has used, in ms (USER_HZ = 100).
fn cpu_ms(p: &PodProcess) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.pid())).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after_comm
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 of stat (utime, stime), counted from `state` (field 3).
    (f[11] + f[12]) * 10
}

fn proxy_mem(p: &PodProcess) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap();
    let kb = |k: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

#[derive(serde::Deserialize, Debug)]
struct Idle {
    opened: u64,
    closed: u64,
    min_closed_secs: Option<f64>,
    extra_closed_secs: Option<f64>,
}

fn idle_conns(w: &World, n: usize, deadline: u64, extra_after: Option<f64>) -> Idle {
    let py = python();
    let s = stage_script(&w.dir, "idleconns.py");
    let (n, dl) = (n.to_string(), deadline.to_string());
    let extra = extra_after.map(|e| e.to_string());
    let mut argv = vec![py.as_str(), &s, VIP, "8080", &n, &dl];
    if let Some(e) = &extra {
        argv.push(e);
    }
    let out = w.client.exec(APP, &argv).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{text} {}", String::from_utf8_lossy(&out.stderr)));
    serde_json::from_str(line).unwrap()
}

#[test]
fn silent_connections_are_closed_and_the_cap_refuses_one_more() {
    let _one_at_a_time = serial();
    let w = world_with(
        1,
        "ALLOW_ANY",
        &[
            "--http-first-byte-timeout",
            "2s",
            "--max-connections-per-listener",
            "20",
            "--tcp-idle-timeout",
            "2s",
        ],
    );
    // 20 silent connections fill the outbound listener; the 21st is refused.
    let r = idle_conns(&w, 20, 20, Some(0.3));
    eprintln!("{r:?}");
    assert_eq!((r.opened, r.closed), (21, 21), "{r:?}");
    let m = metrics(&w.client);
    let overflow = metric_sum(
        &m,
        "mesh_downstream_cx_overflow_total",
        &["listener=\"outbound\""],
    );
    let first_byte = metric_sum(
        &m,
        "mesh_downstream_cx_closed_total",
        &["reason=\"first_byte_timeout\""],
    );
    assert_eq!(overflow, 1.0, "connection 21 counted as refused");
    assert_eq!(first_byte, 20.0, "the 20 silent ones closed by the timeout");
    // Refused at once, not at the first-byte deadline.
    assert!(
        r.extra_closed_secs.unwrap() < r.min_closed_secs.unwrap(),
        "{r:?}"
    );
    // With slots free again, the listener serves.
    let ok = curl_echo(&w.client, &[&format!("http://{VIP}:8080/after")]);
    assert_eq!(ok.path, "/after");
    // Opaque TCP: a connection that goes quiet after an exchange is closed.
    let script = format!(
        "exec 3<>/dev/tcp/{TCP_VIP}/9000; echo hi >&3; read -r l <&3; s=$(date +%s%N); cat <&3 >/dev/null; e=$(date +%s%N); echo \"$l|$(( (e - s) / 1000000 ))\""
    );
    let out = w
        .client
        .exec(APP, &["timeout", "20", "bash", "-c", &script])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "TCP idle close: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("tcp echo|ms until idle close: {}", text.trim());
    // Both sidecars carry it with the same timeout: whichever fired first
    // closed it (the other then saw the close, not the idleness).
    let idle_closes = closes_on_both_sidecars(&w, "tcp_idle_timeout");
    assert!(idle_closes >= 1.0, "no TCP idle close counted");
}

/// Downstream connections the client's and the first server's sidecar closed
/// for `reason`.
fn closes_on_both_sidecars(w: &World, reason: &str) -> f64 {
    [&w.client, &w.servers[0]]
        .iter()
        .map(|pod| {
            metric_sum(
                &metrics(pod),
                "mesh_downstream_cx_closed_total",
                &[&format!("reason=\"{reason}\"")],
            )
        })
        .sum()
}

/// Sends 1 MiB from the client app on a connection set up by `open`
/// (bash, fd 3) while reading the echo; returns how many bytes came back.
fn echo_through(w: &World, open: &str) -> usize {
    const BYTES: usize = 1 << 20;
    let script = format!(
        "{open} (head -c {BYTES} /dev/zero | tr '\\0' y >&3) & timeout 15 head -c {BYTES} <&3 | wc -c"
    );
    let out = w
        .client
        .exec(APP, &["timeout", "30", "bash", "-c", &script])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().unwrap_or_else(|_| {
        panic!("{text} {}", String::from_utf8_lossy(&out.stderr));
    })
}

#[test]
fn long_streams_are_not_floods() {
    // A megabyte each way through both sidecars, four times the byte budget
    // of a connection with no request in flight: an opaque TCP connection
    // never has one, and neither has a WebSocket after its upgrade. Both once
    // stopped being read after 256 KiB from the client.
    let w = world(1, "ALLOW_ANY");
    let tcp = echo_through(&w, &format!("exec 3<>/dev/tcp/{TCP_VIP}/9000;"));
    assert_eq!(tcp, 1 << 20, "opaque TCP echoed");
    let ws = echo_through(
        &w,
        &format!(
            "exec 3<>/dev/tcp/{VIP}/8080; printf '{WS_UPGRADE}' >&3; \\
             read -r status <&3; [[ $status == 'HTTP/1.1 101'* ]] || exit 1; \\
             while read -r line <&3; do [ \"$line\" = $'\\r' ] && break; done;"
        ),
    );
    assert_eq!(ws, 1 << 20, "WebSocket tunnel echoed");
    let floods = closes_on_both_sidecars(&w, "control_flood");
    assert_eq!(floods, 0.0, "no connection taken for a control flood");
}

#[test]
fn idle_connection_flood_is_released() {
    let _one_at_a_time = serial();
    let w = world_with(1, "ALLOW_ANY", &["--http-first-byte-timeout", "5s"]);
    let (rss0, _) = proxy_mem(&w.client_proxy);
    let n = 5000;
    let mut peaks = Vec::new();
    let mut last_rss = 0;
    // Twice: what a first flood leaves behind must not pile up in a second.
    for round in 1..=2 {
        let r = idle_conns(&w, n, 60, None);
        let (rss, hwm) = proxy_mem(&w.client_proxy);
        eprintln!("round {round}: {r:?}");
        eprintln!(
            "{n} idle connections: sidecar RSS {rss0} KiB before, peak {hwm} KiB, {rss} KiB after all closed"
        );
        assert_eq!(r.closed, n as u64, "{r:?}");
        assert!(rss <= hwm, "RSS {rss} KiB above its own peak {hwm} KiB");
        peaks.push(hwm);
        last_rss = rss;
    }
    let m = metrics(&w.client);
    assert_eq!(
        metric_sum(
            &m,
            "mesh_downstream_cx_closed_total",
            &["reason=\"first_byte_timeout\""]
        ),
        2.0 * n as f64
    );
    // An idle connection holds hyper's 8 KiB read buffer, its task and the
    // socket, but no read buffer of ours (h1guard allocates one only when
    // bytes come). Measured on 2 cores: peaks ~12 KiB per connection, the
    // second flood's peak equal to the first's. When h1guard reserved its
    // 16 KiB before the first byte, the first flood peaked at 113 MiB and the
    // second at 148 MiB, from 28 MiB (fragmentation piling up). How much of
    // the freed memory glibc hands back to the kernel varies (its arenas are
    // trimmed only from the top), so RSS after a round is not bounded here;
    // the peaks are: at most 16 KiB per connection, and the second flood
    // needs at most 4 KiB per connection more than the first (the 16 KiB
    // buffer piled up ~7 KiB per connection). 2 KiB was too tight: a CI run
    // of df6f395 peaked at 55 then 73 MiB (3.6 KiB per connection) with the
    // same 54 MiB left after each round, i.e. fragmentation, not retention.
    let n_kib = n as u64;
    assert!(
        peaks.iter().all(|p| *p < rss0 + 16 * n_kib),
        "peaks {peaks:?} KiB above {rss0} KiB + 16 KiB per connection"
    );
    assert!(
        peaks[1] < peaks[0] + 4 * n_kib,
        "second flood peaked at {} KiB, first at {} KiB: more than 4 KiB per connection piled up",
        peaks[1],
        peaks[0]
    );
    eprintln!("{last_rss} KiB after the second flood");
}
