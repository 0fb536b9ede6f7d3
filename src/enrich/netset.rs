//! enrich/netset: answers "is this flow endpoint in that list of networks?" for inside networks
//! and allow- and watch-lists, one binary search per lookup.
//!
//! A [`NetSet`] is built once (from config or a threat-intel file) and then only read, so it is
//! stored in the form that is fastest to query: every CIDR becomes an inclusive range of integers
//! (`u32` for IPv4, `u128` for IPv6), the ranges are sorted and overlapping or touching ranges are
//! merged. `contains` is then a `partition_point` over a boxed slice: no allocation, no hashing,
//! `O(log n)` in the number of merged ranges, and the answer does not depend on how the list was
//! written (duplicates, overlaps and host bits set in a CIDR all collapse).
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are looked up as their IPv4 form: exporters on
//! dual-stack sockets report IPv4 peers that way, and a list written with `10.0.0.0/8` must still
//! match them. For the same reason an IPv6 network that covers part of `::ffff:0:0/96` also adds
//! the IPv4 addresses it covers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An inclusive IPv4 range `[first, last]`, as integers.
type RangeV4 = (u32, u32);
/// An inclusive IPv6 range `[first, last]`, as integers.
type RangeV6 = (u128, u128);

/// The first address of `::ffff:0:0/96`, the IPv4-mapped IPv6 block (RFC 4291 section 2.5.5.2).
const V4_MAPPED_FIRST: u128 = 0xffff_0000_0000;
/// The last address of `::ffff:0:0/96`.
const V4_MAPPED_LAST: u128 = 0xffff_ffff_ffff;

/// The networks a deployment calls "inside" when it configures none: private and shared address
/// space that never routes on the public internet.
///
/// - RFC 1918 private IPv4: `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`
/// - RFC 6598 shared address space (carrier-grade NAT): `100.64.0.0/10`
/// - RFC 4193 unique local IPv6 addresses: `fc00::/7`
///
/// Loopback and link-local are left out on purpose: flows to them do not leave the host or the
/// link, so they are neither inside nor outside endpoints for exfiltration purposes.
pub const DEFAULT_INSIDE_NETS: [IpNet; 5] = [
    v4(10, 0, 0, 0, 8),
    v4(172, 16, 0, 0, 12),
    v4(192, 168, 0, 0, 16),
    v4(100, 64, 0, 0, 10),
    v6([0xfc00, 0, 0, 0], 7),
];

/// [`DEFAULT_INSIDE_NETS`] as a ready-to-query set.
pub fn default_inside() -> NetSet {
    NetSet::from_nets(DEFAULT_INSIDE_NETS)
}

/// Address blocks that never belong to a host on the public internet (IANA's IPv4 and IPv6
/// Special-Purpose Address Registries, RFC 6890, plus multicast and the reserved 240.0.0.0/4).
///
/// Geo lookups skip these: such an address has no country, and registry-derived databases do
/// carry stray records for some of them (the embedded one places 192.168.0.0/16 in AU).
pub const SPECIAL_PURPOSE_NETS: [IpNet; 23] = [
    v4(0, 0, 0, 0, 8),             // "this network", RFC 791
    v4(10, 0, 0, 0, 8),            // private, RFC 1918
    v4(100, 64, 0, 0, 10),         // shared address space, RFC 6598
    v4(127, 0, 0, 0, 8),           // loopback, RFC 1122
    v4(169, 254, 0, 0, 16),        // link-local, RFC 3927
    v4(172, 16, 0, 0, 12),         // private, RFC 1918
    v4(192, 0, 0, 0, 24),          // IETF protocol assignments, RFC 6890
    v4(192, 0, 2, 0, 24),          // documentation TEST-NET-1, RFC 5737
    v4(192, 168, 0, 0, 16),        // private, RFC 1918
    v4(198, 18, 0, 0, 15),         // benchmarking, RFC 2544
    v4(198, 51, 100, 0, 24),       // documentation TEST-NET-2, RFC 5737
    v4(203, 0, 113, 0, 24),        // documentation TEST-NET-3, RFC 5737
    v4(224, 0, 0, 0, 4),           // multicast, RFC 5771
    v4(240, 0, 0, 0, 4),           // reserved and limited broadcast, RFC 1112 and RFC 919
    v6([0, 0, 0, 0], 127),         // unspecified and loopback, RFC 4291
    v6([0x64, 0xff9b, 1, 0], 48),  // local-use IPv4/IPv6 translation, RFC 8215
    v6([0x100, 0, 0, 0], 64),      // discard-only, RFC 6666
    v6([0x2001, 0x2, 0, 0], 48),   // benchmarking, RFC 5180
    v6([0x2001, 0xdb8, 0, 0], 32), // documentation, RFC 3849
    v6([0x3fff, 0, 0, 0], 20),     // documentation, RFC 9637
    v6([0xfc00, 0, 0, 0], 7),      // unique local, RFC 4193
    v6([0xfe80, 0, 0, 0], 10),     // link-local, RFC 4291
    v6([0xff00, 0, 0, 0], 8),      // multicast, RFC 4291
];

