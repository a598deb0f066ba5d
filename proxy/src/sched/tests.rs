//! The governor's decisions over synthetic samples, and the `schedstat` parser.

use super::*;

/// Samples one second apart whose per-slice wait is `wait_us`, with
/// `slices` slices each.
struct Feed {
    at: Instant,
    sum: Sample,
}

impl Feed {
    fn new(at: Instant) -> Feed {
        Feed {
            at,
            sum: Sample {
                wait_ns: 5_000_000,
                slices: 1_000,
            },
        }
    }
    fn next(&mut self, wait_us: u64, slices: u64) -> (Instant, Sample) {
        self.at += Duration::from_secs(1);
        self.sum.wait_ns += wait_us * 1_000 * slices;
        self.sum.slices += slices;
        (self.at, self.sum)
    }
}

fn step(g: &mut Governor, f: &mut Feed, wait_us: u64, slices: u64) -> Option<Switch> {
    let (at, s) = f.next(wait_us, slices);
    g.observe(at, s)
}

#[test]
fn calm_cpus_keep_batch() {
    let start = Instant::now();
    let (mut g, mut f) = (Governor::new(start), Feed::new(start));
    assert_eq!(
        g.observe(start, f.sum),
        None,
        "the first sample is a baseline"
    );
    for _ in 0..30 {
        assert_eq!(step(&mut g, &mut f, 30, 2_000), None);
    }
    assert_eq!(g.class(), Class::Batch);
}

#[test]
fn contention_switches_to_other_and_batch_is_retried_with_backoff() {
    let start = Instant::now();
    let (mut g, mut f) = (Governor::new(start), Feed::new(start));
    g.observe(start, f.sum);
    // Two contended seconds are not enough; the third switches.
    for _ in 1..CONTENDED_PERIODS {
        assert_eq!(step(&mut g, &mut f, 300, 1_000), None);
    }
    let to_other = step(&mut g, &mut f, 300, 1_000).unwrap();
    assert_eq!(to_other.to, Class::Other);
    assert_eq!(to_other.mean_wait, Some(Duration::from_micros(300)));
    // SCHED_OTHER holds for the first backoff (10 s), however calm.
    for _ in 0..9 {
        assert_eq!(step(&mut g, &mut f, 20, 1_000), None);
    }
    let retry = step(&mut g, &mut f, 20, 1_000).unwrap();
    assert_eq!(
        retry,
        Switch {
            to: Class::Batch,
            mean_wait: None
        }
    );
    // Contended again at once: the next try waits twice as long, and so on
    // up to five minutes.
    let mut waits = Vec::new();
    for _ in 0..7 {
        for _ in 1..CONTENDED_PERIODS {
            assert_eq!(step(&mut g, &mut f, 400, 500), None);
        }
        assert_eq!(step(&mut g, &mut f, 400, 500).unwrap().to, Class::Other);
        let mut secs = 0;
        loop {
            secs += 1;
            if let Some(s) = step(&mut g, &mut f, 40, 500) {
                assert_eq!(s.to, Class::Batch);
                break;
            }
        }
        waits.push(secs);
    }
    assert_eq!(waits, [20, 40, 80, 160, 300, 300, 300]);
}

#[test]
fn a_minute_of_calm_batch_resets_the_backoff() {
    let start = Instant::now();
    let (mut g, mut f) = (Governor::new(start), Feed::new(start));
    g.observe(start, f.sum);
    let contended = |g: &mut Governor, f: &mut Feed| {
        for _ in 1..CONTENDED_PERIODS {
            assert_eq!(step(g, f, 500, 300), None);
        }
        step(g, f, 500, 300).unwrap();
    };
    // Two contended spells make the next backoff 40 s...
    for _ in 0..2 {
        contended(&mut g, &mut f);
        while step(&mut g, &mut f, 10, 300).is_none() {}
    }
    // ...but a calm minute in SCHED_BATCH brings it back to 10 s.
    for _ in 0..61 {
        assert_eq!(step(&mut g, &mut f, 10, 300), None);
    }
    contended(&mut g, &mut f);
    let mut secs = 0;
    while step(&mut g, &mut f, 10, 300).is_none() {
        secs += 1;
    }
    assert_eq!(secs + 1, 10);
}

