//! telemetry: reading a `/metrics` page back, for the scrapers exflow ships and tests with
//! (the bench harness, the integration tests): one fetch and one parser of the exposition
//! format, so both read the page the same way.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context;

/// Fetches exflow's `/metrics` page (the body).
pub fn fetch(address: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))
        .with_context(|| format!("cannot reach exflow's metrics at {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: exflow\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_string()))
}

/// The samples of a Prometheus text page: (name, labels as written between the braces,
/// value).
pub fn samples(page: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|line| {
            let (name_labels, value) = line.rsplit_once(' ')?;
            let (name, labels) = match name_labels.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (name_labels, ""),
            };
            Some((name, labels, value.parse::<f64>().ok()?))
        })
}

/// Sums metric `name` over the series whose label `label` is `value`, e.g. the alerts of
/// one rule: `sum_where(page, "exflow_detect_alerts_total", "rule", "bulk_egress")`.
pub fn sum_where(page: &str, name: &str, label: &str, value: &str) -> f64 {
    samples(page)
        .filter(|(n, labels, _)| {
            *n == name
                && labels.split(',').any(|pair| {
                    pair.split_once('=')
                        .is_some_and(|(l, v)| l == label && v.trim_matches('"') == value)
                })
        })
        .map(|(_, _, v)| v)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_metric_over_the_series_with_one_label_value() {
        let page = "# TYPE exflow_detect_alerts_total counter\n\
            exflow_detect_alerts_total{rule=\"bulk_egress\",severity=\"high\"} 3\n\
            exflow_detect_alerts_total{rule=\"bulk_egress\",severity=\"critical\"} 1\n\
            exflow_detect_alerts_total{rule=\"beacon\",severity=\"high\"} 7\n\
            exflow_detect_suppressed_alerts_total{rule=\"bulk_egress\"} 100\n\
            exflow_decode_records_total 42\n";
        let alerts = |rule| sum_where(page, "exflow_detect_alerts_total", "rule", rule);
        assert_eq!((alerts("bulk_egress"), alerts("beacon")), (4.0, 7.0));
        assert_eq!(alerts("bulk"), 0.0);
        assert_eq!(
            sum_where(page, "exflow_detect_alerts_total", "severity", "high"),
            10.0
        );
    }
}