/// Whether `addr` lies in one of [`SPECIAL_PURPOSE_NETS`] (`::ffff:a.b.c.d` tested as
/// `a.b.c.d`). A linear scan of 23 prefixes: cheap at one call per conversation, and `const`.
pub fn is_special_purpose(addr: IpAddr) -> bool {
    let addr = addr.to_canonical();
    SPECIAL_PURPOSE_NETS.iter().any(|net| net.contains(&addr))
}

/// `const` shorthand for the tables above.
const fn v4(a: u8, b: u8, c: u8, d: u8, prefix_len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix_len))
}

/// `const` shorthand for the tables above: the first four 16-bit groups, the rest zero.
const fn v6(groups: [u16; 4], prefix_len: u8) -> IpNet {
    let [a, b, c, d] = groups;
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0),
        prefix_len,
    ))
}

/// An immutable set of IPv4 and IPv6 networks with a fast, allocation-free membership test.
///
/// Build it with [`NetSet::from_nets`] or [`NetSet::parse_list`]; an empty set
/// ([`NetSet::default`]) contains nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NetSet {
    /// Sorted, disjoint, non-touching IPv4 ranges: the invariant `contains` relies on to look at
    /// a single candidate range.
    v4: Box<[RangeV4]>,
    /// Sorted, disjoint, non-touching IPv6 ranges, same invariant as `v4`.
    v6: Box<[RangeV6]>,
}

impl NetSet {
    /// Builds a set from networks in any order; overlaps and duplicates are merged and host bits
    /// below the prefix (as in `10.1.2.3/8`) are ignored.
    pub fn from_nets(nets: impl IntoIterator<Item = IpNet>) -> NetSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(net) => v4.push(range_v4(net)),
                IpNet::V6(net) => {
                    let range = range_v6(net);
                    // Keep lookups of `::ffff:a.b.c.d` (canonicalised to IPv4) consistent with a
                    // list that names them in IPv6 form.
                    if let Some(mapped) = mapped_part_as_v4(range) {
                        v4.push(mapped);
                    }
                    v6.push(range);
                }
            }
        }
        NetSet {
            v4: merge_ranges(v4).into_boxed_slice(),
            v6: merge_ranges(v6).into_boxed_slice(),
        }
    }

    /// Parses a threat-intel style list: one CIDR (`198.51.100.0/24`, `2001:db8::/32`) or bare
    /// address (`203.0.113.7`, a /32 or /128) per line.
    ///
    /// Blank lines are skipped, and everything from a `#` or `;` to the end of a line is a
    /// comment, so both `# header` lines and Spamhaus-style `192.0.2.0/24 ; SBL123` entries
    /// parse. Windows line endings are fine. The first bad line stops the parse: a list that is
    /// half wrong is more likely the wrong file than a typo worth skipping.
    pub fn parse_list(text: &str) -> Result<NetSet, ParseError> {
        let mut nets = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let value = match line.find(['#', ';']) {
                Some(comment_start) => &line[..comment_start],
                None => line,
            }
            .trim();
            if value.is_empty() {
                continue;
            }
            let net = parse_net(value).ok_or_else(|| ParseError::new(index + 1, value))?;
            nets.push(net);
        }
        Ok(NetSet::from_nets(nets))
    }

    /// Whether `addr` lies in any network of the set; `::ffff:a.b.c.d` is tested as `a.b.c.d`.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr.to_canonical() {
            IpAddr::V4(v4) => contains_in(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => contains_in(&self.v6, u128::from(v6)),
        }
    }

    /// Whether the set contains no address at all.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// How many disjoint ranges remain after merging: the size `contains` searches, and a useful
    /// number to log after loading a list.
    pub fn range_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

