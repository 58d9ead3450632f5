//! Which legs of a call are SRTP, and the relay's contexts for the keys a
//! call negotiated.
//!
//! A leg follows the policy closest to its party: the caller's leg its
//! trunk's `srtp`; the callee's leg the `srtp` of the trunk it is dialled
//! through (a phone number) or of the `[[callee]]` serving its URI; then
//! `media.srtp` (an expert's softphones, and whatever names none).

use tollbridge_config::{Config, Srtp};
use tollbridge_media::relay::LegSrtp;
use tollbridge_media::sdp::{Crypto, SrtpPolicy};
use tollbridge_media::srtp::{Protector, Unprotector};

use crate::bookings::model::Callee;

fn policy(setting: Srtp) -> SrtpPolicy {
    match setting {
        Srtp::Off => SrtpPolicy::Off,
        Srtp::Optional => SrtpPolicy::Optional,
        Srtp::Required => SrtpPolicy::Required,
    }
}

/// The policy of a call from `trunk`.
pub fn caller_policy(config: &Config, trunk: &str) -> SrtpPolicy {
    let setting = config
        .trunks
        .iter()
        .find(|t| t.name == trunk)
        .and_then(|t| t.srtp)
        .unwrap_or(config.media.srtp);
    policy(setting)
}

/// The policy of the leg to `callee`.
pub fn callee_policy(config: &Config, callee: &Callee) -> SrtpPolicy {
    let specific = match callee {
        Callee::Number { trunk, .. } => config
            .trunks
            .iter()
            .find(|t| &t.name == trunk)
            .and_then(|t| t.srtp),
        Callee::Uri { uri } => config
            .callees
            .iter()
            .find(|c| c.serves(uri))
            .and_then(|c| c.srtp),
        Callee::Expert { .. } => None,
    };
    policy(specific.unwrap_or(config.media.srtp))
}

/// The relay's contexts for a leg's keys: the party's (`receive`) and
/// ours (`send`).
pub fn contexts(receive: Option<&Crypto>, send: Option<&Crypto>) -> LegSrtp {
    LegSrtp {
        receive: receive.map(|c| Unprotector::new(c.suite, &c.key)),
        send: send.map(|c| Protector::new(c.suite, &c.key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tollbridge_config::{CalleeConfig, TrunkConfig};

    fn config(media: Srtp, trunk: Option<Srtp>, callee: Option<Srtp>) -> Config {
        let mut config = Config::defaults(&HashMap::new());
        config.media.srtp = media;
        let mut twilio: TrunkConfig = config.trunks[0].clone();
        twilio.name = "twilio".into();
        twilio.srtp = trunk;
        config.trunks.push(twilio);
        config.callees.push(CalleeConfig {
            host: "pbx.example.com".into(),
            credentials: None,
            srtp: callee,
        });
        config
    }

    #[test]
    fn the_closest_policy_wins() {
        use SrtpPolicy as P;
        let number = Callee::Number {
            number: "+81312345678".into(),
            trunk: "twilio".into(),
        };
        let uri = Callee::Uri {
            uri: "sip:expert@pbx.example.com".into(),
        };
        let elsewhere = Callee::Uri {
            uri: "sip:expert@other.example.com".into(),
        };
        let expert = Callee::Expert {
            expert: "akiko".into(),
        };
        let table = [
            // media, trunk, callee -> caller from twilio, from loopback, number, uri, elsewhere, expert
            (
                Srtp::Optional,
                None,
                None,
                [
                    P::Optional,
                    P::Optional,
                    P::Optional,
                    P::Optional,
                    P::Optional,
                    P::Optional,
                ],
            ),
            (
                Srtp::Off,
                Some(Srtp::Required),
                None,
                [P::Required, P::Off, P::Required, P::Off, P::Off, P::Off],
            ),
            (
                Srtp::Required,
                Some(Srtp::Off),
                Some(Srtp::Optional),
                [
                    P::Off,
                    P::Required,
                    P::Off,
                    P::Optional,
                    P::Required,
                    P::Required,
                ],
            ),
        ];
        for (media, trunk, callee, expected) in table {
            let config = config(media, trunk, callee);
            let got = [
                caller_policy(&config, "twilio"),
                caller_policy(&config, "loopback"),
                callee_policy(&config, &number),
                callee_policy(&config, &uri),
                callee_policy(&config, &elsewhere),
                callee_policy(&config, &expert),
            ];
            assert_eq!(got, expected, "{media:?} {trunk:?} {callee:?}");
        }
    }
}
