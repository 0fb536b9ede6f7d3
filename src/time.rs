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

/// Milliseconds since the epoch of a time [`rfc3339`] wrote (`YYYY-MM-DDTHH:MM:SS[.mmm]Z`);
/// `None` for anything else.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (whole, millis) = match text.split_once('.') {
        Some((whole, fraction)) if fraction.len() == 3 => (whole, fraction.parse::<u64>().ok()?),
        Some(_) => return None,
        None => (text, 0),
    };
    let (date, clock) = whole.split_once('T')?;
    let mut date = date.splitn(3, '-').map(str::parse::<u32>);
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let mut clock = clock.splitn(3, ':').map(str::parse::<u64>);
    let (hour, minute, second) = (
        clock.next()?.ok()?,
        clock.next()?.ok()?,
        clock.next()?.ok()?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = u64::try_from(days_from_civil(i64::from(year), month, day)).ok()?;
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000) + millis)
}

/// A proleptic Gregorian date to days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

    #[test]
    fn parses_what_it_formats() {
        for ns in [
            0,
            1_710_230_520_000_000_000,
            1_709_164_800_250_000_000,
            4_102_444_799_000_000_000,
        ] {
            assert_eq!(parse_rfc3339_ms(&rfc3339(ns)), Some(ns / 1_000_000));
        }
        for bad in [
            "",
            "2024-03-12T08:02:00",
            "2024-13-12T08:02:00Z",
            "2024-03-12T08:02:00.5Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }
}
