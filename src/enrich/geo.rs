//! enrich/geo: turns a flow endpoint's address into its country and autonomous system, the facts
//! detectors use for "data left for an unusual country / network".
//!
//! Country answers come from MaxMind DB (`.mmdb`) files. A country database is always available
//! without configuration: the "geo-whois-asn-country" database (CC BY 4.0, data by the NRO and
//! the Regional Internet Registries; see `data/geoip/README.md`) is compiled into the binary with
//! `include_bytes!`, so a fresh install enriches flows with no download step and no file to lose.
//! Users with a MaxMind GeoIP2 / GeoLite2 Country (or City) database can put it in front of the
//! embedded one, or use it instead. ASNs need a user-given GeoLite2 / GeoIP2 ASN database.
//!
//! Both record layouts are understood, in one decoding pass that borrows the code straight from
//! the database bytes (no allocation per lookup):
//! - ip-location-db (the embedded database): `{ "country_code": "NL" }`
//! - MaxMind GeoIP2 / GeoLite2: `{ "country": { "iso_code": "NL" }, "registered_country": ... }`
//!
//! Lookups happen once per conversation rather than per packet, so a plain tree walk per call is
//! cheap enough and there is no cache to size, invalidate or lock. IPv4-mapped IPv6 addresses
//! (`::ffff:a.b.c.d`) are looked up as IPv4: the embedded database has no data under
//! `::ffff:0:0/96`. Special-purpose addresses (private, documentation, multicast, ...) are never
//! looked up: they have no country, whatever a database says. A lookup that fails (an IPv6
//! address in an IPv4-only database, a damaged record) is "unknown", never a panic, and the next
//! database gets its turn.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, bail};
use maxminddb::Reader;
use serde::Deserialize;

use super::netset::is_special_purpose;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoipConfig {
    /// MaxMind GeoIP2/GeoLite2 Country (or City) databases, consulted first.
    pub country_db: Vec<PathBuf>,
    /// A MaxMind ASN database, for destinations whose exporter sends no AS numbers.
    pub asn_db: Option<PathBuf>,
    /// Fall back to the embedded geo-whois-asn-country database.
    pub embedded: bool,
}

impl Default for GeoipConfig {
    fn default() -> Self {
        GeoipConfig {
            country_db: Vec::new(),
            asn_db: None,
            embedded: true,
        }
    }
}

/// The embedded country database; `scripts/refresh-geoip.sh` replaces it.
static EMBEDDED_COUNTRY_DB: &[u8] = include_bytes!("../../data/geoip/geo-whois-asn-country.mmdb");

/// The npm version of the embedded database, kept next to it by `scripts/refresh-geoip.sh` so
/// it cannot go stale when the file is refreshed. Worth logging at startup.
pub static EMBEDDED_COUNTRY_DB_VERSION: &str =
    include_str!("../../data/geoip/VERSION").trim_ascii_end();

/// The attribution CC BY 4.0 asks for wherever the embedded data is redistributed (it is, inside
/// every binary): print it with the version or licence information.
pub const EMBEDDED_COUNTRY_DB_ATTRIBUTION: &str = "country data: geo-whois-asn-country by \
     ip-location-db (sapics), from data by the Number Resource Organization (nro.net) and the \
     Regional Internet Registries, licensed CC BY 4.0";

