//! Keep-alives toward registered devices behind NAT: an OPTIONS from our
//! SIP socket to the address a device registered from (over TCP, on the
//! connection it registered on) keeps its NAT's mapping, or its
//! connection, open, so our INVITE still reaches it minutes later (as
//! Kamailio's nathelper pings do). The answer, or its absence, says
//! whether the device is still there.

use std::net::SocketAddr;
use std::time::Duration;

use rsipstack::sip::{Method, Param, SipMessage};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::make_tag;
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::SipAddr;

use super::{SipEdge, Transport};

/// How long a device has to answer a keep-alive.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

impl SipEdge {
    /// Sends OPTIONS for `uri` to `address` over `transport` (over TCP, on
    /// the connection the device registered on); true when the device
    /// answered (anything final) within 5 s.
    pub async fn keep_alive(&self, uri: &str, address: SocketAddr, transport: Transport) -> bool {
        let Ok(target) = rsipstack::sip::Uri::try_from(uri) else {
            return false;
        };
        let endpoint = self.dialogs.endpoint.clone();
        let destination = SipAddr {
            r#type: Some(transport.on_stack()),
            addr: address.into(),
        };
        let Ok(via) = endpoint.get_via(Some(destination.clone()), None) else {
            return false;
        };
        let from = rsipstack::sip::typed::From {
            display_name: None,
            uri: self.contacts.for_transport(transport).clone(),
            params: vec![Param::Tag(make_tag())],
        };
        let to = rsipstack::sip::typed::To {
            display_name: None,
            uri: target.clone(),
            params: vec![],
        };
        let request = endpoint.make_request(Method::Options, target, via, from, to, 1, None);
        let Ok(key) = TransactionKey::from_request(&request, TransactionRole::Client) else {
            return false;
        };
        let mut tx = Transaction::new_client(key, request, endpoint, None);
        tx.destination = Some(destination);
        if tx.send().await.is_err() {
            return false;
        }
        tokio::time::timeout(ANSWER_WAIT, async {
            while let Some(message) = tx.receive().await {
                if let SipMessage::Response(response) = message
                    && response.status_code.code() >= 200
                {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false)
    }
}