impl fmt::Debug for NetSet {
    /// Prints the merged ranges as `first-last`, which is what the set really holds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v4 = self
            .v4
            .iter()
            .map(|&(first, last)| RangeDebug(Ipv4Addr::from(first), Ipv4Addr::from(last)));
        let v6 = self
            .v6
            .iter()
            .map(|&(first, last)| RangeDebug(Ipv6Addr::from(first), Ipv6Addr::from(last)));
        f.debug_struct("NetSet")
            .field("v4", &DebugList(v4))
            .field("v6", &DebugList(v6))
            .finish()
    }
}

/// A line of a list that is neither a CIDR nor an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based, as editors show it, so the message points straight at the line to fix.
    line: usize,
    /// The offending text without its comment, cut to [`ParseError::MAX_VALUE_CHARS`] so a
    /// binary file fed in by mistake does not produce a megabyte-long message.
    value: String,
}

impl ParseError {
    /// The most characters of a bad value kept for the message.
    pub const MAX_VALUE_CHARS: usize = 64;

    fn new(line: usize, value: &str) -> ParseError {
        let value = match value.char_indices().nth(Self::MAX_VALUE_CHARS) {
            Some((cut, _)) => format!("{}...", &value[..cut]),
            None => value.to_owned(),
        };
        ParseError { line, value }
    }

    /// The 1-based line number of the bad entry.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The bad entry as written (comment removed, possibly shortened).
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: invalid network \"{}\": expected a CIDR like 192.0.2.0/24 or an address \
             like 2001:db8::1",
            self.line, self.value
        )
    }
}

impl std::error::Error for ParseError {}

/// Parses a CIDR, or a bare address as a single-address network.
fn parse_net(value: &str) -> Option<IpNet> {
    if let Ok(net) = value.parse::<IpNet>() {
        return Some(net);
    }
    value.parse::<IpAddr>().ok().map(IpNet::from)
}

/// The inclusive integer range an IPv4 network covers.
fn range_v4(net: Ipv4Net) -> RangeV4 {
    // `checked_shl` is `None` for a shift of 32, which is the /0 case: an all-zero mask.
    let mask = u32::MAX
        .checked_shl(32 - u32::from(net.prefix_len()))
        .unwrap_or(0);
    let first = u32::from(net.addr()) & mask;
    (first, first | !mask)
}

/// The inclusive integer range an IPv6 network covers.
fn range_v6(net: Ipv6Net) -> RangeV6 {
    // As in `range_v4`: a shift of 128 is the /0 case.
    let mask = u128::MAX
        .checked_shl(128 - u32::from(net.prefix_len()))
        .unwrap_or(0);
    let first = u128::from(net.addr()) & mask;
    (first, first | !mask)
}

/// The IPv4 addresses whose mapped form `::ffff:a.b.c.d` lies in `range`, if any.
fn mapped_part_as_v4((first, last): RangeV6) -> Option<RangeV4> {
    let first = first.max(V4_MAPPED_FIRST);
    let last = last.min(V4_MAPPED_LAST);
    if first > last {
        return None;
    }
    // Both ends are inside the mapped block, so their low 32 bits are the IPv4 address.
    Some((first as u32, last as u32))
}