/// An ISO 3166-1 alpha-2 country code such as `NL`: two uppercase ASCII letters.
///
/// `Copy` and two bytes wide so it can sit in per-conversation state for free; serialised as
/// the string `"NL"`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// The code for two ASCII letters in either case, or `None` for anything else.
    pub const fn from_ascii(letters: [u8; 2]) -> Option<CountryCode> {
        let [first, second] = letters;
        if first.is_ascii_alphabetic() && second.is_ascii_alphabetic() {
            Some(CountryCode([
                first.to_ascii_uppercase(),
                second.to_ascii_uppercase(),
            ]))
        } else {
            None
        }
    }

    /// Like [`CountryCode::from_ascii`] for a string; `None` unless it is exactly two letters.
    /// The non-allocating check database lookups use (`FromStr` keeps the bad input for its
    /// error message).
    pub fn from_letters(text: &str) -> Option<CountryCode> {
        match *text.as_bytes() {
            [first, second] => CountryCode::from_ascii([first, second]),
            _ => None,
        }
    }

    /// The code as a string slice, e.g. `"NL"`.
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters (the only way to build a `CountryCode`), so this is
        // always valid UTF-8; the fallback exists only to avoid a panic path.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The two uppercase ASCII bytes.
    pub const fn to_bytes(self) -> [u8; 2] {
        self.0
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CountryCode").field(&self.as_str()).finish()
    }
}

impl FromStr for CountryCode {
    type Err = ParseCountryCodeError;

    /// Accepts two ASCII letters in either case (`nl`, `NL`); surrounding whitespace is an
    /// error, since config values are expected to be exact.
    fn from_str(text: &str) -> Result<CountryCode, ParseCountryCodeError> {
        CountryCode::from_letters(text).ok_or_else(|| ParseCountryCodeError::new(text))
    }
}

impl serde::Serialize for CountryCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for CountryCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<CountryCode, D::Error> {
        struct CountryCodeVisitor;

        impl serde::de::Visitor<'_> for CountryCodeVisitor {
            type Value = CountryCode;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a two-letter country code like \"NL\"")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<CountryCode, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(CountryCodeVisitor)
    }
}

/// A string that is not a two-letter country code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseCountryCodeError {
    /// The rejected text, cut to a few characters so a wrong config value cannot flood a log.
    input: String,
}

impl ParseCountryCodeError {
    /// The most characters of the rejected text kept for the message.
    const MAX_INPUT_CHARS: usize = 16;

    fn new(text: &str) -> ParseCountryCodeError {
        let input = match text.char_indices().nth(Self::MAX_INPUT_CHARS) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text.to_owned(),
        };
        ParseCountryCodeError { input }
    }
}

impl fmt::Display for ParseCountryCodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid country code \"{}\": expected two letters (ISO 3166-1 alpha-2), like \"NL\"",
            self.input
        )
    }
}

impl std::error::Error for ParseCountryCodeError {}

/// The bytes behind a reader: borrowed for the embedded database, owned for a file read at
/// startup. One type for both keeps `GeoDb` non-generic.
type DbBytes = Cow<'static, [u8]>;

/// One country database: the embedded one or a user's MaxMind Country / City file.
#[derive(Debug)]
pub struct GeoDb {
    /// The opened database; lookups borrow strings straight out of its bytes.
    reader: Reader<DbBytes>,
    /// Where it came from, for log lines and error messages; `None` for the embedded database.
    path: Option<PathBuf>,
}

impl GeoDb {
    /// The country database compiled into the binary.
    pub fn embedded() -> anyhow::Result<GeoDb> {
        let reader = Reader::from_source(Cow::Borrowed(EMBEDDED_COUNTRY_DB))
            .context("cannot open the embedded country database")?;
        Ok(GeoDb { reader, path: None })
    }

    /// Reads a MaxMind Country (or City) database into memory.
    ///
    /// Fails, naming the path, if the file cannot be read, is not a MaxMind DB, or is an ASN
    /// database (an easy mix-up that would otherwise silently yield no countries).
    pub fn open(path: &Path) -> anyhow::Result<GeoDb> {
        let reader = open_reader(path, "country")?;
        let database_type = &reader.metadata().database_type;
        if database_type.to_ascii_lowercase().contains("asn") {
            bail!(
                "\"{}\" is an ASN database (database_type \"{database_type}\"), not a country \
                 database: give it as the ASN database instead",
                path.display()
            );
        }
        Ok(GeoDb {
            reader,
            path: Some(path.to_owned()),
        })
    }

