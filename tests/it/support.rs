//! Shared test helpers: paths to fixtures, decoding a capture the way `exflow decode` does.

use std::path::PathBuf;

use exflow::decode::{DecodeCounters, Decoder, DecoderConfig, FlowRecord};
use exflow::source::capture;

pub fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Every UDP payload of a capture with its source address and capture time.
pub fn datagrams(name: &str) -> Vec<(std::net::IpAddr, u64, Vec<u8>)> {
    let mut all = Vec::new();
    capture::for_each_datagram(&data(name), |d| {
        all.push((d.source.ip(), d.received_ns, d.payload.to_vec()))
    })
    .expect("fixture capture reads");
    all
}

/// Decodes a whole capture with one decoder.
pub fn decode_capture(name: &str) -> (Vec<FlowRecord>, DecodeCounters) {
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut records = Vec::new();
    for (exporter, received_ns, payload) in datagrams(name) {
        let _ = decoder.decode(exporter, received_ns, &payload, &mut records);
    }
    (records, decoder.totals())
}

/// Seconds since the epoch of nfdump's "2024-03-12 08:02:00" (UTC).
pub fn nfdump_time(text: &str) -> u64 {
    let (date, time) = text.split_once(' ').expect("date and time");
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let t: Vec<u64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe - 719_468) as u64;
    days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]
}
