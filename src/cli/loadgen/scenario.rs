//! cli::loadgen::scenario: the exfiltration scenarios the load generator injects into its
//! background traffic at known times, each named after the rule that must catch it.

use std::net::Ipv4Addr;

use exflow::decode::FlowRecord;

/// Where injected scenarios upload to: a foreign address (RU in the embedded database)
/// outside the background's outside ranges (IPv4 20.0.0.0 to 219.255.255.255, 2a00::/8), so
/// no background record adds to a scenario's conversation or window.
pub const SCENARIO_DESTINATION: Ipv4Addr = Ipv4Addr::new(5, 255, 255, 77);

/// An exfiltration that `exflow run` with its default configuration detects with the rule
/// of the same name: the load harness injects it at a known time to measure detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// 300 MB uploaded in three records within 30 s (`bulk_egress`: 100 MB within an hour).
    BulkEgress,
    /// One connection open for an hour that sent 5 MB (`long_lived_foreign`: 59 min, 1 MB).
    LongLivedForeign,
}

impl Scenario {
    pub const ALL: [Scenario; 2] = [Scenario::BulkEgress, Scenario::LongLivedForeign];

    /// The rule that must fire, which is also the scenario's name.
    pub fn rule(self) -> &'static str {
        match self {
            Scenario::BulkEgress => exflow::detect::bulk_egress::NAME,
            Scenario::LongLivedForeign => exflow::detect::long_lived_foreign::NAME,
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.rule() == name)
    }

    /// One instance's records, `inside` uploading to [`SCENARIO_DESTINATION`]. They end
    /// within 30 s after `start_ms`, in the event time of `background_records(.., start_ms)`
    /// (which ends by `start_ms` + 38 s), so they do not move the collector's clock on.
    pub fn records(self, inside: Ipv4Addr, start_ms: u64) -> Vec<FlowRecord> {
        let upload = |start_ms: u64, end_ms: u64, bytes: u64, src_port: u16| FlowRecord {
            src_addr: inside.into(),
            dst_addr: SCENARIO_DESTINATION.into(),
            src_port,
            dst_port: 443,
            proto: 6,
            tcp_flags: 0x1b,
            bytes,
            packets: bytes / 1400 + 1,
            time_flow_start_ns: start_ms * 1_000_000,
            time_flow_end_ns: end_ms * 1_000_000,
            etype: exflow::decode::record::ETYPE_IPV4,
            ..FlowRecord::default()
        };
        match self {
            Scenario::BulkEgress => (0..3u16)
                .map(|i| {
                    let at = start_ms + 10_000 * u64::from(i);
                    upload(at, at + 8_000, 100_000_000, 40_000 + i)
                })
                .collect(),
            // Started an hour before it ends, ending with the background.
            Scenario::LongLivedForeign => {
                let end = start_ms + 10_000;
                vec![upload(end - 3_610_000, end, 5_000_000, 40_100)]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exflow::decode::FlowKind;
    use exflow::wire::emit::Exporter;

    /// Each scenario, in each protocol, makes its rule fire once with the default
    /// configuration, and no other rule.
    #[test]
    fn scenarios_fire_their_rule_with_the_default_config() {
        use exflow::config::Config;
        use exflow::pipeline::Pipeline;
        let config = Config::default();
        let inside = Ipv4Addr::new(10, 200, 3, 4);
        for kind in [FlowKind::NetflowV5, FlowKind::NetflowV9, FlowKind::Ipfix] {
            for scenario in Scenario::ALL {
                let mut datagrams = Vec::new();
                Exporter::new(kind, 0).encode(
                    &scenario.records(inside, 1_710_230_400_000),
                    1_710_230_460_000,
                    &mut datagrams,
                );
                assert_eq!(datagrams.len(), 1, "{kind:?} {scenario:?}: one datagram");
                let enricher = config.enricher().unwrap();
                let mut pipeline = Pipeline::new(&config, enricher, 1);
                let mut alerts = Vec::new();
                pipeline.push_datagram("127.1.0.1".parse().unwrap(), 1, &datagrams[0], &mut alerts);
                let fired: Vec<_> = alerts
                    .iter()
                    .map(|a| (a.rule, a.inside_addr, a.outside_addr))
                    .collect();
                assert_eq!(
                    fired,
                    [(scenario.rule(), inside.into(), SCENARIO_DESTINATION.into())],
                    "{kind:?} {scenario:?}"
                );
            }
        }
        assert_eq!(
            Scenario::from_name("bulk_egress"),
            Some(Scenario::BulkEgress)
        );
        assert_eq!(Scenario::from_name("watchlist"), None);
    }
}