    /// The country `addr` is located or registered in, if the database knows it.
    ///
    /// Special-purpose addresses ([`super::netset::SPECIAL_PURPOSE_NETS`]) are answered `None`
    /// without a lookup: the embedded database has stray records for some of them (it puts
    /// 172.16.0.0/12, 192.168.0.0/16 and two documentation /24s in AU, 2001:db8::/32 in JP),
    /// and a private address "in Australia" would make every LAN flow look like exfiltration.
    pub fn country(&self, addr: IpAddr) -> Option<CountryCode> {
        let addr = addr.to_canonical();
        if is_special_purpose(addr) {
            return None;
        }
        let lookup = self.reader.lookup(addr).ok()?;
        let record: CountryRecord<'_> = lookup.decode().ok()??;
        record.country_code()
    }

    /// The file this database was read from; `None` for the embedded one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The database's own name for its kind, e.g. `GeoLite2-Country`, or `country ipvAll` for the
    /// embedded one.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// When the database was built, in seconds since the Unix epoch: how stale the answers are.
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }
}

/// A MaxMind ASN database (GeoLite2-ASN, GeoIP2-ISP): address to autonomous system number.
#[derive(Debug)]
pub struct AsnDb {
    /// The opened database.
    reader: Reader<DbBytes>,
    /// The file it was read from, for log lines.
    path: PathBuf,
}

impl AsnDb {
    /// Reads a MaxMind ASN database into memory.
    ///
    /// Fails, naming the path, if the file cannot be read, is not a MaxMind DB, or is a country
    /// or city database given in the wrong place.
    pub fn open(path: &Path) -> anyhow::Result<AsnDb> {
        let reader = open_reader(path, "ASN")?;
        let database_type = &reader.metadata().database_type;
        let lowercase_type = database_type.to_ascii_lowercase();
        if lowercase_type.contains("country") || lowercase_type.contains("city") {
            bail!(
                "\"{}\" is a country database (database_type \"{database_type}\"), not an ASN \
                 database: give it as a country database instead",
                path.display()
            );
        }
        Ok(AsnDb {
            reader,
            path: path.to_owned(),
        })
    }

    /// The autonomous system that announces `addr`, if the database knows it.
    /// Special-purpose addresses have none, as in [`GeoDb::country`].
    pub fn asn(&self, addr: IpAddr) -> Option<u32> {
        let addr = addr.to_canonical();
        if is_special_purpose(addr) {
            return None;
        }
        let lookup = self.reader.lookup(addr).ok()?;
        let record: AsnRecord = lookup.decode().ok()??;
        record.autonomous_system_number
    }

    /// The file this database was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the database was built, in seconds since the Unix epoch.
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }
}

/// Which databases [`Geo::open`] uses: plain data, filled from config or the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoSources {
    /// MaxMind Country or City databases, consulted in this order before the embedded one:
    /// they are usually fresher and more precise than registry data.
    pub country_db_paths: Vec<PathBuf>,
    /// Whether the embedded database answers what the files above do not. `false` replaces it,
    /// for deployments that must use one vetted source only.
    pub embedded_country_fallback: bool,
    /// A MaxMind ASN database; without one [`Geo::asn`] always answers `None`.
    pub asn_db_path: Option<PathBuf>,
}

impl Default for GeoSources {
    /// Embedded country database only, no ASN: what works with no configuration.
    fn default() -> GeoSources {
        GeoSources {
            country_db_paths: Vec::new(),
            embedded_country_fallback: true,
            asn_db_path: None,
        }
    }
}

/// The geographic part of enrichment: country and ASN of an address.
///
/// Immutable once opened and `Send + Sync`; share it behind an `Arc`.
#[derive(Debug)]
pub struct Geo {
    /// Country databases in the order they are asked; the first that knows an address answers.
    country_dbs: Box<[GeoDb]>,
    /// The ASN database, if one was given.
    asn_db: Option<AsnDb>,
}

impl Geo {
    /// Country lookups from the embedded database alone, no ASN: the zero-configuration default.
    pub fn embedded() -> anyhow::Result<Geo> {
        Geo::open(&GeoSources::default())
    }

