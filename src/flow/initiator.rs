//! flow: who opened a conversation, the inside host or the outside one, from what the
//! records show as they are stitched in: TCP flags (a SYN without an ACK is the opening
//! packet's direction), ports (a service port against an ephemeral one; an ICMP echo
//! request against its reply) and which direction's record started first. Rules read it
//! to tell an upload from a server's answers to its clients.
//!
//! The evidence is kept in one byte of the conversation ([`Opening`]); stronger evidence
//! wins over weaker, so a late SYN-only record settles what the ports only suggested.

use super::Oriented;

/// Who opened a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Initiator {
    /// Nothing the records show tells (both ports ephemeral, or both services, and no
    /// direction known to come first).
    #[default]
    Unknown,
    /// The inside host connected out: what it sends is its upload.
    Inside,
    /// The outside host connected in (the inside host serves): what the inside host sends
    /// is its answers.
    Outside,
}

impl Initiator {
    pub const fn name(self) -> &'static str {
        match self {
            Initiator::Unknown => "unknown",
            Initiator::Inside => "inside",
            Initiator::Outside => "outside",
        }
    }
}

/// What the initiator was told from, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Evidence {
    #[default]
    None,
    /// One direction's record started before the other direction's.
    FirstRecord,
    /// A service port against an ephemeral one, or an ICMP echo request.
    Ports,
    /// A TCP record with SYN and no ACK: the opening packet itself.
    Syn,
}

impl Evidence {
    pub const fn name(self) -> &'static str {
        match self {
            Evidence::None => "none",
            Evidence::FirstRecord => "first record",
            Evidence::Ports => "ports",
            Evidence::Syn => "tcp flags",
        }
    }
}

/// TCP flag bits as NetFlow and IPFIX carry them (`tcpControlBits`, the OR of the flow's
/// packets).
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// Ports below 1024 and these registered ones are services: a host on one of them is the
/// answering end when the other end's port is ephemeral. Ports clients use as their source
/// are not here.
const SERVICE_PORTS: [u16; 34] = [
    1080, 1194, 1433, 1521, 1701, 1723, 1883, 2049, 2083, 2087, 2096, 2197, 3128, 3306, 3389, 4500,
    5060, 5061, 5222, 5223, 5228, 5229, 5230, 5432, 5900, 6379, 6443, 8000, 8080, 8443, 8883, 9092,
    9200, 51820,
];

/// The lowest port of the range systems pick ephemeral ports from (Linux 32768-60999,
/// IANA and Windows 49152-65535).
const EPHEMERAL_FROM: u16 = 32768;

fn is_service(port: u16) -> bool {
    (1..1024).contains(&port) || SERVICE_PORTS.contains(&port)
}

/// What one record's ports say, for `proto`: the initiator and how strongly.
fn by_ports(record: &Oriented) -> Option<Initiator> {
    let (inside, outside) = (record.inside_port, record.outside_port);
    match record.proto {
        // ICMP and ICMPv6 carry type * 256 + code in the destination port: an echo request
        // comes from whoever pings, a reply goes to them. An ICMP echo reply is type 0, the
        // same as no type at all (exporters that send none): only ICMPv6's is read.
        1 | 58 => {
            let destination_port = if record.from_inside { outside } else { inside };
            let icmp_type = destination_port >> 8;
            let (request, reply) = if record.proto == 1 {
                (8, None)
            } else {
                (128, Some(129))
            };
            let from_source = if record.from_inside {
                Initiator::Inside
            } else {
                Initiator::Outside
            };
            let from_destination = if record.from_inside {
                Initiator::Outside
            } else {
                Initiator::Inside
            };
            match icmp_type {
                t if t == request => Some(from_source),
                t if Some(t) == reply => Some(from_destination),
                _ => None,
            }
        }
        6 | 17 | 132 => match (is_service(inside), is_service(outside)) {
            (false, true) => Some(Initiator::Inside),
            (true, false) => Some(Initiator::Outside),
            // Neither is a known service: the one outside the ephemeral range listens.
            (false, false) if inside >= EPHEMERAL_FROM && outside < EPHEMERAL_FROM => {
                Some(Initiator::Inside)
            }
            (false, false) if outside >= EPHEMERAL_FROM && inside < EPHEMERAL_FROM => {
                Some(Initiator::Outside)
            }
            _ => None,
        },
        _ => None,
    }
}

