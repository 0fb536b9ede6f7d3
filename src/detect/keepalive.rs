//! detect: well-known keepalive services, traffic that is regular and long by design and
//! never a beacon or a quiet exfiltration channel by itself: vendor push services that
//! phones and laptops hold one connection to (Apple APNs, Google FCM), VPN endpoints that
//! send a keepalive on a timer (WireGuard, IPsec NAT traversal, OpenVPN), and ICMP echo
//! (monitoring pings). `beacon` and the quiet step of `long_lived_foreign` skip them unless
//! `keepalive_services = false`.

use std::net::IpAddr;

use crate::flow::ConversationKey;

/// A well-known keepalive service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keepalive {
    /// Apple Push Notification service: 17.0.0.0/8 (Apple's own network) on 5223, 2197
    /// or 443.
    ApplePush,
    /// Firebase Cloud Messaging: TCP 5228-5230 (Google's mobile push, no other common use).
    GooglePush,
    /// WireGuard (UDP 51820), IPsec NAT traversal and IKE (UDP 4500, 500), OpenVPN (1194).
    Vpn,
    /// ICMP or ICMPv6: echo requests and their replies.
    Ping,
}

impl Keepalive {
    pub const fn name(self) -> &'static str {
        match self {
            Keepalive::ApplePush => "Apple push",
            Keepalive::GooglePush => "Google push",
            Keepalive::Vpn => "VPN keepalive",
            Keepalive::Ping => "ping",
        }
    }
}

/// The keepalive service a conversation goes to, if it is one.
pub fn keepalive(key: &ConversationKey) -> Option<Keepalive> {
    let apple = match key.outside {
        IpAddr::V4(v4) => v4.octets()[0] == 17,
        // 2620:149::/32 and 2403:300::/32 are Apple's.
        IpAddr::V6(v6) => matches!(v6.segments(), [0x2620, 0x149, ..] | [0x2403, 0x300, ..]),
    };
    match (key.proto, key.outside_port) {
        (6, 5223 | 2197 | 443) if apple => Some(Keepalive::ApplePush),
        (6, 5228..=5230) => Some(Keepalive::GooglePush),
        (17, 51820 | 4500 | 500 | 1194) | (6, 1194) => Some(Keepalive::Vpn),
        (1 | 58, _) => Some(Keepalive::Ping),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(outside: &str, proto: u8, port: u16) -> ConversationKey {
        ConversationKey {
            inside: "10.0.0.1".parse().unwrap(),
            outside: outside.parse().unwrap(),
            inside_port: 50_000,
            outside_port: port,
            proto,
        }
    }

    #[test]
    fn vendors_vpns_and_pings_are_known_the_rest_not() {
        let cases = [
            (key("17.57.146.20", 6, 5223), Some(Keepalive::ApplePush)),
            (key("17.57.146.20", 6, 443), Some(Keepalive::ApplePush)),
            (key("2620:149:a::1", 6, 5223), Some(Keepalive::ApplePush)),
            (key("142.250.27.188", 6, 5228), Some(Keepalive::GooglePush)),
            (key("5.255.255.77", 17, 51820), Some(Keepalive::Vpn)),
            (key("5.255.255.77", 1, 2048), Some(Keepalive::Ping)),
            // Port 5223 elsewhere than Apple's network, and Apple's network on other ports.
            (key("185.220.101.45", 6, 5223), None),
            (key("17.57.146.20", 6, 8080), None),
            // C2 of the border mix: UDP 443.
            (key("91.108.56.130", 17, 443), None),
        ];
        for (key, expected) in cases {
            assert_eq!(keepalive(&key), expected, "{key:?}");
        }
    }
}