    /// Opens every database `sources` names. Any failure fails the whole open: running with a
    /// silently missing database would mislead every detector after it.
    pub fn open(sources: &GeoSources) -> anyhow::Result<Geo> {
        let mut country_dbs = Vec::with_capacity(sources.country_db_paths.len() + 1);
        for path in &sources.country_db_paths {
            country_dbs.push(GeoDb::open(path)?);
        }
        if sources.embedded_country_fallback {
            country_dbs.push(GeoDb::embedded()?);
        }
        if country_dbs.is_empty() {
            bail!(
                "no country database: the embedded one is turned off and no country database \
                 path is given (give a path or turn the embedded fallback back on)"
            );
        }
        let asn_db = match &sources.asn_db_path {
            Some(path) => Some(AsnDb::open(path)?),
            None => None,
        };
        Ok(Geo {
            country_dbs: country_dbs.into_boxed_slice(),
            asn_db,
        })
    }

    /// The country of `addr` from the first database that knows it, or `None` (private,
    /// reserved or unallocated addresses, or no database covers it).
    pub fn country(&self, addr: IpAddr) -> Option<CountryCode> {
        self.country_dbs.iter().find_map(|db| db.country(addr))
    }

    /// The autonomous system number of `addr`, if an ASN database was given and knows it.
    pub fn asn(&self, addr: IpAddr) -> Option<u32> {
        self.asn_db.as_ref()?.asn(addr)
    }

    /// The country databases in lookup order, for a startup log line.
    pub fn country_dbs(&self) -> &[GeoDb] {
        &self.country_dbs
    }

    /// The ASN database, if any, for a startup log line.
    pub fn asn_db(&self) -> Option<&AsnDb> {
        self.asn_db.as_ref()
    }
}

/// Reads and opens a database file; `kind` names it in the error ("country", "ASN").
fn open_reader(path: &Path, kind: &str) -> anyhow::Result<Reader<DbBytes>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read {kind} database \"{}\"", path.display()))?;
    Reader::from_source(Cow::Owned(bytes)).with_context(|| {
        format!(
            "\"{}\" is not a valid MaxMind DB (.mmdb) file",
            path.display()
        )
    })
}

/// The parts of a country record we read, borrowed from the database bytes. Other fields
/// (names, continent, location) are skipped without being decoded.
#[derive(Deserialize)]
struct CountryRecord<'a> {
    /// ip-location-db layout: the code at top level.
    #[serde(borrow)]
    country_code: Option<&'a str>,
    /// MaxMind layout: where the address is.
    #[serde(borrow)]
    country: Option<IsoCodeRecord<'a>>,
    /// MaxMind layout: where the network is registered; MaxMind leaves `country` out for some
    /// networks (anycast, satellite), and the registration country is the next best answer.
    #[serde(borrow)]
    registered_country: Option<IsoCodeRecord<'a>>,
}

/// The MaxMind `{ "iso_code": "NL", ... }` sub-record.
#[derive(Deserialize)]
struct IsoCodeRecord<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

impl CountryRecord<'_> {
    /// The best country code the record holds; a malformed code counts as none.
    fn country_code(&self) -> Option<CountryCode> {
        let text = self
            .country_code
            .or_else(|| self.country.as_ref()?.iso_code)
            .or_else(|| self.registered_country.as_ref()?.iso_code)?;
        CountryCode::from_letters(text)
    }
}

