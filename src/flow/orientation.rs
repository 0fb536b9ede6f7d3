//! flow::orientation: a decoded record seen from the inside, the first step into the
//! table: which end is the inside host (through NAT too), and the counters as upload and
//! download multiplied by the sampling rate. Transit and east-west records stop here.

use std::net::IpAddr;

use super::ConversationKey;
use crate::decode::FlowRecord;
use crate::decode::directory::InterfaceRef;
use crate::enrich::Enricher;

/// A record seen from the inside: what one inside host exchanged with one outside endpoint.
/// Counters are multiplied by the sampling rate (estimates of the real traffic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oriented {
    pub inside: IpAddr,
    pub outside: IpAddr,
    pub inside_port: u16,
    pub outside_port: u16,
    pub proto: u8,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub packets_in: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    /// The outside end's AS number as the exporter sent it (0: none).
    pub outside_asn: u32,
    pub exporter: IpAddr,
    /// The OR of the TCP flags of the record's packets (0: none sent).
    pub tcp_flags: u8,
    /// The record's source is the inside host (its forward counters are the upload).
    pub from_inside: bool,
    /// The exporter reported this flow before (`FlowRecord::continues_flow`): not another
    /// flow of the conversation.
    pub continues: bool,
    /// The exporter says the connection is over (`FlowRecord::ends_connection`): its
    /// conversation ends now rather than at the idle timeout.
    pub ends: bool,
    /// The record's observation domain and ifIndexes: what names its interfaces in an
    /// alert (looked up only then, `decode::directory`).
    pub interfaces: InterfaceRef,
}

impl Oriented {
    pub fn key(&self) -> ConversationKey {
        ConversationKey {
            inside: self.inside,
            outside: self.outside,
            inside_port: self.inside_port,
            outside_port: self.outside_port,
            proto: self.proto,
        }
    }
}

/// Where a record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    Outbound(Oriented),
    /// Both ends outside: traffic passing through, counted and skipped.
    Transit,
    /// Both ends inside: east-west traffic, counted and skipped.
    Internal,
}