/// Sorts ranges and merges the ones that overlap or touch, giving the invariant `contains_in`
/// needs: sorted by first address, each range ending before the next one starts.
fn merge_ranges<T: Copy + Ord + RangeBound>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        if let Some(previous) = merged.last_mut() {
            // Saturating: a range ending at the top address absorbs every later range.
            if first <= previous.1.saturating_next() {
                previous.1 = previous.1.max(last);
                continue;
            }
        }
        merged.push((first, last));
    }
    merged.shrink_to_fit();
    merged
}

/// Whether `value` falls in one of the sorted, disjoint `ranges`.
/// Sets of up to this many ranges (per family) are scanned rather than searched.
const LINEAR_UP_TO: usize = 8;

fn contains_in<T: Copy + Ord>(ranges: &[(T, T)], value: T) -> bool {
    // A few ranges (the inside networks, typically): compared all at once, independent
    // comparisons instead of a search's chain of dependent ones.
    if ranges.len() <= LINEAR_UP_TO {
        return ranges.iter().fold(false, |hit, &(first, last)| {
            hit | (first <= value && value <= last)
        });
    }
    // Index of the first range starting after `value`: only the range before it can hold it.
    let after = ranges.partition_point(|&(first, _)| first <= value);
    match after.checked_sub(1).and_then(|index| ranges.get(index)) {
        Some(&(_, last)) => value <= last,
        None => false,
    }
}

/// The two integer widths ranges are kept in; lets `merge_ranges` serve both families.
trait RangeBound {
    /// The next integer, or the same one at the top of the address space.
    fn saturating_next(self) -> Self;
}

impl RangeBound for u32 {
    fn saturating_next(self) -> u32 {
        self.saturating_add(1)
    }
}

impl RangeBound for u128 {
    fn saturating_next(self) -> u128 {
        self.saturating_add(1)
    }
}

/// Debug helper: a range of addresses shown as `first-last`.
struct RangeDebug<A>(A, A);

impl<A: fmt::Display> fmt::Debug for RangeDebug<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// Debug helper: formats an iterator as a list without collecting it.
struct DebugList<I>(I);