/// The part of a MaxMind ASN record we read.
#[derive(Deserialize)]
struct AsnRecord {
    autonomous_system_number: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn cc(text: &str) -> Option<CountryCode> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn embedded_db_known_countries() {
        let geo = Geo::embedded().unwrap();
        assert_eq!(geo.country(ip("5.255.255.77")), cc("RU")); // Yandex
        assert_eq!(geo.country(ip("39.156.66.10")), cc("CN")); // Baidu, China Mobile
        assert_eq!(geo.country(ip("185.220.101.45")), cc("DE")); // Tor exit hosting
        // Telegram's 91.108.56.0/22 is usually placed in NL or GB, but this build of the
        // database files all of 91.108.0.0/18 under RU; the test pins what the data says.
        assert_eq!(geo.country(ip("91.108.56.130")), cc("RU"));
        assert_eq!(geo.country(ip("2a02:6b8:a::a")), cc("RU")); // Yandex IPv6
        assert_eq!(geo.country(ip("8.8.8.8")), cc("US"));
        assert_eq!(geo.country(ip("2001:4860:4860::8888")), cc("US"));
        assert_eq!(geo.country(ip("1.1.1.1")), cc("AU")); // APNIC research prefix
    }

    #[test]
    fn embedded_db_has_no_country_for_private_or_reserved_addresses() {
        let geo = Geo::embedded().unwrap();
        for addr in [
            "10.1.1.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.1.1",
            "127.0.0.1",
            "203.0.113.7",
            "224.0.0.251",
            "::1",
            "fd00::1",
            "fe80::1",
            "2001:db8::1",
        ] {
            assert_eq!(geo.country(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn v4_mapped_v6_is_looked_up_as_v4() {
        let geo = Geo::embedded().unwrap();
        assert_eq!(geo.country(ip("::ffff:5.255.255.77")), cc("RU"));
        assert_eq!(geo.country(ip("::ffff:10.1.1.1")), None);
    }

    #[test]
    fn embedded_db_metadata() {
        let db = GeoDb::embedded().unwrap();
        assert_eq!(db.path(), None);
        assert_eq!(db.database_type(), "country ipvAll");
        assert!(db.build_epoch() > 1_700_000_000); // after November 2023
        assert!(EMBEDDED_COUNTRY_DB_VERSION.starts_with("2."));
        assert!(!EMBEDDED_COUNTRY_DB_VERSION.ends_with('\n'));
    }

    #[test]
    fn geo_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Geo>();
        assert_send_sync::<CountryCode>();
        assert_eq!(std::mem::size_of::<CountryCode>(), 2);
    }

    #[test]
    fn no_asn_without_an_asn_db() {
        let geo = Geo::embedded().unwrap();
        assert_eq!(geo.asn(ip("8.8.8.8")), None);
        assert!(geo.asn_db().is_none());
    }

    #[test]
    fn country_code_parse_and_display() {
        let nl: CountryCode = "NL".parse().unwrap();
        assert_eq!(nl.to_bytes(), *b"NL");
        assert_eq!(nl.to_string(), "NL");
        assert_eq!(format!("{nl:?}"), "CountryCode(\"NL\")");
        assert_eq!("nl".parse::<CountryCode>().unwrap(), nl);
        assert_eq!("nL".parse::<CountryCode>().unwrap(), nl);
        assert_eq!(CountryCode::from_ascii(*b"nl"), Some(nl));
        assert_eq!(CountryCode::from_ascii(*b"n1"), None);

        for bad in ["", "N", "NLD", "N1", " NL", "N-", "ñl", "🇳🇱"] {
            assert!(bad.parse::<CountryCode>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "NLD".parse::<CountryCode>().unwrap_err().to_string(),
            "invalid country code \"NLD\": expected two letters (ISO 3166-1 alpha-2), like \"NL\""
        );
        let long = "Netherlands, the country"
            .parse::<CountryCode>()
            .unwrap_err();
        assert_eq!(
            long.to_string(),
            "invalid country code \"Netherlands, the...\": expected two letters (ISO 3166-1 \
             alpha-2), like \"NL\""
        );
    }

    #[test]
    fn country_code_serde_as_string() {
        let nl: CountryCode = "NL".parse().unwrap();
        assert_eq!(serde_json::to_string(&nl).unwrap(), "\"NL\"");
        assert_eq!(serde_json::from_str::<CountryCode>("\"nl\"").unwrap(), nl);
        let error = serde_json::from_str::<CountryCode>("\"NLD\"").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid country code \"NLD\": expected two letters (ISO 3166-1 alpha-2), like \
             \"NL\" at line 1 column 5"
        );
        let error = serde_json::from_str::<CountryCode>("31").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid type: integer `31`, expected a two-letter country code like \"NL\" at line 1 \
             column 2"
        );
    }

    #[test]
    fn both_record_layouts_give_a_country() {
        let code = |json: &str| {
            serde_json::from_str::<CountryRecord<'_>>(json)
                .unwrap()
                .country_code()
        };
        // ip-location-db
        assert_eq!(code(r#"{"country_code":"NL"}"#), cc("NL"));
        // MaxMind GeoIP2/GeoLite2 Country, with the fields we skip
        assert_eq!(
            code(
                r#"{"continent":{"code":"EU","names":{"en":"Europe"}},
                    "country":{"geoname_id":2750405,"is_in_european_union":true,
                               "iso_code":"NL","names":{"en":"Netherlands"}},
                    "registered_country":{"iso_code":"DE"}}"#
            ),
            cc("NL")
        );
        // MaxMind record without `country`: fall back to the registration country
        assert_eq!(
            code(r#"{"registered_country":{"iso_code":"GB"}}"#),
            cc("GB")
        );
        // Nothing usable
        assert_eq!(code(r#"{"continent":{"code":"EU"}}"#), None);
        assert_eq!(code(r#"{"country_code":"N1"}"#), None);
        assert_eq!(code(r#"{"country":{"names":{"en":"Europe"}}}"#), None);
    }

    #[test]
    fn missing_user_db_is_a_clear_error() {
        let sources = GeoSources {
            country_db_paths: vec![PathBuf::from("/nonexistent/GeoLite2-Country.mmdb")],
            ..GeoSources::default()
        };
        let error = Geo::open(&sources).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "cannot read country database \"/nonexistent/GeoLite2-Country.mmdb\": No such file \
             or directory (os error 2)"
        );

        let sources = GeoSources {
            asn_db_path: Some(PathBuf::from("/nonexistent/GeoLite2-ASN.mmdb")),
            ..GeoSources::default()
        };
        let error = Geo::open(&sources).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "cannot read ASN database \"/nonexistent/GeoLite2-ASN.mmdb\": No such file or \
             directory (os error 2)"
        );
    }

    #[test]
    fn a_file_that_is_not_an_mmdb_is_a_clear_error() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/geoip/NRO_LICENSE"
        ));
        let error = GeoDb::open(path).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "\"{}\" is not a valid MaxMind DB (.mmdb) file",
                path.display()
            )
        );
    }

    #[test]
    fn no_country_db_at_all_is_an_error() {
        let sources = GeoSources {
            embedded_country_fallback: false,
            ..GeoSources::default()
        };
        let error = Geo::open(&sources).unwrap_err();
        assert!(error.to_string().starts_with("no country database: "));
    }

    /// Test fixtures: tiny MaxMind DB files in MaxMind's own layouts, written by hand, so the
    /// user-database paths are tested without shipping a MaxMind database.
    mod fixture {
        use std::path::PathBuf;

        /// A value in the MaxMind DB data format (spec section "Data Section"); only what the
        /// fixtures need.
        pub enum Value<'a> {
            Str(&'a str),
            U16(u16),
            U32(u32),
            U64(u64),
            Map(Vec<(&'a str, Value<'a>)>),
            Array(Vec<Value<'a>>),
        }

        impl Value<'_> {
            fn encode(&self, out: &mut Vec<u8>) {
                match self {
                    Value::Str(text) => {
                        match text.len() {
                            size @ 0..29 => out.push(0x40 | size as u8), // type 2, size
                            size @ 29..285 => {
                                out.push(0x40 | 29); // type 2, size in the next byte
                                out.push((size - 29) as u8);
                            }
                            size => panic!("fixture string of {size} bytes is too long"),
                        }
                        out.extend_from_slice(text.as_bytes());
                    }
                    Value::U16(value) => {
                        out.push(0xa2); // type 5, 2 bytes
                        out.extend_from_slice(&value.to_be_bytes());
                    }
                    Value::U32(value) => {
                        out.push(0xc4); // type 6, 4 bytes
                        out.extend_from_slice(&value.to_be_bytes());
                    }
                    Value::U64(value) => {
                        out.push(0x08); // extended type, 8 bytes
                        out.push(9 - 7); // type 9
                        out.extend_from_slice(&value.to_be_bytes());
                    }
                    Value::Map(entries) => {
                        assert!(entries.len() < 29);
                        out.push(0xe0 | entries.len() as u8); // type 7, size
                        for (key, value) in entries {
                            Value::Str(key).encode(out);
                            value.encode(out);
                        }
                    }
                    Value::Array(items) => {
                        assert!(items.len() < 29);
                        out.push(items.len() as u8); // extended type, size
                        out.push(11 - 7); // type 11
                        for item in items {
                            item.encode(out);
                        }
                    }
                }
            }
        }

        /// A database with one record stored at one IPv4 network (`ip_version` 4, 24-bit
        /// records), everything else empty.
        pub fn mmdb_v4(
            database_type: &str,
            network: [u8; 4],
            prefix_len: u32,
            record: Value<'_>,
        ) -> Vec<u8> {
            let node_count = prefix_len;
            let address = u32::from_be_bytes(network);
            let empty = node_count;
            let data_pointer = node_count + 16; // data section offset 0
            let mut out = Vec::new();
            // Search tree: node i follows bit i of the network; the other branch is empty.
            for depth in 0..prefix_len {
                let bit = (address >> (31 - depth)) & 1;
                let next = if depth + 1 == prefix_len {
                    data_pointer
                } else {
                    depth + 1
                };
                let (left, right) = if bit == 0 {
                    (next, empty)
                } else {
                    (empty, next)
                };
                out.extend_from_slice(&left.to_be_bytes()[1..]);
                out.extend_from_slice(&right.to_be_bytes()[1..]);
            }
            out.extend_from_slice(&[0; 16]); // data section separator
            record.encode(&mut out);
            out.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
            Value::Map(vec![
                ("binary_format_major_version", Value::U16(2)),
                ("binary_format_minor_version", Value::U16(0)),
                ("build_epoch", Value::U64(1_700_000_000)),
                ("database_type", Value::Str(database_type)),
                (
                    "description",
                    Value::Map(vec![("en", Value::Str("exflow test"))]),
                ),
                ("ip_version", Value::U16(4)),
                ("languages", Value::Array(vec![Value::Str("en")])),
                ("node_count", Value::U32(node_count)),
                ("record_size", Value::U16(24)),
            ])
            .encode(&mut out);
            out
        }

        /// Writes `bytes` to a file unique to this process and test, removed on drop.
        pub struct TempFile(pub PathBuf);

        impl TempFile {
            pub fn new(name: &str, bytes: &[u8]) -> TempFile {
                let path = std::env::temp_dir()
                    .join(format!("exflow-geo-{}-{name}.mmdb", std::process::id()));
                std::fs::write(&path, bytes).unwrap();
                TempFile(path)
            }
        }

        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    use fixture::{TempFile, Value, mmdb_v4};

    /// A GeoLite2-Country-style database that (wrongly, on purpose) puts 8.8.8.0/24 in NL.
    fn maxmind_country_db() -> Vec<u8> {
        mmdb_v4(
            "GeoLite2-Country",
            [8, 8, 8, 0],
            24,
            Value::Map(vec![
                (
                    "country",
                    Value::Map(vec![
                        ("iso_code", Value::Str("NL")),
                        ("names", Value::Map(vec![("en", Value::Str("Netherlands"))])),
                    ]),
                ),
                (
                    "registered_country",
                    Value::Map(vec![("iso_code", Value::Str("US"))]),
                ),
            ]),
        )
    }

    /// A GeoLite2-ASN-style database: 8.8.8.0/24 is AS15169.
    fn maxmind_asn_db() -> Vec<u8> {
        mmdb_v4(
            "GeoLite2-ASN",
            [8, 8, 8, 0],
            24,
            Value::Map(vec![
                ("autonomous_system_number", Value::U32(15169)),
                ("autonomous_system_organization", Value::Str("GOOGLE")),
            ]),
        )
    }

    #[test]
    fn user_country_db_is_asked_first_and_embedded_fills_in() {
        let user_db = TempFile::new("country-first", &maxmind_country_db());
        let geo = Geo::open(&GeoSources {
            country_db_paths: vec![user_db.0.clone()],
            ..GeoSources::default()
        })
        .unwrap();
        assert_eq!(geo.country_dbs().len(), 2);
        assert_eq!(geo.country_dbs()[0].path(), Some(user_db.0.as_path()));
        assert_eq!(geo.country_dbs()[0].database_type(), "GeoLite2-Country");
        assert_eq!(geo.country_dbs()[0].build_epoch(), 1_700_000_000);
        assert_eq!(geo.country(ip("8.8.8.8")), cc("NL")); // user db wins
        assert_eq!(geo.country(ip("::ffff:8.8.8.255")), cc("NL"));
        assert_eq!(geo.country(ip("8.8.9.0")), cc("US")); // embedded fills in
        assert_eq!(geo.country(ip("5.255.255.77")), cc("RU"));
        // IPv6 cannot be looked up in the IPv4-only user db: the embedded one answers.
        assert_eq!(geo.country(ip("2a02:6b8:a::a")), cc("RU"));
    }

    #[test]
    fn user_country_db_can_replace_the_embedded_one() {
        let user_db = TempFile::new("country-only", &maxmind_country_db());
        let geo = Geo::open(&GeoSources {
            country_db_paths: vec![user_db.0.clone()],
            embedded_country_fallback: false,
            asn_db_path: None,
        })
        .unwrap();
        assert_eq!(geo.country_dbs().len(), 1);
        assert_eq!(geo.country(ip("8.8.8.8")), cc("NL"));
        assert_eq!(geo.country(ip("8.8.9.0")), None);
        assert_eq!(geo.country(ip("2a02:6b8:a::a")), None);
    }

    #[test]
    fn asn_db_gives_asns() {
        let asn_db = TempFile::new("asn", &maxmind_asn_db());
        let geo = Geo::open(&GeoSources {
            asn_db_path: Some(asn_db.0.clone()),
            ..GeoSources::default()
        })
        .unwrap();
        assert_eq!(geo.asn(ip("8.8.8.8")), Some(15169));
        assert_eq!(geo.asn(ip("8.8.8.255")), Some(15169));
        assert_eq!(geo.asn(ip("::ffff:8.8.8.8")), Some(15169));
        assert_eq!(geo.asn(ip("8.8.9.0")), None);
        assert_eq!(geo.asn(ip("2001:4860:4860::8888")), None); // IPv4-only db
        assert_eq!(geo.asn_db().map(AsnDb::path), Some(asn_db.0.as_path()));
        assert_eq!(geo.country(ip("8.8.8.8")), cc("US")); // countries still embedded
    }

    #[test]
    fn databases_given_in_the_wrong_place_are_rejected() {
        let asn_db = TempFile::new("asn-as-country", &maxmind_asn_db());
        let error = GeoDb::open(&asn_db.0).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "\"{}\" is an ASN database (database_type \"GeoLite2-ASN\"), not a country \
                 database: give it as the ASN database instead",
                asn_db.0.display()
            )
        );

        let country_db = TempFile::new("country-as-asn", &maxmind_country_db());
        let error = AsnDb::open(&country_db.0).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "\"{}\" is a country database (database_type \"GeoLite2-Country\"), not an ASN \
                 database: give it as a country database instead",
                country_db.0.display()
            )
        );
    }
}
