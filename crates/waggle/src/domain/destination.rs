//! Where deliveries may go (SPEC §6): http(s) URLs of bounded size, and, unless the
//! operator allows it, no private, loopback, link-local or unspecified addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use super::Invalid;

pub const MAX_URL_LEN: usize = 2048;

/// A webhook's destination, parsed once at the boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    /// Parses a destination URL. With `allow_private` false, an IP-literal host in a
    /// refused range is rejected here already; names are checked after resolution, at
    /// delivery time.
    pub fn parse(value: &str, allow_private: bool) -> Result<Self, Invalid> {
        let value = value.trim();
        if value.len() > MAX_URL_LEN {
            return Err(Invalid::new(
                "value_error.any_str.max_length",
                format!("URL must be at most {MAX_URL_LEN} characters"),
            ));
        }
        let url = Url::parse(value)
            .map_err(|e| Invalid::new("value_error.url", format!("invalid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Invalid::new(
                "value_error.url.scheme",
                "URL scheme must be http or https",
            ));
        }
        let Some(host) = url.host() else {
            return Err(Invalid::new("value_error.url.host", "URL must have a host"));
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Invalid::new(
                "value_error.url.userinfo",
                "URL must not contain credentials",
            ));
        }
        if !allow_private {
            if let Some(ip) = host_ip(&host) {
                if !is_public(ip) {
                    return Err(Invalid::new(
                        "value_error.url.private",
                        format!("destination {ip} is a private, loopback or link-local address"),
                    ));
                }
            }
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

/// Whether `ip` is a public unicast address a delivery may reach by default.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b) // NAT64 may reach private v4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_with_a_host() {
        assert!(WebhookUrl::parse("https://example.com/hook", false).is_ok());
        assert!(WebhookUrl::parse("http://example.com:8080/x?y=1", false).is_ok());
        assert_eq!(
            WebhookUrl::parse("ftp://example.com", false)
                .unwrap_err()
                .kind,
            "value_error.url.scheme"
        );
        assert!(WebhookUrl::parse("not a url", false).is_err());
        assert!(WebhookUrl::parse("https://user:pw@example.com", false).is_err());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(WebhookUrl::parse(&long, false).is_err());
    }

    #[test]
    fn private_literals_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1/",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://172.16.0.1/",
            "http://169.254.169.254/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://100.64.0.1/",
        ] {
            assert!(
                WebhookUrl::parse(url, false).is_err(),
                "{url} should be refused"
            );
            assert!(
                WebhookUrl::parse(url, true).is_ok(),
                "{url} should be allowed when private is"
            );
        }
        assert!(WebhookUrl::parse("http://93.184.216.34/", false).is_ok());
        assert!(WebhookUrl::parse("http://[2606:4700::1]/", false).is_ok());
    }
}
