//! The upstream client pools of one proxy: one for each direction. Outbound
//! requests go to the chosen endpoint's address; inbound ones to the local
//! app ([`crate::endpoint`] dials both).

use std::net::IpAddr;
use std::sync::Arc;

use crate::mtls::certs::TlsState;
use crate::pool::{Dial, Pool};

pub struct Clients {
    pub outbound: Pool,
    pub inbound: Pool,
}

impl Clients {
    pub fn new(instance_ip: Option<IpAddr>, tls: Arc<TlsState>) -> Clients {
        Clients {
            outbound: Pool::new(Dial::Direct, tls.clone()),
            inbound: Pool::new(Dial::LocalApp { instance_ip }, tls),
        }
    }
}