#[test]
fn contended_seconds_must_follow_each_other() {
    let start = Instant::now();
    let (mut g, mut f) = (Governor::new(start), Feed::new(start));
    g.observe(start, f.sum);
    // Spikes broken by a calm second, or by an idle spell (an idle sidecar's
    // few slices wait long behind busy neighbours, and its window expires
    // unjudged), never add up.
    for _ in 0..20 {
        for _ in 1..CONTENDED_PERIODS {
            assert_eq!(step(&mut g, &mut f, 300, 1_000), None);
        }
        assert_eq!(step(&mut g, &mut f, 30, 1_000), None);
        assert_eq!(step(&mut g, &mut f, 300, 1_000), None);
        for _ in 0..MAX_WINDOW.as_secs() {
            assert_eq!(step(&mut g, &mut f, 300, 20), None);
        }
    }
    assert_eq!(g.class(), Class::Batch);
}

#[test]
fn a_contended_sidecar_with_little_traffic_still_switches() {
    // The busier the CPUs, the fewer requests a sequential client gets
    // through: 80 slices a second, each waiting 500 µs. A window gathers
    // MIN_SLICES in three seconds; three such windows switch.
    let start = Instant::now();
    let (mut g, mut f) = (Governor::new(start), Feed::new(start));
    g.observe(start, f.sum);
    let mut secs = 0;
    let switch = loop {
        secs += 1;
        assert!(secs <= 60, "never switched");
        if let Some(s) = step(&mut g, &mut f, 500, 80) {
            break s;
        }
    };
    assert_eq!(secs, 9);
    assert_eq!(switch.to, Class::Other);
    assert_eq!(switch.mean_wait, Some(Duration::from_micros(500)));
}

#[test]
fn too_few_slices_or_a_shrinking_sum_decide_nothing() {
    let start = Instant::now();
    let (mut g, mut f) = (Governor::new(start), Feed::new(start));
    g.observe(start, f.sum);
    // A nearly idle proxy: long waits, but fewer slices in each window than
    // a verdict needs, for a minute.
    let per_second = (MIN_SLICES - 1) / MAX_WINDOW.as_secs();
    for _ in 0..60 {
        assert_eq!(step(&mut g, &mut f, 5_000, per_second), None);
    }
    // A thread ended: the sum went down.
    let (at, mut s) = f.next(0, 0);
    s.slices -= 500;
    s.wait_ns += 1_000_000_000;
    assert_eq!(g.observe(at, s), None);
    assert_eq!(g.class(), Class::Batch);
    // Exactly at the threshold is not contended; just above it is.
    let mut f = Feed::new(at);
    g.observe(at, f.sum);
    for _ in 0..CONTENDED_PERIODS {
        assert_eq!(step(&mut g, &mut f, 100, 1_000), None);
    }
    for _ in 1..CONTENDED_PERIODS {
        assert_eq!(step(&mut g, &mut f, 101, 1_000), None);
    }
    assert_eq!(step(&mut g, &mut f, 101, 1_000).unwrap().to, Class::Other);
}

#[test]
fn schedstat_lines_parse() {
    assert_eq!(
        parse_schedstat("471523000 291900000 10951\n"),
        Some(Sample {
            wait_ns: 291_900_000,
            slices: 10_951
        })
    );
    assert_eq!(parse_schedstat("1 2\n"), None);
    assert_eq!(parse_schedstat("a b c\n"), None);
    assert_eq!(parse_schedstat(""), None);
}

#[test]
fn policies_parse_and_name_the_bad_value() {
    assert_eq!("adaptive".parse(), Ok(CpuPolicy::Adaptive));
    assert_eq!("normal".parse(), Ok(CpuPolicy::Normal));
    assert_eq!("batch".parse(), Ok(CpuPolicy::Batch));
    let e = "fifo".parse::<CpuPolicy>().unwrap_err();
    assert!(e.contains("\"fifo\""), "{e}");
}