/// Orients a decoded record with the inside networks. A record from outside to inside
/// counts as the inside host's download; RFC 5103 reverse counters go the other way.
///
/// Behind a NAT the inside host is the untranslated address: a firewall's record of an
/// outbound connection has it as the source (its post-NAT source is the public address); of
/// an inbound one to a published server, the post-NAT destination may be it while the
/// destination is the public address. An end that is not inside but whose post-NAT address
/// is stands for that inside host, with its post-NAT port.
pub fn orient(record: &FlowRecord, enricher: &Enricher) -> Orientation {
    let translated = |addr: IpAddr, port: u16, post_nat: IpAddr, post_port: u16| {
        if enricher.is_inside(addr) {
            Some((addr, port))
        } else if !post_nat.is_unspecified() && enricher.is_inside(post_nat) {
            Some((post_nat, if post_port != 0 { post_port } else { port }))
        } else {
            None
        }
    };
    let src = translated(
        record.src_addr,
        record.src_port,
        record.post_nat_src_addr,
        record.post_nat_src_port,
    );
    let dst = translated(
        record.dst_addr,
        record.dst_port,
        record.post_nat_dst_addr,
        record.post_nat_dst_port,
    );
    let src_inside = src.is_some();
    let rate = u64::from(record.sampling_rate.max(1));
    let forward = (
        record.bytes.saturating_mul(rate),
        record.packets.saturating_mul(rate),
    );
    let reverse = (
        record.reverse_bytes.saturating_mul(rate),
        record.reverse_packets.saturating_mul(rate),
    );
    let ends = record.ends_connection();
    let base = |(inside, inside_port): (IpAddr, u16),
                outside,
                outside_port,
                out: (u64, u64),
                inn: (u64, u64),
                asn| {
        Oriented {
            tcp_flags: record.tcp_flags,
            from_inside: src_inside,
            inside,
            outside,
            inside_port,
            outside_port,
            proto: record.proto,
            bytes_out: out.0,
            packets_out: out.1,
            bytes_in: inn.0,
            packets_in: inn.1,
            start_ms: record.time_flow_start_ns / 1_000_000,
            end_ms: record.time_flow_end_ns / 1_000_000,
            outside_asn: asn,
            exporter: record.sampler_address,
            continues: record.continues_flow,
            ends,
            interfaces: InterfaceRef {
                domain: (record.kind, record.observation_domain_id),
                in_if: record.in_if,
                out_if: record.out_if,
            },
        }
    };
    match (src, dst) {
        (Some(inside), None) => Orientation::Outbound(base(
            inside,
            record.dst_addr,
            record.dst_port,
            forward,
            reverse,
            record.dst_as,
        )),
        (None, Some(inside)) => Orientation::Outbound(base(
            inside,
            record.src_addr,
            record.src_port,
            reverse,
            forward,
            record.src_as,
        )),
        (None, None) => Orientation::Transit,
        (Some(_), Some(_)) => Orientation::Internal,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::enrich::{AllowList, EndpointSettings};

    pub(in crate::flow) fn enricher() -> Enricher {
        let settings = EndpointSettings {
            inside: &["10.10.0.0/16".parse().unwrap()],
            home_countries: &[],
            watch_countries: &[],
            resolvers: &[],
            allow: &AllowList::default(),
        };
        Enricher::new(
            std::sync::Arc::new(crate::enrich::Geo::embedded().unwrap()),
            &settings,
            Default::default(),
        )
    }

    pub(in crate::flow) fn record(
        src: &str,
        dst: &str,
        bytes: u64,
        start_s: u64,
        end_s: u64,
    ) -> FlowRecord {
        FlowRecord {
            src_addr: src.parse().unwrap(),
            dst_addr: dst.parse().unwrap(),
            src_port: 50000,
            dst_port: 443,
            proto: 6,
            bytes,
            packets: 10,
            time_flow_start_ns: start_s * 1_000_000_000,
            time_flow_end_ns: end_s * 1_000_000_000,
            ..FlowRecord::default()
        }
    }

    pub(in crate::flow) fn outbound(o: Orientation) -> Oriented {
        match o {
            Orientation::Outbound(o) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nat_orientation_takes_the_untranslated_inside_host() {
        let enricher = enricher();
        // Outbound through source NAT: the source is the inside host, its post-NAT source
        // the public address; the outside end is the destination.
        let snat = FlowRecord {
            src_addr: "10.10.5.5".parse().unwrap(),
            dst_addr: "5.255.255.77".parse().unwrap(),
            src_port: 50000,
            dst_port: 443,
            post_nat_src_addr: "198.51.100.7".parse().unwrap(),
            post_nat_src_port: 61000,
            bytes: 100,
            ..FlowRecord::default()
        };
        let o = outbound(orient(&snat, &enricher));
        assert_eq!(
            (o.inside, o.inside_port, o.outside, o.bytes_out),
            (
                "10.10.5.5".parse().unwrap(),
                50000,
                "5.255.255.77".parse().unwrap(),
                100
            )
        );
        // Inbound to a published server: the destination is the public address, the
        // post-NAT destination the inside server, which is the inside host.
        let inbound = FlowRecord {
            src_addr: "5.255.255.77".parse().unwrap(),
            dst_addr: "198.51.100.8".parse().unwrap(),
            src_port: 40000,
            dst_port: 443,
            post_nat_dst_addr: "10.10.9.9".parse().unwrap(),
            post_nat_dst_port: 8443,
            bytes: 700,
            reverse_bytes: 90,
            flow_end_reason: 3,
            ..FlowRecord::default()
        };
        let o = outbound(orient(&inbound, &enricher));
        assert_eq!(
            (o.inside, o.inside_port, o.outside, o.outside_port),
            (
                "10.10.9.9".parse().unwrap(),
                8443,
                "5.255.255.77".parse().unwrap(),
                40000
            )
        );
        assert_eq!(
            (o.bytes_in, o.bytes_out, o.from_inside, o.ends),
            (700, 90, false, true)
        );
        // Without NAT fields the public address is outside: transit.
        let plain = FlowRecord {
            post_nat_dst_addr: FlowRecord::default().src_addr,
            ..inbound
        };
        assert_eq!(orient(&plain, &enricher), Orientation::Transit);
    }

    #[test]
    fn orientation_follows_the_inside_networks() {
        let e = enricher();
        let up = outbound(orient(&record("10.10.1.1", "5.255.255.77", 100, 0, 1), &e));
        assert_eq!(
            (up.inside.to_string(), up.bytes_out, up.bytes_in),
            ("10.10.1.1".into(), 100, 0)
        );
        assert_eq!((up.inside_port, up.outside_port), (50000, 443));
        let down = outbound(orient(&record("5.255.255.77", "10.10.1.1", 100, 0, 1), &e));
        assert_eq!(
            (down.inside.to_string(), down.bytes_out, down.bytes_in),
            ("10.10.1.1".into(), 0, 100)
        );
        assert_eq!((down.inside_port, down.outside_port), (443, 50000));
        assert_eq!(down.key().outside_port, 50000);
        assert_eq!(
            orient(&record("8.8.8.8", "1.1.1.1", 1, 0, 1), &e),
            Orientation::Transit
        );
        assert_eq!(
            orient(&record("10.10.1.1", "10.10.2.2", 1, 0, 1), &e),
            Orientation::Internal
        );
    }

    #[test]
    fn sampling_rate_and_reverse_counters() {
        let e = enricher();
        let mut r = record("5.255.255.77", "10.10.1.1", 100, 0, 1);
        r.reverse_bytes = 7;
        r.reverse_packets = 1;
        r.sampling_rate = 10;
        let o = outbound(orient(&r, &e));
        assert_eq!(
            (o.bytes_out, o.packets_out, o.bytes_in, o.packets_in),
            (70, 10, 1000, 100)
        );
    }
}