impl<I: Iterator<Item = D> + Clone, D: fmt::Debug> fmt::Debug for DebugList<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.clone()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn v4_range_edges() {
        let set = NetSet::from_nets([net("192.0.2.0/24")]);
        assert!(!set.contains(ip("192.0.1.255")));
        assert!(set.contains(ip("192.0.2.0")));
        assert!(set.contains(ip("192.0.2.255")));
        assert!(!set.contains(ip("192.0.3.0")));
    }

    #[test]
    fn scanned_and_searched_sets_agree_at_every_edge() {
        // Every other /24 of 198.51.0.0/16 from the first: LINEAR_UP_TO of them are
        // scanned, more are searched.
        for count in [1, LINEAR_UP_TO, LINEAR_UP_TO + 1, 40] {
            let nets = (0..count).map(|i| net(&format!("198.51.{}.0/24", 2 * i)));
            let set = NetSet::from_nets(nets);
            assert_eq!(set.range_count(), count);
            for third in 0..=2 * count + 1 {
                let inside = third % 2 == 0 && third < 2 * count;
                for fourth in [0, 128, 255] {
                    let address = ip(&format!("198.51.{third}.{fourth}"));
                    assert_eq!(set.contains(address), inside, "{count} ranges, {address}");
                }
            }
            assert!(!set.contains(ip("198.50.255.255")) && !set.contains(ip("10.0.0.1")));
        }
    }

    #[test]
    fn v6_range_edges() {
        let set = NetSet::from_nets([net("2001:db8:1::/48")]);
        assert!(!set.contains(ip("2001:db8:0:ffff:ffff:ffff:ffff:ffff")));
        assert!(set.contains(ip("2001:db8:1::")));
        assert!(set.contains(ip("2001:db8:1:ffff:ffff:ffff:ffff:ffff")));
        assert!(!set.contains(ip("2001:db8:2::")));
    }

    #[test]
    fn families_do_not_mix() {
        let set = NetSet::from_nets([net("0.0.0.0/0")]);
        assert!(set.contains(ip("255.255.255.255")));
        assert!(!set.contains(ip("::1")));
        let set = NetSet::from_nets([net("2001:db8::/32")]);
        assert!(!set.contains(ip("32.1.13.184"))); // 0x20010db8 as IPv4
    }

    #[test]
    fn whole_address_spaces_and_single_hosts() {
        let set = NetSet::from_nets([net("0.0.0.0/0"), net("::/0")]);
        assert!(set.contains(ip("0.0.0.0")));
        assert!(set.contains(ip("255.255.255.255")));
        assert!(set.contains(ip("::")));
        assert!(set.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert_eq!(set.range_count(), 2);

        let set = NetSet::from_nets([net("203.0.113.7/32"), net("2001:db8::7/128")]);
        assert!(set.contains(ip("203.0.113.7")));
        assert!(!set.contains(ip("203.0.113.6")));
        assert!(!set.contains(ip("203.0.113.8")));
        assert!(set.contains(ip("2001:db8::7")));
        assert!(!set.contains(ip("2001:db8::8")));
    }

    #[test]
    fn overlapping_touching_and_duplicate_ranges_merge() {
        let set = NetSet::from_nets([
            net("10.0.1.0/24"),
            net("10.0.0.0/16"), // covers the /24 above
            net("10.1.0.0/16"), // touches 10.0.0.0/16: 10.0.255.255 + 1
            net("10.1.0.0/16"), // duplicate
            net("10.3.0.0/16"), // gap at 10.2.0.0/16
        ]);
        assert_eq!(
            format!("{set:?}"),
            "NetSet { v4: [10.0.0.0-10.1.255.255, 10.3.0.0-10.3.255.255], v6: [] }"
        );
        assert!(set.contains(ip("10.0.255.255")));
        assert!(set.contains(ip("10.1.0.0")));
        assert!(!set.contains(ip("10.2.0.0")));
        assert!(!set.contains(ip("10.2.255.255")));
        assert!(set.contains(ip("10.3.0.0")));
        assert!(!set.contains(ip("10.4.0.0")));
    }

    #[test]
    fn ranges_at_the_top_of_the_space_merge_without_overflow() {
        let set = NetSet::from_nets([
            net("255.255.255.255/32"),
            net("255.0.0.0/8"),
            net("255.255.0.0/16"),
            net("ffff::/16"),
            net("ffff:ffff::/32"),
        ]);
        assert_eq!(set.range_count(), 2);
        assert!(set.contains(ip("255.255.255.255")));
        assert!(!set.contains(ip("254.255.255.255")));
        assert!(set.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    }

    #[test]
    fn host_bits_below_the_prefix_are_ignored() {
        let set = NetSet::from_nets([net("10.1.2.3/8")]);
        assert!(set.contains(ip("10.0.0.0")));
        assert!(set.contains(ip("10.255.255.255")));
    }

    #[test]
    fn v4_mapped_v6_matches_the_v4_form() {
        let set = NetSet::from_nets([net("198.51.100.0/24")]);
        assert!(set.contains(ip("::ffff:198.51.100.1")));
        assert!(!set.contains(ip("::ffff:198.51.101.1")));

        // Listed in mapped form, queried either way.
        let set = NetSet::from_nets([net("::ffff:198.51.100.0/120")]);
        assert!(set.contains(ip("198.51.100.255")));
        assert!(set.contains(ip("::ffff:198.51.100.255")));
        assert!(!set.contains(ip("198.51.101.0")));

        // An IPv6 network wider than the mapped block covers all of IPv4.
        let set = NetSet::from_nets([net("::/64")]);
        assert!(set.contains(ip("1.2.3.4")));
        assert!(set.contains(ip("::ffff:1.2.3.4")));
    }

    #[test]
    fn empty_set_contains_nothing() {
        let set = NetSet::default();
        assert!(set.is_empty());
        assert!(!set.contains(ip("10.0.0.1")));
        assert!(!set.contains(ip("::")));
        assert!(NetSet::parse_list("# nothing here\n\n").unwrap().is_empty());
    }

    #[test]
    fn default_inside_networks() {
        let inside = default_inside();
        for addr in [
            "10.0.0.0",
            "10.255.255.255",
            "172.16.0.0",
            "172.31.255.255",
            "192.168.0.0",
            "192.168.255.255",
            "100.64.0.0",
            "100.127.255.255",
            "fc00::",
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:10.1.1.1",
        ] {
            assert!(inside.contains(ip(addr)), "{addr} should be inside");
        }
        for addr in [
            "9.255.255.255",
            "11.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "8.8.8.8",
            "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe00::",
            "2001:db8::1",
            "127.0.0.1",
        ] {
            assert!(!inside.contains(ip(addr)), "{addr} should be outside");
        }
    }

    #[test]
    fn special_purpose_addresses() {
        for addr in [
            "0.0.0.0",
            "10.1.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.7",
            "224.0.0.251",
            "239.255.255.250",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:192.168.1.1",
            "64:ff9b:1::1",
            "100::1",
            "2001:2::1",
            "2001:db8::1",
            "3fff:fff::1",
            "fd00::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(is_special_purpose(ip(addr)), "{addr} is special-purpose");
        }
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "172.32.0.0",
            "192.0.1.255",
            "198.20.0.0",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "::2",
            "64:ff9b::808:808", // well-known NAT64 prefix: a real IPv4 host behind it
            "2001:4860:4860::8888",
            "2a02:6b8:a::a",
            "4000::",
            "fbff::1",
        ] {
            assert!(
                !is_special_purpose(ip(addr)),
                "{addr} is not special-purpose"
            );
        }
    }

    #[test]
    fn parse_list_accepts_cidrs_addresses_and_comments() {
        let text = "# feed: example bad hosts\r\n\
                    \r\n\
                    198.51.100.0/24\r\n\
                    203.0.113.7   # single host\r\n\
                    192.0.2.0/25 ; SBL123456\r\n\
                    \t2001:db8:bad::/48\n\
                    2001:db8::7\n";
        let set = NetSet::parse_list(text).unwrap();
        assert_eq!(set.range_count(), 5);
        assert!(set.contains(ip("198.51.100.200")));
        assert!(set.contains(ip("203.0.113.7")));
        assert!(!set.contains(ip("203.0.113.8")));
        assert!(set.contains(ip("192.0.2.127")));
        assert!(!set.contains(ip("192.0.2.128")));
        assert!(set.contains(ip("2001:db8:bad:1::1")));
        assert!(set.contains(ip("2001:db8::7")));
        assert!(!set.contains(ip("2001:db8::8")));
    }

    #[test]
    fn parse_list_names_the_bad_line_and_value() {
        let error =
            NetSet::parse_list("10.0.0.0/8\n\n# ok so far\n10.0.0.300/8 # typo\n").unwrap_err();
        assert_eq!(error.line(), 4);
        assert_eq!(error.value(), "10.0.0.300/8");
        assert_eq!(
            error.to_string(),
            "line 4: invalid network \"10.0.0.300/8\": expected a CIDR like 192.0.2.0/24 or an \
             address like 2001:db8::1"
        );

        let error = NetSet::parse_list("192.0.2.0/33").unwrap_err();
        assert_eq!((error.line(), error.value()), (1, "192.0.2.0/33"));

        let error = NetSet::parse_list("1.2.3.4\n1.2.3.4 5.6.7.8\n").unwrap_err();
        assert_eq!((error.line(), error.value()), (2, "1.2.3.4 5.6.7.8"));

        let error = NetSet::parse_list("evil.example.com").unwrap_err();
        assert_eq!((error.line(), error.value()), (1, "evil.example.com"));
    }

    #[test]
    fn parse_error_shortens_huge_values() {
        let long = "x".repeat(1000);
        let error = NetSet::parse_list(&long).unwrap_err();
        assert_eq!(error.value(), format!("{}...", "x".repeat(64)));
    }
}
