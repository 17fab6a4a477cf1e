//! `allow.hosts`: what a plugin may connect to, in the shape of Spin's
//! `allowed_outbound_hosts`: `scheme://host:port`.
//!
//! - scheme: `http`, `https`, `tcp`, or `*` (any); left out means any.
//! - host: a name (`api.example.com`), every subdomain of one
//!   (`*.example.com`, HTTP only: a TCP connection carries no name to check),
//!   an address (`127.0.0.1`, `[::1]`), a CIDR (`10.0.0.0/8`, `[fd00::/8]`),
//!   or `*` (any public address).
//! - port: a number, a range (`8000-8999`) or `*`; left out, the scheme's
//!   default (80, 443). `tcp` and a missing scheme need one.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
    Tcp,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Tcp => "tcp",
        })
    }
}

/// Where a connection goes, as the plugin named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// A URI's host: bracketed IPv6, a dotted IPv4, or a name (lowercased,
    /// without a trailing dot). `2130706433` stays a name: it is not an
    /// address in Rust's or the rules' grammar, and the resolver is what
    /// would make it one.
    pub fn parse(text: &str) -> Host {
        let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(text.trim_end_matches('.').to_ascii_lowercase()),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Name(String),
    /// `*.example.com`, kept as `.example.com`.
    Suffix(String),
    Net(IpNet),
}

/// One entry of `allow.hosts`, parsed; shown as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HostRule {
    text: String,
    /// `None`: any scheme.
    scheme: Option<Scheme>,
    host: HostPattern,
    ports: (u16, u16),
}

impl TryFrom<String> for HostRule {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        HostRule::parse(&text)
    }
}

impl serde::Serialize for HostRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl HostRule {
    pub fn parse(text: &str) -> Result<HostRule, String> {
        let bad = |why: &str| format!("allow.hosts entry {text:?}: {why}");
        let (scheme, rest) = match text.split_once("://") {
            Some(("http", rest)) => (Some(Scheme::Http), rest),
            Some(("https", rest)) => (Some(Scheme::Https), rest),
            Some(("tcp", rest)) => (Some(Scheme::Tcp), rest),
            Some(("*", rest)) => (None, rest),
            Some((other, _)) => return Err(bad(&format!("unknown scheme {other:?} (http, https, tcp or *)"))),
            None => (None, text),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) && !is_cidr_authority(rest) {
            return Err(bad("only scheme://host:port, without a path, query or user"));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| bad("the host is empty"))?;
        let host = parse_host_pattern(host).map_err(|why| bad(&why))?;
        let ports = match (port, scheme) {
            (Some("*"), _) => (0, u16::MAX),
            (Some(port), _) => parse_ports(port).ok_or_else(|| bad(&format!("bad port {port:?}")))?,
            (None, Some(Scheme::Http)) => (80, 80),
            (None, Some(Scheme::Https)) => (443, 443),
            (None, _) => return Err(bad("needs a port (tcp and a rule without a scheme have no default)")),
        };
        if matches!(host, HostPattern::Suffix(_)) && scheme == Some(Scheme::Tcp) {
            return Err(bad(
                "a wildcard name cannot be checked on a TCP connection, which carries only an address",
            ));
        }
        Ok(HostRule {
            text: text.to_string(),
            scheme,
            host,
            ports,
        })
    }

    fn covers(&self, scheme: Scheme, port: u16) -> bool {
        self.scheme.is_none_or(|s| s == scheme) && (self.ports.0..=self.ports.1).contains(&port)
    }