/// A conversation's evidence of who opened it, in one byte: the initiator (bits 0-1), the
/// evidence (bits 2-3), the direction of the earliest record (bit 4: from inside) and the
/// directions seen (bit 5: from inside, bit 6: from outside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Opening(u8);

const EARLIEST_FROM_INSIDE: u8 = 1 << 4;
const SEEN_FROM_INSIDE: u8 = 1 << 5;
const SEEN_FROM_OUTSIDE: u8 = 1 << 6;

impl Opening {
    /// The evidence of a conversation's first record.
    pub fn first(record: &Oriented) -> Opening {
        let mut opening = Opening(0);
        opening.observe(record, true);
        opening
    }

    pub fn initiator(self) -> Initiator {
        match self.0 & 0b11 {
            1 => Initiator::Inside,
            2 => Initiator::Outside,
            _ => Initiator::Unknown,
        }
    }

    pub fn evidence(self) -> Evidence {
        match (self.0 >> 2) & 0b11 {
            1 => Evidence::FirstRecord,
            2 => Evidence::Ports,
            3 => Evidence::Syn,
            _ => Evidence::None,
        }
    }

    fn set(&mut self, initiator: Initiator, evidence: Evidence) {
        let initiator = match initiator {
            Initiator::Unknown => 0,
            Initiator::Inside => 1,
            Initiator::Outside => 2,
        };
        let evidence = match evidence {
            Evidence::None => 0,
            Evidence::FirstRecord => 1,
            Evidence::Ports => 2,
            Evidence::Syn => 3,
        };
        self.0 = (self.0 & !0b1111) | initiator | evidence << 2;
    }

