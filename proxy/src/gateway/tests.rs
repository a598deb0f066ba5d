use super::*;

#[test]
fn host_rank_prefers_exact_then_longest_suffix_then_star() {
    assert_eq!(host_rank("a.example.com", "A.example.com"), Some(usize::MAX));
    assert_eq!(host_rank("*.example.com", "a.example.com"), Some(12));
    assert_eq!(host_rank("*.example.com", "example.com"), None);
    assert_eq!(host_rank("*", ""), Some(0));
    assert_eq!(host_rank("a.example.com", ""), None);
    let servers = [
        vec!["*".to_string()],
        vec!["*.example.com".to_string()],
        vec!["*.b.example.com".to_string()],
        vec!["x.b.example.com".to_string()],
    ];
    let p = |h: &str| {
        pick(servers.iter(), |s| s.as_slice(), h)
            .map(|s| s[0].clone())
            .unwrap()
    };
    assert_eq!(p("x.b.example.com"), "x.b.example.com");
    assert_eq!(p("y.b.example.com"), "*.b.example.com");
    assert_eq!(p("c.example.com"), "*.example.com");
    assert_eq!(p("other.org"), "*");
}
