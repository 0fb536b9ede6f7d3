//! flow: the Community ID (v1) of a conversation, the flow hash Zeek, Suricata and Elastic
//! share, so an analyst can pivot from an exflow alert to the same connection in those
//! tools. Spec: <https://github.com/corelight/community-id-spec> (version 1, seed 0, their
//! default): `"1:" + base64(sha1(seed, ordered addresses, protocol, 0, ordered ports))`.
//!
//! The hash does not depend on direction: the endpoints are ordered (the smaller address,
//! or port on equal addresses, first). ICMP and ICMPv6 use the message type and code as
//! ports, a request and its reply mapped onto one pair; other one-way messages keep their
//! sender first. exflow keeps an ICMP message's `type * 256 + code` in the port of the side
//! it was sent to (the other port is 0).

use std::net::IpAddr;

use base64::Engine;

use super::ConversationKey;

/// The seed every tool defaults to; a deployment that changed it elsewhere must match it.
const SEED: u16 = 0;

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;

/// ICMP message types that have a counterpart (echo, timestamp, information, router and
/// address mask request/reply), as the spec pairs them.
const ICMP_PAIRS: [(u8, u8); 10] = [
    (8, 0),
    (0, 8),
    (13, 14),
    (14, 13),
    (15, 16),
    (16, 15),
    (10, 9),
    (9, 10),
    (17, 18),
    (18, 17),
];
/// ICMPv6: echo, router and neighbour solicitation/advertisement, multicast listener
/// query/report, home agent address discovery.
const ICMPV6_PAIRS: [(u8, u8); 10] = [
    (128, 129),
    (129, 128),
    (133, 134),
    (134, 133),
    (135, 136),
    (136, 135),
    (130, 131),
    (131, 130),
    (144, 145),
    (145, 144),
];

/// One end of the tuple: its address bytes (4 or 16) and port.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct End {
    address: [u8; 16],
    len: usize,
    port: u16,
}

fn end(address: IpAddr, port: u16) -> End {
    let mut bytes = [0u8; 16];
    let len = match address {
        IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            bytes.copy_from_slice(&v6.octets());
            16
        }
    };
    End {
        address: bytes,
        len,
        port,
    }
}

/// The conversation's Community ID, e.g. `1:LQU9qZlK+B5F3KDmev6m5PMibrg=`.
pub fn community_id(key: &ConversationKey) -> String {
    let (mut first, mut second) = (
        end(key.inside, key.inside_port),
        end(key.outside, key.outside_port),
    );
    let mut one_way = false;
    let has_ports = matches!(key.proto, ICMP | TCP | UDP | ICMPV6 | SCTP);
    if matches!(key.proto, ICMP | ICMPV6) {
        // The message went to the side whose port holds it; an echo reply (type 0, code 0)
        // holds nothing, but it is paired, so which side sent it does not matter.
        let (sender, receiver, message) = if key.outside_port != 0 {
            (first, second, key.outside_port)
        } else {
            (second, first, key.inside_port)
        };
        let (icmp_type, code) = ((message >> 8) as u8, message as u8);
        let pairs = if key.proto == ICMP {
            &ICMP_PAIRS
        } else {
            &ICMPV6_PAIRS
        };
        let (sport, dport) = match pairs.iter().find(|p| p.0 == icmp_type) {
            Some(&(_, counterpart)) => (icmp_type, counterpart),
            None => {
                one_way = true;
                (icmp_type, code)
            }
        };
        first = End {
            port: u16::from(sport),
            ..sender
        };
        second = End {
            port: u16::from(dport),
            ..receiver
        };
    }
    if !one_way && second < first {
        std::mem::swap(&mut first, &mut second);
    }
    let mut input = Vec::with_capacity(2 + 32 + 2 + 4);
    input.extend_from_slice(&SEED.to_be_bytes());
    input.extend_from_slice(&first.address[..first.len]);
    input.extend_from_slice(&second.address[..second.len]);
    input.extend_from_slice(&[key.proto, 0]);
    if has_ports {
        input.extend_from_slice(&first.port.to_be_bytes());
        input.extend_from_slice(&second.port.to_be_bytes());
    }
    let digest = sha1_smol::Sha1::from(&input).digest().bytes();
    format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(
        inside: &str,
        inside_port: u16,
        outside: &str,
        outside_port: u16,
        proto: u8,
    ) -> ConversationKey {
        ConversationKey {
            inside: inside.parse().unwrap(),
            outside: outside.parse().unwrap(),
            inside_port,
            outside_port,
            proto,
        }
    }

    /// The spec's and its implementations' published vectors, each from both sides.
    #[test]
    fn the_published_vectors_from_either_side() {
        let cases = [
            (
                ("128.232.110.120", 34855, "66.35.250.204", 80, TCP),
                "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            ),
            (
                ("192.168.1.52", 54585, "8.8.8.8", 53, UDP),
                "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
            ),
            (
                (
                    "2001:470:e5bf:dead:4957:2174:e82c:4887",
                    63943,
                    "2607:f8b0:400c:c03::1a",
                    25,
                    TCP,
                ),
                "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
            ),
            (
                ("192.168.170.8", 7, "192.168.170.56", 80, SCTP),
                "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=",
            ),
        ];
        for ((a, ap, b, bp, proto), want) in cases {
            assert_eq!(community_id(&key(a, ap, b, bp, proto)), want, "{a} {b}");
            assert_eq!(community_id(&key(b, bp, a, ap, proto)), want, "{b} {a}");
        }
    }

    #[test]
    fn icmp_uses_type_and_code_a_request_and_its_reply_share_one() {
        // An echo request (type 8) from 192.168.0.89 to 192.168.0.1: exflow holds 8 << 8 in
        // the receiver's port.
        let request = key("192.168.0.89", 0, "192.168.0.1", 8 << 8, ICMP);
        assert_eq!(community_id(&request), "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=");
        // Its reply (type 0, code 0) back from 192.168.0.1.
        let reply = key("192.168.0.89", 0, "192.168.0.1", 0, ICMP);
        assert_eq!(community_id(&reply), "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=");
        // ICMPv6 time exceeded (type 3, one-way) from 3ffe:501:... (outside) to
        // 3ffe:507:... (inside): the sender stays first.
        let exceeded = key(
            "3ffe:507:0:1:200:86ff:fe05:80da",
            3 << 8,
            "3ffe:501:0:1802:260:97ff:feb6:7ff0",
            0,
            ICMPV6,
        );
        assert_eq!(community_id(&exceeded), "1:bnQKq8A2r//dWnkRW2EYcMhShjc=");
    }
}