    /// Takes in a record stitched into the conversation; `earliest` when it starts before
    /// every record seen so far (or is the first).
    pub fn observe(&mut self, record: &Oriented, earliest: bool) {
        let source = if record.from_inside {
            Initiator::Inside
        } else {
            Initiator::Outside
        };
        let tcp = record.proto == 6;
        // A TCP record without SYN continues a connection that began earlier: its start is
        // not the opening. Exporters that send no flags (0) are taken at their word.
        let opens = !tcp || record.tcp_flags == 0 || record.tcp_flags & SYN != 0;
        if earliest && opens {
            if record.from_inside {
                self.0 |= EARLIEST_FROM_INSIDE;
            } else {
                self.0 &= !EARLIEST_FROM_INSIDE;
            }
        }
        self.0 |= if record.from_inside {
            SEEN_FROM_INSIDE
        } else {
            SEEN_FROM_OUTSIDE
        };
        if tcp && record.tcp_flags & SYN != 0 && record.tcp_flags & ACK == 0 {
            self.set(source, Evidence::Syn);
            return;
        }
        if self.evidence() >= Evidence::Ports {
            return;
        }
        if let Some(initiator) = by_ports(record) {
            self.set(initiator, Evidence::Ports);
            return;
        }
        // Both directions seen: the earlier one opened.
        if self.0 & (SEEN_FROM_INSIDE | SEEN_FROM_OUTSIDE) == SEEN_FROM_INSIDE | SEEN_FROM_OUTSIDE {
            let first = if self.0 & EARLIEST_FROM_INSIDE != 0 {
                Initiator::Inside
            } else {
                Initiator::Outside
            };
            self.set(first, Evidence::FirstRecord);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record between 10.0.0.1:`inside_port` and 5.255.255.77:`outside_port`, sent by
    /// the inside host when `from_inside`.
    fn record(
        proto: u8,
        inside_port: u16,
        outside_port: u16,
        from_inside: bool,
        flags: u8,
    ) -> Oriented {
        Oriented {
            inside: "10.0.0.1".parse().unwrap(),
            outside: "5.255.255.77".parse().unwrap(),
            inside_port,
            outside_port,
            proto,
            bytes_out: 100,
            bytes_in: 0,
            packets_out: 1,
            packets_in: 0,
            start_ms: 0,
            end_ms: 0,
            outside_asn: 0,
            exporter: "127.0.0.1".parse().unwrap(),
            tcp_flags: flags,
            from_inside,
            continues: false,
            ends: false,
            interfaces: Default::default(),
        }
    }

    fn of(opening: Opening) -> (Initiator, Evidence) {
        (opening.initiator(), opening.evidence())
    }

    #[test]
    fn ports_tell_client_from_server() {
        use Initiator::*;
        let cases = [
            // A client on an ephemeral port to a web server abroad.
            (6, 51234, 443, Inside),
            // The inside web server answering a client abroad, whichever side's record.
            (6, 443, 51234, Outside),
            (6, 8443, 40000, Outside),
            // Push service, registered port.
            (6, 49822, 5223, Inside),
            // A port below the ephemeral range against one in it.
            (17, 60001, 3478, Inside),
            (17, 3478, 60001, Outside),
            // NTP, DNS between servers: both services.
            (17, 123, 123, Unknown),
            (17, 40000, 50000, Unknown),
        ];
        for (proto, inside, outside, expected) in cases {
            for from_inside in [true, false] {
                let got = Opening::first(&record(proto, inside, outside, from_inside, 0x1b));
                assert_eq!(got.initiator(), expected, "{proto} {inside} {outside}");
            }
        }
    }

    #[test]
    fn a_syn_without_ack_is_the_opening_and_wins_over_ports() {
        // An outside host opens a connection from port 443 to an inside high port (a
        // reverse connection): the ports say inside, the SYN says outside.
        let mut opening = Opening::first(&record(6, 50000, 443, true, 0x1a));
        assert_eq!(of(opening), (Initiator::Inside, Evidence::Ports));
        opening.observe(&record(6, 50000, 443, false, SYN), true);
        assert_eq!(of(opening), (Initiator::Outside, Evidence::Syn));
        // Ports no longer move it.
        opening.observe(&record(6, 50000, 443, true, 0x1b), false);
        assert_eq!(of(opening), (Initiator::Outside, Evidence::Syn));
        // SYN and ACK together (the answer, or a whole connection's OR) is not the opening.
        let answer = Opening::first(&record(6, 40000, 50000, false, SYN | ACK));
        assert_eq!(of(answer), (Initiator::Unknown, Evidence::None));
    }

    #[test]
    fn the_earlier_direction_opened_when_ports_say_nothing() {
        // UDP between two ephemeral ports: the outside sent first, then the inside answered.
        let mut opening = Opening::first(&record(17, 40000, 50000, false, 0));
        assert_eq!(
            of(opening),
            (Initiator::Unknown, Evidence::None),
            "one side seen"
        );
        opening.observe(&record(17, 40000, 50000, true, 0), false);
        assert_eq!(of(opening), (Initiator::Outside, Evidence::FirstRecord));
        // A record of the inside's that started earlier still (a late export) turns it.
        opening.observe(&record(17, 40000, 50000, true, 0), true);
        assert_eq!(of(opening), (Initiator::Inside, Evidence::FirstRecord));
        // A TCP record without SYN is a continuation: its start is not the opening.
        let mut tcp = Opening::first(&record(6, 40000, 50000, true, SYN | ACK | 0x08));
        tcp.observe(&record(6, 40000, 50000, false, ACK | 0x08), true);
        assert_eq!(of(tcp), (Initiator::Inside, Evidence::FirstRecord));
    }

    #[test]
    fn icmp_echo_requests_come_from_who_pings() {
        // softflowd and pmacct put type * 256 + code in the destination port.
        let request = record(1, 0, 8 << 8, true, 0);
        assert_eq!(Opening::first(&request).initiator(), Initiator::Inside);
        // An ICMP reply's type is 0, as when there is no type: not read.
        let reply = record(1, 0, 0, false, 0);
        assert_eq!(Opening::first(&reply).initiator(), Initiator::Unknown);
        let reply_v6 = record(58, 129 << 8, 0, false, 0);
        assert_eq!(Opening::first(&reply_v6).initiator(), Initiator::Inside);
        // Pinged from outside: the request's destination is the inside host.
        let inbound = record(1, 8 << 8, 0, false, 0);
        assert_eq!(Opening::first(&inbound).initiator(), Initiator::Outside);
        let v6 = record(58, 0, 128 << 8, true, 0);
        assert_eq!(Opening::first(&v6).initiator(), Initiator::Inside);
    }
}
