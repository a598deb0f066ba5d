//! Reading query answers: a [`Series`] list and the label checks every phase
//! makes on it. A leaf module, so the Prometheus process and the phases can
//! share it without importing each other.

use std::collections::BTreeMap;

pub type Series = Vec<(BTreeMap<String, String>, f64)>;

/// The series whose labels include every `(name, value)` of `want`.
pub fn find<'a>(r: &'a Series, want: &[(&str, &str)]) -> Vec<&'a (BTreeMap<String, String>, f64)> {
    r.iter()
        .filter(|(l, _)| {
            want.iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

pub fn has(r: &Series, want: &[(&str, &str)], min: f64) -> bool {
    find(r, want).iter().any(|(_, v)| *v >= min)
}

/// Every label Kiali needs is on every series (Prometheus drops a label whose
/// value is empty, so this also catches empty values).
pub fn assert_labels(r: &Series, names: &[&str], what: &str) {
    for (l, _) in r {
        for n in names {
            assert!(
                l.get(*n).is_some_and(|v| !v.is_empty()),
                "{what}: series without {n}: {l:?}"
            );
        }
    }
}

pub fn group(labels: &[&str]) -> String {
    labels.join(", ")
}
