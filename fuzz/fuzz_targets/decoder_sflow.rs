//! fuzz: the sFlow v5 decoder. The input is a datagram after its version word (the target
//! puts `0, 0, 0, 5` in front, so no run is spent on other protocols), decoded twice by one
//! `Decoder` (so sequence state carries over) with a default rate and an override, then
//! once more by a decoder without sampling configuration.
#![no_main]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use exflow::decode::{Decoder, DecoderConfig, FlowKind, FlowRecord};
use libfuzzer_sys::fuzz_target;

const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fn check(decoder: &mut Decoder, datagram: &[u8], override_rate: Option<u32>) -> usize {
    let mut out: Vec<FlowRecord> = Vec::new();
    let result = decoder.decode(EXPORTER, 1_000_000_000, datagram, &mut out);
    if let Ok(n) = result {
        assert_eq!(
            n,
            out.len(),
            "decode() returned a count other than it appended"
        );
    }
    for record in &out {
        assert_eq!(record.kind, FlowKind::Sflow5);
        assert_eq!(record.sampler_address, EXPORTER);
        assert_eq!(record.packets, 1, "an sFlow sample is one packet");
        if let Some(rate) = override_rate {
            assert_eq!(record.sampling_rate, rate, "the override wins");
        }
        black_box(record);
    }
    out.len()
}

fuzz_target!(|data: &[u8]| {
    let mut datagram = Vec::with_capacity(data.len() + 4);
    datagram.extend_from_slice(&[0, 0, 0, 5]);
    datagram.extend_from_slice(data);

    let mut config = DecoderConfig::default();
    config.sampling.default_rate = Some(10);
    config.sampling.overrides.insert(EXPORTER, 100);
    let mut decoder = Decoder::new(config);
    let first = check(&mut decoder, &datagram, Some(100));
    let second = check(&mut decoder, &datagram, Some(100));
    assert_eq!(first, second, "the same datagram decodes the same twice");
    let totals = decoder.totals();
    assert_eq!(totals.datagrams, 2);
    assert_eq!(totals.records, (first + second) as u64);

    let mut plain = Decoder::new(DecoderConfig::default());
    assert_eq!(check(&mut plain, &datagram, None), first);
    black_box(plain.totals().errors.total());
});
