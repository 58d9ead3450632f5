//! Experts' accounts and registered devices in the ledger, on both
//! backends: bindings added, refreshed, removed one by one and all at
//! once, out-of-order refreshes and devices past the most refused without
//! changing anything, lapsed bindings gone, an account's deletion taking
//! its devices, and one nonce secret for every node.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod support;

use support::Backend;
use tollbridge_daemon::ledger::{ExpertWrite, Ledger, RegisterRefused, Registering};

const T0: i64 = 1_900_000_000_000;

async fn with_expert(ledger: &Ledger) {
    ledger
        .create_expert(
            "akiko".into(),
            "akiko".into(),
            "tb.test".into(),
            "0123456789abcdef0123456789abcdef".into(),
            T0,
        )
        .await
        .unwrap();
}

/// A REGISTER from `received` with Call-ID `call_id`, CSeq `cseq`,
/// binding `contacts` (`None`: `*`).
fn registering(call_id: &str, cseq: i64, contacts: Option<Vec<(&str, i64)>>) -> Registering {
    Registering {
        expert: "akiko".into(),
        received: "203.0.113.5:41234".into(),
        transport: "udp".into(),
        call_id: call_id.into(),
        cseq,
        user_agent: Some("Linphone/5.2".into()),
        contacts: contacts.map(|list| list.into_iter().map(|(c, s)| (c.to_owned(), s)).collect()),
        max_devices: 2,
    }
}

/// The expert's devices' Contacts now.
async fn contacts(ledger: &Ledger, now: i64) -> Vec<String> {
    ledger
        .devices("akiko".into(), now)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.contact)
        .collect()
}

async fn bindings_are_added_refreshed_and_removed(backend: Backend) {
    let ledger = support::open(backend).await;
    with_expert(&ledger).await;
    let desk = "sip:akiko@192.168.1.20:5060";
    let mobile = "sip:akiko@10.0.0.9:5062";
    let devices = ledger
        .register(registering("c1", 1, Some(vec![(desk, 600)])), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].received, "203.0.113.5:41234");
    assert_eq!(devices[0].node, ledger.node());
    assert_eq!(devices[0].expires_ms, T0 + 600_000);
    ledger
        .register(registering("c2", 1, Some(vec![(mobile, 60)])), T0 + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contacts(&ledger, T0 + 2).await, [desk, mobile]);
    // A refresh moves the expiry; an older CSeq of the same Call-ID is
    // out of order and changes nothing.
    ledger
        .register(registering("c1", 2, Some(vec![(desk, 900)])), T0 + 10)
        .await
        .unwrap()
        .unwrap();
    let refused = ledger
        .register(registering("c1", 2, Some(vec![(desk, 0)])), T0 + 11)
        .await
        .unwrap();
    assert_eq!(refused, Err(RegisterRefused::OutOfOrder(2, 2)));
    // In the order they last registered.
    assert_eq!(contacts(&ledger, T0 + 12).await, [mobile, desk]);
    // A third device is one too many (registrar.max_devices = 2 here).
    let refused = ledger
        .register(
            registering("c3", 1, Some(vec![("sip:akiko@10.1.1.1", 60)])),
            T0 + 13,
        )
        .await
        .unwrap();
    assert_eq!(refused, Err(RegisterRefused::TooManyDevices(2)));
    // The mobile's binding lapses at T0 + 60 s + 1 ms: it rings no more.
    assert_eq!(contacts(&ledger, T0 + 60_002).await, [desk]);
    // Now there is room for another.
    ledger
        .register(
            registering("c3", 2, Some(vec![("sip:akiko@10.1.1.1", 60)])),
            T0 + 60_003,
        )
        .await
        .unwrap()
        .unwrap();
    // expires=0 removes one; `*` removes all.
    ledger
        .register(registering("c1", 3, Some(vec![(desk, 0)])), T0 + 60_004)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contacts(&ledger, T0 + 60_005).await, ["sip:akiko@10.1.1.1"]);
    let none = ledger
        .register(registering("c4", 1, None), T0 + 60_006)
        .await
        .unwrap()
        .unwrap();
    assert!(none.is_empty());
    assert!(contacts(&ledger, T0 + 60_007).await.is_empty());
}

async fn accounts_are_unique_and_take_their_devices_with_them(backend: Backend) {
    let ledger = support::open(backend).await;
    with_expert(&ledger).await;
    let again = |name: &str, username: &str| {
        ledger.create_expert(
            name.into(),
            username.into(),
            "tb.test".into(),
            "ff".into(),
            T0,
        )
    };
    assert!(matches!(
        again("akiko", "other").await,
        Err(ExpertWrite::Taken("name"))
    ));
    assert!(matches!(
        again("other", "akiko").await,
        Err(ExpertWrite::Taken("username"))
    ));
    let (name, realm, ha1) = ledger.credentials("akiko".into()).await.unwrap().unwrap();
    assert_eq!((name.as_str(), realm.as_str()), ("akiko", "tb.test"));
    assert_eq!(ha1.len(), 32);
    assert!(ledger.credentials("nobody".into()).await.unwrap().is_none());
    ledger
        .register(
            registering("c1", 1, Some(vec![("sip:akiko@10.0.0.1", 600)])),
            T0,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        ledger
            .set_expert_password("akiko".into(), "tb.test".into(), "ee".into(), T0 + 5)
            .await
            .unwrap()
    );
    assert_eq!(
        ledger.credentials("akiko".into()).await.unwrap().unwrap().2,
        "ee"
    );
    assert!(ledger.delete_expert("akiko".into()).await.unwrap());
    assert!(!ledger.delete_expert("akiko".into()).await.unwrap());
    assert!(contacts(&ledger, T0 + 10).await.is_empty());
    // A REGISTER racing the deletion binds nothing.
    let refused = ledger
        .register(
            registering("c1", 2, Some(vec![("sip:akiko@10.0.0.1", 600)])),
            T0 + 11,
        )
        .await
        .unwrap();
    assert_eq!(refused, Err(RegisterRefused::NoExpert));
}

async fn every_node_gets_the_same_nonce_secret(backend: Backend) {
    let ledger = support::open(backend).await;
    let first = ledger.registrar_secret("first".into()).await.unwrap();
    let other = ledger.for_node("tb-2");
    let second = other.registrar_secret("second".into()).await.unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("first", "first"));
}

on_both_backends!(
    bindings_are_added_refreshed_and_removed,
    accounts_are_unique_and_take_their_devices_with_them,
    every_node_gets_the_same_nonce_secret,
);
