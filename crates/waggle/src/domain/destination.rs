//! Where deliveries may go (SPEC §6): http(s) URLs of bounded size without credentials,
//! and, unless the operator allows them, no address of the platform's own networks:
//! loopback, private, carrier-grade NAT, link-local (cloud metadata), multicast,
//! reserved and documentation ranges, and the IPv6 forms that wrap one of those
//! (IPv4-mapped and -compatible, NAT64, 6to4).
//!
//! The check is made on addresses, never on spellings: `url` parses every IPv4 spelling
//! of the URL standard (`2130706434`, `0177.0.0.1`, `0x7f000001`, `127.1`) into the
//! address it means, and names are checked on what they resolve to, at delivery time,
//! by the sender, which connects to the address it checked.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

use super::Invalid;

pub const MAX_URL_LEN: usize = 2048;

/// Which addresses deliveries may reach: public unicast ones, and those the operator
/// allows, every one (`--allow-private-destinations`) or some ranges
/// (`--allow-destination CIDR`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    pub allow_private: bool,
    pub allowed: Vec<IpNet>,
}

/// An address a delivery may not reach, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub ip: IpAddr,
    /// The refused range it falls in, in words.
    pub range: &'static str,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "destination {} is a {} address, refused unless the operator allows it",
            self.ip, self.range
        )
    }
}

impl DestinationPolicy {
    /// Every address allowed: for tests and local development.
    pub fn any() -> Self {
        Self {
            allow_private: true,
            allowed: Vec::new(),
        }
    }

    /// Whether a delivery may connect to `ip`. The allow-list is matched against the
    /// address itself and, for an IPv4-mapped IPv6 address, the IPv4 one it names.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.allow_private {
            return Ok(());
        }
        let Some(range) = refused_range(ip) else {
            return Ok(());
        };
        let canonical = ip.to_canonical();
        if self
            .allowed
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
        {
            return Ok(());
        }
        Err(Refused { ip, range })
    }
}

