//! Where a registered device behind a NAT is really reached. Its Contact
//! (and so the remote target of our dialog with it) names its private
//! address; its REGISTER came from its NAT's public side, and that is
//! where the INVITE goes. The ACK of its 200, a BYE, a re-INVITE are sent
//! by the stack to the dialog's remote target: this map, installed as the
//! stack's target locator, sends them where the INVITE went (what
//! Kamailio's `fix_nated_contact` achieves by rewriting the Contact).
//! Any other target resolves as it always would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsipstack::transaction::endpoint::TargetLocator;
use rsipstack::transport::SipAddr;

use super::Transport;

/// How long a device's address is remembered after its last call was
/// placed: longer than any call lasts.
const REMEMBERED: Duration = Duration::from_secs(26 * 60 * 60);

/// `user@host:port` of a URI: what a device's Contact and the Contact of
/// its 200 share even when their parameters differ.
fn key_of(uri: &rsipstack::sip::Uri) -> String {
    let user = uri.user().unwrap_or_default();
    format!("{user}@{}", uri.host_with_port)
}

/// Where one device is reached, and when its last call was placed.
type Reached = (SocketAddr, Transport, Instant);

/// Devices' Contacts → where they are reached.
#[derive(Debug, Clone, Default)]
pub(crate) struct NatTargets {
    targets: Arc<Mutex<HashMap<String, Reached>>>,
}

impl NatTargets {
    /// Remembers that `contact` is reached at `address` over `transport`.
    pub(crate) fn remember(&self, contact: &str, address: SocketAddr, transport: Transport) {
        let Ok(uri) = rsipstack::sip::Uri::try_from(contact) else {
            return;
        };
        let Ok(mut targets) = self.targets.lock() else {
            return;
        };
        let now = Instant::now();
        targets.retain(|_, (_, _, at)| now.duration_since(*at) < REMEMBERED);
        targets.insert(key_of(&uri), (address, transport, now));
    }

    fn lookup(&self, uri: &rsipstack::sip::Uri) -> Option<(SocketAddr, Transport)> {
        let targets = self.targets.lock().ok()?;
        targets
            .get(&key_of(uri))
            .map(|(address, transport, _)| (*address, *transport))
    }
}

#[async_trait::async_trait]
impl TargetLocator for NatTargets {
    async fn locate(&self, uri: &rsipstack::sip::Uri) -> rsipstack::Result<SipAddr> {
        match self.lookup(uri) {
            Some((address, transport)) => Ok(SipAddr {
                r#type: Some(transport.on_stack()),
                addr: address.into(),
            }),
            None => SipAddr::try_from(uri),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn uri(text: &str) -> rsipstack::sip::Uri {
        rsipstack::sip::Uri::try_from(text).unwrap()
    }

    #[tokio::test]
    async fn a_device_is_found_by_its_contact_whatever_its_parameters() {
        let targets = NatTargets::default();
        let public: SocketAddr = "203.0.113.5:41234".parse().unwrap();
        targets.remember("sip:akiko@192.168.1.20:5060", public, Transport::Udp);
        let found = targets
            .locate(&uri("sip:akiko@192.168.1.20:5060;transport=udp;ob"))
            .await
            .unwrap();
        assert_eq!(found.addr, public.into());
        // Another user at the same private address is someone else.
        let other = targets
            .locate(&uri("sip:bob@192.168.1.20:5060"))
            .await
            .unwrap();
        assert_eq!(
            other,
            SipAddr::try_from(&uri("sip:bob@192.168.1.20:5060")).unwrap()
        );
        // Anything else resolves as the stack would.
        let trunk = uri("sip:+81312345678@acme.pstn.twilio.com");
        assert_eq!(
            targets.locate(&trunk).await.unwrap(),
            SipAddr::try_from(&trunk).unwrap()
        );
    }
}
