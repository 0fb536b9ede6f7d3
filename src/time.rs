//! Time formatting at the edges: RFC 3339 UTC for alerts and tables. Everything inside
//! exflow counts nanoseconds since the UNIX epoch.

/// The wall clock, ns since the epoch: for receive times and latencies only, never for
/// detection (that runs on the exporters' clocks).
pub fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `2024-03-12T08:02:00Z` (seconds precision; sub-second digits only when non-zero).
pub fn rfc3339(ns: u64) -> String {
    let seconds = ns / 1_000_000_000;
    let subsec_ms = (ns % 1_000_000_000) / 1_000_000;
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let rem = seconds % 86_400;
    let (hour, minute, second) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    if subsec_ms == 0 {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{subsec_ms:03}Z")
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_710_230_520_000_000_000), "2024-03-12T08:02:00Z");
        assert_eq!(
            rfc3339(1_709_164_800_250_000_000),
            "2024-02-29T00:00:00.250Z"
        );
        assert_eq!(rfc3339(4_102_444_799_000_000_000), "2099-12-31T23:59:59Z");
    }
}
