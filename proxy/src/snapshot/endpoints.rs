//! A cluster's endpoints, held in one allocation per cluster, and
//! [`EndpointRef`], the handle a request keeps on the one it picked.
//!
//! A sidecar compiles every service port of its view into a cluster, and each
//! of those has the service's endpoints: two thousand of them for a namespace
//! of a hundred services with two ports. Each its own `Arc` was an allocation
//! (96 bytes with glibc's overhead, plus the list of pointers); one shared
//! slice per cluster holds the same endpoints in 72 bytes each. A request
//! still needs a counted handle that outlives a config push: [`EndpointRef`]
//! is the slice's `Arc` and an index, cloned with the same one atomic
//! increment an `Arc<Endpoint>` took.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// One backend (its run-time state is in the `state` module, keyed by cluster
/// name and `addr`).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Shared by the endpoint's clusters (one per service port, and subsets):
    /// a pod's labels are a dozen strings, held once.
    pub labels: Arc<BTreeMap<String, String>>,
    pub service_account: Option<Arc<str>>,
    /// Whether connections to this endpoint are mTLS (DestinationRule or auto).
    pub tls: crate::mtls::UpstreamTls,
}

/// A handle on one endpoint of a cluster's list (see the module docs).
#[derive(Debug, Clone)]
pub struct EndpointRef {
    all: Arc<[Endpoint]>,
    index: usize,
}

impl EndpointRef {
    /// The `index`th of `all`; `None` past the end.
    pub fn new(all: &Arc<[Endpoint]>, index: usize) -> Option<EndpointRef> {
        (index < all.len()).then(|| EndpointRef {
            all: all.clone(),
            index,
        })
    }

    /// A handle on each of `all`, in order.
    pub fn each(all: &Arc<[Endpoint]>) -> impl Iterator<Item = EndpointRef> + '_ {
        (0..all.len()).map(|index| EndpointRef {
            all: all.clone(),
            index,
        })
    }

    /// An endpoint of its own (a connection passed through to its original
    /// destination has no cluster to share a list with).
    pub fn single(ep: Endpoint) -> EndpointRef {
        EndpointRef {
            all: Arc::from([ep]),
            index: 0,
        }
    }
}

impl std::ops::Deref for EndpointRef {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        &self.all[self.index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(addr: &str) -> Endpoint {
        Endpoint {
            addr: addr.parse().unwrap(),
            labels: Default::default(),
            service_account: None,
            tls: crate::mtls::UpstreamTls::Plaintext,
        }
    }

    #[test]
    fn a_ref_is_its_endpoint_and_keeps_the_list_alive() {
        let all: Arc<[Endpoint]> = Arc::from([ep("10.0.0.1:80"), ep("10.0.0.2:80")]);
        let r = EndpointRef::new(&all, 1).unwrap();
        assert_eq!(r.addr, "10.0.0.2:80".parse().unwrap());
        assert!(EndpointRef::new(&all, 2).is_none());
        let each: Vec<_> = EndpointRef::each(&all).map(|e| e.addr.ip()).collect();
        assert_eq!(
            each,
            [
                "10.0.0.1".parse::<std::net::IpAddr>().unwrap(),
                "10.0.0.2".parse().unwrap()
            ]
        );
        let weak = Arc::downgrade(&all);
        drop(all);
        assert_eq!(r.clone().addr.port(), 80, "the list outlives the snapshot");
        drop(r);
        assert!(weak.upgrade().is_none(), "and goes with the last handle");
        assert_eq!(EndpointRef::single(ep("10.0.0.3:81")).addr.port(), 81);
    }
}