    /// Whether a connection to `host` (as the plugin named it) is allowed by
    /// this rule's scheme, host and port; the addresses it resolves to are
    /// checked apart.
    pub fn matches(&self, scheme: Scheme, host: &Host, port: u16) -> bool {
        if !self.covers(scheme, port) {
            return false;
        }
        match (&self.host, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Name(n), Host::Name(h)) => n == h,
            (HostPattern::Suffix(s), Host::Name(h)) => scheme != Scheme::Tcp && h.ends_with(s.as_str()),
            (HostPattern::Net(net), Host::Ip(ip)) => net.contains(ip),
            _ => false,
        }
    }

    /// Whether this rule names `ip` itself (the address or a CIDR holding
    /// it): what it takes to reach an address that is refused otherwise.
    pub fn names_address(&self, scheme: Scheme, ip: IpAddr, port: u16) -> bool {
        self.covers(scheme, port) && matches!(&self.host, HostPattern::Net(net) if net.contains(&ip))
    }

    /// The exact name of a rule that applies to `scheme`/`port`: the names a
    /// plugin may look up and connect to over TCP.
    pub fn exact_name(&self, scheme: Scheme, port: Option<u16>) -> Option<&str> {
        let port_ok = port.is_none_or(|p| self.covers(scheme, p));
        let scheme_ok = self.scheme.is_none_or(|s| s == scheme);
        match &self.host {
            HostPattern::Name(name) if port_ok && scheme_ok => Some(name),
            _ => None,
        }
    }

    /// Whether everything this rule lets through, `ceiling` lets through
    /// too: an operator's ceiling over a tenant's rules. `*` covers names
    /// and wildcards (which reach public addresses only), not addresses or
    /// CIDRs, which can name private ones.
    pub fn within(&self, ceiling: &HostRule) -> bool {
        let scheme = match (ceiling.scheme, self.scheme) {
            (None, _) => true,
            (Some(c), Some(s)) => c == s,
            (Some(_), None) => false,
        };
        let ports = ceiling.ports.0 <= self.ports.0 && self.ports.1 <= ceiling.ports.1;
        let host = match (&ceiling.host, &self.host) {
            (HostPattern::Any, HostPattern::Any | HostPattern::Name(_) | HostPattern::Suffix(_)) => true,
            (HostPattern::Name(c), HostPattern::Name(s)) => c == s,
            (HostPattern::Suffix(c), HostPattern::Name(s) | HostPattern::Suffix(s)) => s.ends_with(c.as_str()),
            (HostPattern::Net(c), HostPattern::Net(s)) => c.contains(s),
            _ => false,
        };
        scheme && ports && host
    }

    pub fn is_any_host(&self) -> bool {
        self.host == HostPattern::Any
    }
}

