//! The store indexed for translation ([`Ctx`]) and the Gateway API objects
//! in it, valid ([`gateway_api`]) and not ([`invalid`]). Its own file so the
//! translation steps can use it without depending on `gatewayapi/mod.rs`,
//! which runs them.

use crate::compile::settings::Settings;
use crate::objects::KubeObject;
use crate::store::Store;
use crate::validate::has_errors;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use mesh_api::gatewayapi::{self as gw, GatewayApiResource, ReferenceGrant};
use mesh_api::resource::ResourceKey;
use std::collections::BTreeMap;

/// Is a GatewayClass name ours (`istio`, our alias, or a class whose
/// controllerName is Istio's)?
pub(crate) fn class_is_ours(ctx: &Ctx<'_>, class: &str) -> bool {
    class == gw::CLASS_ISTIO
        || class == gw::CLASS_MESH
        || ctx
            .classes
            .get(class)
            .is_some_and(|c| c.spec.controller_name == gw::CONTROLLER_NAME)
}

/// The store, indexed for translation.
pub(crate) struct Ctx<'a> {
    pub store: &'a Store,
    pub settings: &'a Settings,
    pub classes: BTreeMap<&'a str, &'a gw::GatewayClass>,
    pub grants: Vec<&'a ReferenceGrant>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(store: &'a Store, settings: &'a Settings) -> Self {
        let mut classes = BTreeMap::new();
        let mut grants = Vec::new();
        for (_, r) in gateway_api(store) {
            match r {
                GatewayApiResource::GatewayClass(c) => {
                    classes.insert(c.metadata.name.as_deref().unwrap_or(""), &**c);
                }
                GatewayApiResource::ReferenceGrant(g) => grants.push(&**g),
                _ => {}
            }
        }
        Ctx {
            store,
            settings,
            classes,
            grants,
        }
    }

    pub fn service(&self, ns: &str, name: &str) -> Option<&'a Service> {
        match self.object("Service", ns, name)? {
            KubeObject::Service(s) => Some(s),
            _ => None,
        }
    }

    pub fn secret(&self, ns: &str, name: &str) -> Option<&'a Secret> {
        match self.object("Secret", ns, name)? {
            KubeObject::Secret(s) => Some(s),
            _ => None,
        }
    }

    pub fn namespace(&self, name: &str) -> Option<&'a Namespace> {
        match self.object("Namespace", "", name)? {
            KubeObject::Namespace(n) => Some(n),
            _ => None,
        }
    }

    fn object(&self, kind: &str, ns: &str, name: &str) -> Option<&'a KubeObject> {
        let key = ResourceKey {
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
        };
        self.store.objects.get(&key).map(|e| &*e.object)
    }

    /// `<name>.<ns>.svc.<domain>`.
    pub fn service_host(&self, ns: &str, name: &str) -> String {
        format!("{name}.{ns}.svc.{}", self.settings.domain_suffix)
    }
}

/// Every Gateway API object of the store that passed validation, with its key;
/// rejected ones are listed by [`invalid`].
pub(crate) fn gateway_api(
    store: &Store,
) -> impl Iterator<Item = (&ResourceKey, &GatewayApiResource)> + '_ {
    store.objects.iter().filter_map(|(k, e)| match &*e.object {
        KubeObject::GatewayApi(r) if !has_errors(&e.findings) => Some((k, r)),
        _ => None,
    })
}

/// Gateway API objects that failed validation, with their error messages.
pub(crate) fn invalid(store: &Store) -> impl Iterator<Item = (&GatewayApiResource, String)> + '_ {
    store.objects.values().filter_map(|e| match &*e.object {
        KubeObject::GatewayApi(r) if has_errors(&e.findings) => {
            let msg = e
                .findings
                .iter()
                .filter(|f| f.severity == crate::validate::Severity::Error)
                .map(|f| match f.value.is_empty() {
                    true => format!("{}: {}", f.path, f.message),
                    false => format!("{}: {} (value {})", f.path, f.message, f.value),
                })
                .collect::<Vec<_>>()
                .join("; ");
            Some((r, msg))
        }
        _ => None,
    })
}