/// A webhook's destination, parsed once at the boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    /// Parses a destination URL and refuses an IP-literal host that `policy` refuses;
    /// names are checked after resolution, at delivery time.
    pub fn parse(value: &str, policy: &DestinationPolicy) -> Result<Self, Invalid> {
        let url = Self::parse_syntax(value)?;
        if let Some(ip) = url.0.host().as_ref().and_then(host_ip) {
            policy
                .check(ip)
                .map_err(|refused| Invalid::new("value_error.url.private", refused.to_string()))?;
        }
        Ok(url)
    }

    /// Parses a destination URL without looking at its address: what Test URL takes,
    /// which reports a refused address as its outcome rather than as invalid input.
    pub fn parse_syntax(value: &str) -> Result<Self, Invalid> {
        // Measured as given, as the OpenAPI document's maxLength is.
        if value.len() > MAX_URL_LEN {
            return Err(Invalid::new(
                "value_error.any_str.max_length",
                format!("URL must be at most {MAX_URL_LEN} characters"),
            ));
        }
        let url = Url::parse(value.trim())
            .map_err(|e| Invalid::new("value_error.url", format!("invalid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Invalid::new(
                "value_error.url.scheme",
                "URL scheme must be http or https",
            ));
        }
        if url.host().is_none() {
            return Err(Invalid::new("value_error.url.host", "URL must have a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Invalid::new(
                "value_error.url.userinfo",
                "URL must not contain credentials",
            ));
        }
        if url.port() == Some(0) {
            return Err(Invalid::new(
                "value_error.url.port",
                "URL port must be between 1 and 65535",
            ));
        }
        Ok(Self(url))
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// The IP address of a host written as an IP literal.
pub fn host_ip(host: &Host<&str>) -> Option<IpAddr> {
    match host {
        Host::Ipv4(ip) => Some(IpAddr::V4(*ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(*ip)),
        Host::Domain(_) => None,
    }
}

/// The addresses of `localhost` and the names under it, with or without the final dot:
/// loopback by definition (RFC 6761), whatever a resolver would answer.
pub fn localhost_addresses(host: &str) -> Option<[IpAddr; 2]> {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    (name == "localhost" || name.ends_with(".localhost"))
        .then_some([Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()])
}

/// The range `ip` falls in that deliveries may not reach by default; `None` for a
/// public unicast address.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_broadcast() => "broadcast",
        (0, ..) => "unspecified (\"this network\")",
        (127, ..) => "loopback",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "private",
        (100, 64..=127, _) => "carrier-grade NAT",
        (169, 254, _) => "link-local (cloud metadata)",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, ..) => "multicast",
        (240.., ..) => "reserved",
        _ => return None,
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // The IPv4 address in bits `from..from + 32`.
    let v4_at = |from: usize| {
        let bits = u128::from(ip) >> (96 - from);
        Ipv4Addr::from(bits as u32)
    };
    let wrapped = |v4: Ipv4Addr, what: &'static str| refused_v4(v4).map(|_| what);
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return wrapped(v4, "IPv4-mapped non-public");
    }
    Some(match s {
        // ::a.b.c.d, the deprecated IPv4-compatible form.
        [0, 0, 0, 0, 0, 0, _, _] => return wrapped(v4_at(96), "IPv4-compatible non-public"),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => return wrapped(v4_at(96), "NAT64 non-public"),
        [0x64, 0xff9b, 1, ..] => "NAT64 (local use)",
        [0x2002, ..] => return wrapped(v4_at(16), "6to4 non-public"),
        [0x0100, 0, 0, 0, ..] => "discard-only",
        [0x2001, 0x0db8, ..] => "documentation",
        [0x3fff, b, ..] if b < 0x1000 => "documentation",
        // Teredo, benchmarking and ORCHID among them.
        [0x2001, b, ..] if b < 0x0200 => "IETF protocol assignment",
        [a, ..] if a & 0xfe00 == 0xfc00 => "unique local (ULA)",
        [a, ..] if a & 0xffc0 == 0xfe80 => "link-local",
        [a, ..] if a & 0xffc0 == 0xfec0 => "site-local",
        [a, ..] if a & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> DestinationPolicy {
        DestinationPolicy::default()
    }

    #[test]
    fn only_http_and_https_with_a_host_a_port_and_no_credentials() {
        assert!(WebhookUrl::parse("https://example.com/hook", &refused()).is_ok());
        assert!(WebhookUrl::parse("http://example.com:8080/x?y=1", &refused()).is_ok());
        for (url, kind) in [
            ("ftp://example.com", "value_error.url.scheme"),
            ("file:///etc/passwd", "value_error.url.scheme"),
            ("gopher://example.com", "value_error.url.scheme"),
            ("not a url", "value_error.url"),
            ("https://user:pw@example.com", "value_error.url.userinfo"),
            ("http://a@example.com/", "value_error.url.userinfo"),
            ("http://:pw@example.com/", "value_error.url.userinfo"),
            ("http://example.com:0/", "value_error.url.port"),
            ("http://example.com:65536/", "value_error.url"),
            ("http://example.com:99999/", "value_error.url"),
            ("http://exa mple.com/", "value_error.url"),
            ("http://[::1/", "value_error.url"),
            ("http://[fe80::1%25eth0]/", "value_error.url"),
        ] {
            assert_eq!(
                WebhookUrl::parse(url, &DestinationPolicy::any())
                    .unwrap_err()
                    .kind,
                kind,
                "{url}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(WebhookUrl::parse(&long, &refused()).is_err());
    }

    #[test]
    fn every_refused_range_is_refused_and_public_addresses_are_not() {
        for (ip, range) in [
            ("0.0.0.0", "unspecified (\"this network\")"),
            ("0.1.2.3", "unspecified (\"this network\")"),
            ("127.0.0.1", "loopback"),
            ("127.0.0.2", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("192.0.0.8", "IETF protocol assignment"),
            ("192.0.2.1", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.2", "IPv4-mapped non-public"),
            ("::ffff:10.0.0.1", "IPv4-mapped non-public"),
            ("::ffff:169.254.169.254", "IPv4-mapped non-public"),
            ("::127.0.0.2", "IPv4-compatible non-public"),
            ("::10.0.0.1", "IPv4-compatible non-public"),
            ("64:ff9b::7f00:2", "NAT64 non-public"),
            ("64:ff9b::a9fe:a9fe", "NAT64 non-public"),
            ("64:ff9b:1::1", "NAT64 (local use)"),
            ("2002:7f00:2::1", "6to4 non-public"),
            ("2002:a9fe:a9fe::", "6to4 non-public"),
            ("2002:c0a8:101::", "6to4 non-public"),
            ("100::1", "discard-only"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("2001::1", "IETF protocol assignment"),
            ("2001:2::1", "IETF protocol assignment"),
            ("fc00::1", "unique local (ULA)"),
            ("fd00:ec2::254", "unique local (ULA)"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(refused_range(ip), Some(range), "{ip}");
            assert_eq!(refused().check(ip), Err(Refused { ip, range }), "{ip}");
            assert!(DestinationPolicy::any().check(ip).is_ok(), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450::1",
            "::ffff:93.184.216.34",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(refused_range(ip), None, "{ip}");
            assert!(refused().check(ip).is_ok(), "{ip}");
        }
    }

    #[test]
    fn every_spelling_of_a_refused_address_is_refused() {
        for url in [
            "http://127.0.0.2/",
            "http://2130706434/",
            "http://0177.0.0.2/",
            "http://0x7f000002/",
            "http://0x7f.0.0.2/",
            "http://127.2/",
            "http://127.0.2/",
            "http://0/",
            "http://0.0.0.0:8080/",
            "http://[::]/",
            "http://[::1]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://[::ffff:127.0.0.2]/",
            "http://[::ffff:7f00:2]/",
            "http://[::127.0.0.2]/",
            "http://[64:ff9b::127.0.0.2]/",
            "http://[2002:7f00:2::]/",
            "http://[fd00:ec2::254]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/",
            "http://0xa9fea9fe/",
            "http://0251.0376.0251.0376/",
            "http://10.1/",
            "http://0xa.1/",
            "http://100.64.0.1/",
            "https://192.168.0.1:8443/",
            "http://[fe80::1]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
        ] {
            let refused = WebhookUrl::parse(url, &refused()).unwrap_err();
            assert_eq!(refused.kind, "value_error.url.private", "{url}");
            assert!(
                WebhookUrl::parse(url, &DestinationPolicy::any()).is_ok(),
                "{url} should be allowed when private destinations are"
            );
        }
        assert!(WebhookUrl::parse("http://93.184.216.34/", &refused()).is_ok());
        assert!(WebhookUrl::parse("http://[2606:4700::1]/", &refused()).is_ok());
        // Names are checked on what they resolve to, when delivering; localhost's
        // names resolve to loopback without asking anyone.
        for name in [
            "http://localhost./",
            "http://LocalHost/",
            "http://a.localhost./",
        ] {
            let url = WebhookUrl::parse(name, &refused()).unwrap();
            let Some(Host::Domain(host)) = url.as_url().host() else {
                panic!("{name} is a name");
            };
            let addresses = localhost_addresses(host).expect(name);
            assert!(addresses
                .iter()
                .all(|ip| refused_range(*ip) == Some("loopback")));
        }
        assert_eq!(localhost_addresses("localhost.example.com"), None);
        assert_eq!(localhost_addresses("notlocalhost"), None);
    }

    #[test]
    fn the_allow_list_admits_its_ranges_whatever_the_spelling_and_nothing_else() {
        let policy = DestinationPolicy {
            allow_private: false,
            allowed: vec![
                "127.0.0.1/32".parse().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
            ],
        };
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f000001/",
            "http://127.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://10.1.2.3/",
        ] {
            assert!(WebhookUrl::parse(url, &policy).is_ok(), "{url}");
        }
        for url in [
            "http://127.0.0.2/",
            "http://2130706434/",
            "http://[::ffff:127.0.0.2]/",
            "http://[::1]/",
            "http://10.2.0.1/",
            "http://169.254.169.254/",
            // NAT64 and 6to4 forms of an allowed address are other addresses.
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
        ] {
            assert_eq!(
                WebhookUrl::parse(url, &policy).unwrap_err().kind,
                "value_error.url.private",
                "{url}"
            );
        }
    }
}