fn is_cidr_authority(rest: &str) -> bool {
    let host = rest
        .strip_prefix('[')
        .map_or(rest, |r| r.split(']').next().unwrap_or(r));
    let host = if rest.starts_with('[') {
        host
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host.split_once('/')
        .is_some_and(|(ip, bits)| ip.parse::<IpAddr>().is_ok() && bits.parse::<u8>().is_ok())
}

/// `host:port`, `[v6]:port`, `[v6/len]`, `host`; a bare IPv6 without
/// brackets has no port.
fn split_host_port(rest: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else if rest.matches(':').count() > 1 {
        (rest, None)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

fn parse_host_pattern(host: &str) -> Result<HostPattern, String> {
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostPattern::Net(IpNet::from(ip)));
    }
    if host.contains('/') {
        let net: IpNet = host.parse().map_err(|_| format!("bad CIDR {host:?}"))?;
        if net.trunc() != net {
            return Err(format!(
                "CIDR {host:?} has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        return Ok(HostPattern::Net(net));
    }
    let (suffix, name) = match host.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, host),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(format!("{host:?} is not a host name, address, CIDR, *.domain or *"));
    }
    Ok(if suffix {
        HostPattern::Suffix(format!(".{name}"))
    } else {
        HostPattern::Name(name)
    })
}

fn parse_ports(text: &str) -> Option<(u16, u16)> {
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let (lo, hi) = (lo.parse().ok()?, hi.parse().ok()?);
    (lo <= hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> HostRule {
        HostRule::parse(text).unwrap()
    }

    fn name(n: &str) -> Host {
        Host::parse(n)
    }

    #[test]
    fn a_rule_within_a_ceiling() {
        let within = |r: &str, c: &str| rule(r).within(&rule(c));
        assert!(within("https://api.example.com", "https://*.example.com"));
        assert!(within("https://*.a.example.com", "https://*.example.com"));
        assert!(!within("https://example.org", "https://*.example.com"));
        assert!(within("https://api.example.com", "*://*:*"));
        assert!(within("tcp://10.1.2.3:5432", "tcp://10.0.0.0/8:5432"));
        // `*` is public addresses only: an address could be a private one.
        assert!(!within("tcp://10.1.2.3:5432", "*://*:*"));
        assert!(!within("http://api.example.com:8080", "http://api.example.com"));
        assert!(!within("*://api.example.com:443", "https://api.example.com"));
        assert!(within("https://api.example.com", "*://api.example.com:1-65535"));
    }

    #[test]
    fn scheme_host_and_default_port() {
        let r = rule("https://api.example.com");
        assert!(r.matches(Scheme::Https, &name("api.example.com"), 443));
        assert!(r.matches(Scheme::Https, &name("API.example.com."), 443));
        assert!(!r.matches(Scheme::Http, &name("api.example.com"), 443));
        assert!(!r.matches(Scheme::Https, &name("api.example.com"), 8443));
        assert!(!r.matches(Scheme::Https, &name("evil.api.example.com"), 443));
        assert!(rule("http://x.test").matches(Scheme::Http, &name("x.test"), 80));
    }

    #[test]
    fn wildcard_names_ports_and_ranges() {
        let r = rule("*.example.com:443");
        assert!(r.matches(Scheme::Https, &name("a.example.com"), 443));
        assert!(r.matches(Scheme::Http, &name("a.b.example.com"), 443));
        assert!(!r.matches(Scheme::Https, &name("example.com"), 443));
        assert!(!r.matches(Scheme::Https, &name("badexample.com"), 443));
        assert!(
            !r.matches(Scheme::Tcp, &name("a.example.com"), 443),
            "names cannot be checked on TCP"
        );
        let r = rule("http://h.test:8000-8010");
        assert!(r.matches(Scheme::Http, &name("h.test"), 8005));
        assert!(!r.matches(Scheme::Http, &name("h.test"), 8011));
        assert!(rule("tcp://db.internal:*").matches(Scheme::Tcp, &name("db.internal"), 1));
    }

    #[test]
    fn addresses_and_cidrs_match_addresses_only() {
        let r = rule("http://127.0.0.1:8123");
        assert!(r.matches(Scheme::Http, &name("127.0.0.1"), 8123));
        assert!(!r.matches(Scheme::Http, &name("localhost"), 8123));
        assert!(!r.matches(Scheme::Http, &name("[::ffff:127.0.0.1]"), 8123));
        assert!(!r.matches(Scheme::Http, &name("2130706433"), 8123));
        assert!(r.names_address(Scheme::Http, "127.0.0.1".parse().unwrap(), 8123));
        assert!(!r.names_address(Scheme::Http, "127.0.0.2".parse().unwrap(), 8123));
        let r = rule("tcp://10.0.0.0/8:5432");
        assert!(r.matches(Scheme::Tcp, &name("10.1.2.3"), 5432));
        assert!(r.names_address(Scheme::Tcp, "10.1.2.3".parse().unwrap(), 5432));
        let r = rule("https://[fd00::/8]:443");
        assert!(r.names_address(Scheme::Https, "fd12::1".parse().unwrap(), 443));
        assert!(rule("http://[::1]:80").matches(Scheme::Http, &name("[::1]"), 80));
        assert!(!rule("*://*:*").names_address(Scheme::Http, "127.0.0.1".parse().unwrap(), 80));
    }

    #[test]
    fn bad_rules_say_why() {
        for (text, why) in [
            ("ftp://x.test:21", "unknown scheme"),
            ("tcp://db.internal", "needs a port"),
            ("x.test", "needs a port"),
            ("http://x.test:99999", "bad port"),
            ("http://x.test:9-1", "bad port"),
            ("http://x.test/path", "without a path"),
            ("http://user@x.test", "without a path"),
            ("tcp://*.example.com:5432", "wildcard"),
            ("http://10.0.0.1/8:80", "host bits"),
            ("http://:80", "the host is empty"),
            ("http://a..b:80", "is not a host"),
        ] {
            let err = HostRule::parse(text).unwrap_err();
            assert!(err.contains(text) && err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn rules_deserialize_from_strings() {
        let rules: Vec<HostRule> = serde_json::from_str(r#"["https://a.test", "tcp://1.2.3.4:5"]"#).unwrap();
        assert_eq!(rules[1].to_string(), "tcp://1.2.3.4:5");
        assert!(serde_json::from_str::<Vec<HostRule>>(r#"["gopher://a"]"#).is_err());
    }
}
