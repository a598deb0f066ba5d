//! The SPIFFE identities (subject alt names) expected of a service's endpoints
//! and of a ServiceEntry.

use super::*;

#[test]
fn expected_identities_of_a_service() {
    let ep = |sa: Option<&str>| Endpoint {
        address: "10.0.0.1".into(),
        service_account: sa.map(Into::into),
        ..Default::default()
    };
    let eps = [
        ep(Some("reviews")),
        ep(None),
        ep(Some("reviews")),
        ep(Some("bookinfo")),
        ep(Some("")),
    ];
    assert_eq!(
        subject_alt_names("example.org", "shop", &eps, &[]),
        vec![
            "spiffe://example.org/ns/shop/sa/bookinfo".to_string(),
            "spiffe://example.org/ns/shop/sa/reviews".to_string(),
        ]
    );
    // A ServiceEntry's declared names join its workloads' accounts.
    assert_eq!(
        subject_alt_names(
            "cluster.local",
            "ext",
            &[ep(Some("db"))],
            &["spiffe://other.td/ns/x/sa/y".into()]
        ),
        vec![
            "spiffe://cluster.local/ns/ext/sa/db".to_string(),
            "spiffe://other.td/ns/x/sa/y".to_string(),
        ]
    );
    assert!(subject_alt_names("cluster.local", "ns", &[ep(None)], &[]).is_empty());
}
