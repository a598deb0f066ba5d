//! The agent's view of the world: every object the sources delivered, grouped by
//! origin (a file, or one Kubernetes object) so a source can replace or drop an
//! origin atomically. Istio resources are validated once, when they arrive.

use crate::objects::KubeObject;
use crate::validate::{self, Finding};
use mesh_api::resource::ResourceKey;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What a source reports. Both sources produce exactly these.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// Everything `origin` holds now (replaces what it held before). `errors` are
    /// problems with the origin itself (e.g. a malformed document), shown as rejections.
    Replace {
        origin: String,
        objects: Vec<KubeObject>,
        errors: Vec<String>,
    },
    /// A syntax error: the origin could not be read at all; keep what it held
    /// before (last good content) and report why.
    Unreadable { origin: String, error: String },
    /// `origin` is gone.
    Remove { origin: String },
    /// The source has delivered everything it held when it started (a
    /// folder's first scan, the first list of every kind it watches). The
    /// first snapshot waits for it: an agent that starts (or restarts) never
    /// gives proxies a view of half the registry.
    Synced,
}

/// One stored object and, for Istio and Gateway API resources, its validation findings.
#[derive(Debug, Clone)]
pub struct Entry {
    pub object: Arc<KubeObject>,
    pub findings: Arc<Vec<Finding>>,
    pub origin: String,
}

/// All objects, keyed by `Kind/namespace/name`.
#[derive(Debug, Default, Clone)]
pub struct Store {
    pub objects: BTreeMap<ResourceKey, Entry>,
    origins: HashMap<String, Vec<ResourceKey>>,
    /// Problems with whole origins, keyed by origin.
    pub origin_errors: BTreeMap<String, Vec<String>>,
    /// What changed since the last [`Store::take_changes`].
    changes: Changes,
}

/// The objects that changed, each with what it was before the first of
/// those changes (`None`: it is new), and whether anything else did (an
/// origin's errors).
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub objects: BTreeMap<ResourceKey, Option<Arc<KubeObject>>>,
    pub other: bool,
}

impl Changes {
    /// Only EndpointSlices changed.
    pub fn endpoint_slices_only(&self) -> bool {
        !self.other
            && !self.objects.is_empty()
            && self.objects.keys().all(|k| k.kind == "EndpointSlice")
    }

    fn note(&mut self, key: &ResourceKey, before: Option<&Arc<KubeObject>>) {
        if !self.objects.contains_key(key) {
            self.objects.insert(key.clone(), before.cloned());
        }
    }
}

impl Store {
    /// What changed since the last call (and forgets it).
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// The objects of `kind` in `namespace`.
    pub fn of_kind_in<'a>(
        &'a self,
        kind: &'a str,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let start = ResourceKey {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind && k.namespace == namespace)
            .map(|(_, e)| e)
    }

    /// Applies an event; returns whether anything changed.
    pub fn apply(&mut self, ev: SourceEvent) -> bool {
        match ev {
            // The pipeline's business (when to publish), not the store's.
            SourceEvent::Synced => false,
            SourceEvent::Remove { origin } => {
                let had_err = self.origin_errors.remove(&origin).is_some();
                self.changes.other |= had_err;
                self.drop_origin(&origin) || had_err
            }
            SourceEvent::Unreadable { origin, error } => {
                let errs = vec![error];
                let changed = self.origin_errors.get(&origin) != Some(&errs);
                self.changes.other |= changed;
                self.origin_errors.insert(origin, errs);
                changed
            }
            SourceEvent::Replace {
                origin,
                objects,
                errors,
            } => {
                let mut changed = if errors.is_empty() {
                    self.origin_errors.remove(&origin).is_some()
                } else {
                    let c = self.origin_errors.get(&origin) != Some(&errors);
                    self.origin_errors.insert(origin.clone(), errors);
                    c
                };
                self.changes.other |= changed;
                let new_keys: Vec<ResourceKey> = objects.iter().map(KubeObject::key).collect();
                let old_keys = self.origins.remove(&origin).unwrap_or_default();
                for k in &old_keys {
                    if !new_keys.contains(k)
                        && self.objects.get(k).is_some_and(|e| e.origin == origin)
                    {
                        let old = self.objects.remove(k);
                        self.changes.note(k, old.as_ref().map(|e| &e.object));
                        changed = true;
                    }
                }
                for (obj, key) in objects.into_iter().zip(new_keys.iter()) {
                    if self
                        .objects
                        .get(key)
                        .is_some_and(|e| *e.object == obj && e.origin == origin)
                    {
                        continue;
                    }
                    self.changes
                        .note(key, self.objects.get(key).map(|e| &e.object));
                    let findings = match &obj {
                        KubeObject::Istio(r) => validate::validate(r),
                        KubeObject::GatewayApi(r) => validate::validate_gateway_api(r),
                        _ => Vec::new(),
                    };
                    self.objects.insert(
                        key.clone(),
                        Entry {
                            object: Arc::new(obj),
                            findings: Arc::new(findings),
                            origin: origin.clone(),
                        },
                    );
                    changed = true;
                }
                self.origins.insert(origin, new_keys);
                changed
            }
        }
    }

    fn drop_origin(&mut self, origin: &str) -> bool {
        let mut changed = false;
        for k in self.origins.remove(origin).unwrap_or_default() {
            if self.objects.get(&k).is_some_and(|e| e.origin == origin) {
                let old = self.objects.remove(&k);
                self.changes.note(&k, old.as_ref().map(|e| &e.object));
                changed = true;
            }
        }
        changed
    }

    /// Objects of one kind.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        let start = ResourceKey {
            kind: kind.to_string(),
            namespace: String::new(),
            name: String::new(),
        };
        self.objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, e)| e)
    }

    /// The objects (and origin errors) of the namespaces `keep` accepts; an
    /// origin error of a Kubernetes object (`Kind/namespace/name`) goes with
    /// its namespace. Entries are shared, not copied.
    pub fn restricted(&self, keep: impl Fn(&str) -> bool) -> Store {
        let objects: BTreeMap<ResourceKey, Entry> = self
            .objects
            .iter()
            .filter(|(k, _)| keep(&k.namespace))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        let mut origins: HashMap<String, Vec<ResourceKey>> = HashMap::new();
        for (k, e) in &objects {
            origins.entry(e.origin.clone()).or_default().push(k.clone());
        }
        let origin_errors = self
            .origin_errors
            .iter()
            .filter(|(o, _)| match o.split('/').collect::<Vec<_>>().as_slice() {
                [_, ns, _] => keep(ns),
                _ => true,
            })
            .map(|(o, e)| (o.clone(), e.clone()))
            .collect();
        Store {
            objects,
            origins,
            origin_errors,
            changes: Changes::default(),
        }
    }
}
