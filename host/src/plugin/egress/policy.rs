//! The decision, made once per connection: which rule allows the target,
//! what its name resolves to (once), and which of those addresses may be
//! reached. HTTP and TCP both come here.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::address;
use super::secrets::Secret;
use crate::plugin::grants::{Host, HostRule, NetworkLimits, Scheme};

/// A refused connection or lookup, as the plugin and the log see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress denied: {target}: {reason}")]
pub struct Denied {
    pub target: String,
    pub reason: String,
}

/// Everything one plugin's grants say about the network.
#[derive(Debug)]
pub struct Policy {
    pub plugin: String,
    pub rules: Vec<HostRule>,
    pub secrets: Vec<Secret>,
    pub limits: NetworkLimits,
}

impl Policy {
    fn rule_list(&self) -> String {
        if self.rules.is_empty() {
            return "allow.hosts is empty, so the plugin has no network".into();
        }
        let shown: Vec<String> = self
            .rules
            .iter()
            .take(8)
            .map(|r| format!("{:?}", r.to_string()))
            .collect();
        let more = self.rules.len().saturating_sub(8);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        format!("no rule in allow.hosts [{}{more}] allows it", shown.join(", "))
    }

    fn matching(&self, scheme: Scheme, host: &Host, port: u16) -> Option<&HostRule> {
        self.rules.iter().find(|r| r.matches(scheme, host, port))
    }

    /// Checks one address a name resolved to (or the address a plugin gave)
    /// against the address classes. `rule` is what allowed the name.
    fn check_address(
        &self,
        target: &str,
        rule: &HostRule,
        scheme: Scheme,
        ip: IpAddr,
        port: u16,
    ) -> Result<(), Denied> {
        let Some(why) = address::explain(ip) else {
            return Ok(());
        };
        if self.rules.iter().any(|r| r.names_address(scheme, ip, port)) {
            return Ok(());
        }
        Err(Denied {
            target: target.to_string(),
            reason: format!(
                "{why}; rule {:?} allows the host, but such an address is reachable only when a rule names it \
                 (the address or its CIDR, e.g. \"{scheme}://{}:{port}\")",
                rule.to_string(),
                address::show(ip),
            ),
        })
    }

    /// The addresses an HTTP request may connect to: the host must match a
    /// rule, and its name is resolved here, once; the caller connects to
    /// these addresses only, never to the name.
    pub async fn check_http(&self, scheme: Scheme, host: &Host, port: u16) -> Result<Vec<SocketAddr>, Denied> {
        let target = format!("{scheme}://{host}:{port}");
        let rule = self.matching(scheme, host, port).ok_or_else(|| Denied {
            target: target.clone(),
            reason: self.rule_list(),
        })?;
        let ips = match host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => self.resolve(&target, name, port).await?,
        };
        let mut allowed = Vec::with_capacity(ips.len());
        let mut first_refusal = None;
        for ip in ips {
            match self.check_address(&target, rule, scheme, ip, port) {
                Ok(()) => allowed.push(SocketAddr::new(ip, port)),
                Err(denied) => {
                    first_refusal.get_or_insert(denied);
                }
            }
        }
        match (allowed.is_empty(), first_refusal) {
            (true, Some(denied)) => Err(denied),
            _ => Ok(allowed),
        }
    }

    async fn resolve(&self, target: &str, name: &str, port: u16) -> Result<Vec<IpAddr>, Denied> {
        let timeout = Duration::from_millis(self.limits.connect_timeout_ms);
        let found = tokio::time::timeout(timeout, tokio::net::lookup_host((name, port))).await;
        let fail = |reason: String| Denied {
            target: target.to_string(),
            reason,
        };
        match found {
            Err(_) => Err(fail(format!(
                "resolving {name} took longer than {} ms",
                timeout.as_millis()
            ))),
            Ok(Err(e)) => Err(fail(format!("cannot resolve {name}: {e}"))),
            Ok(Ok(addrs)) => {
                let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                ips.dedup();
                if ips.is_empty() {
                    return Err(fail(format!("{name} resolves to no address")));
                }
                Ok(ips)
            }
        }
    }

    /// A `wasi:sockets` TCP connection to `addr`: allowed by a `tcp` rule
    /// that names the address (or its CIDR, or `*` for public addresses), or
    /// whose exact name resolves, now, to it.
    pub async fn check_tcp(&self, addr: SocketAddr) -> Result<(), Denied> {
        let (ip, port) = (addr.ip(), addr.port());
        let target = format!("tcp://{}:{port}", address::show(ip));
        let host = Host::Ip(ip);
        if let Some(rule) = self.matching(Scheme::Tcp, &host, port) {
            return self.check_address(&target, rule, Scheme::Tcp, ip, port);
        }
        for rule in &self.rules {
            let Some(name) = rule.exact_name(Scheme::Tcp, Some(port)) else {
                continue;
            };
            if let Ok(ips) = self.resolve(&target, name, port).await {
                if ips.contains(&ip) {
                    return self.check_address(&target, rule, Scheme::Tcp, ip, port);
                }
            }
        }
        Err(Denied {
            target,
            reason: self.rule_list(),
        })
    }

    /// A `wasi:sockets` name lookup: only names a `tcp` rule gives exactly,
    /// so a plugin cannot use DNS to reach (or signal to) anything else.
    pub fn check_lookup(&self, name: &str) -> Result<(), Denied> {
        let wanted = name.trim_end_matches('.').to_ascii_lowercase();
        if self
            .rules
            .iter()
            .any(|r| r.exact_name(Scheme::Tcp, None) == Some(wanted.as_str()))
        {
            return Ok(());
        }
        Err(Denied {
            target: format!("name lookup of {name:?}"),
            reason: format!("no tcp rule names it exactly; {}", self.rule_list()),
        })
    }

    /// The headers the host adds to a request to `scheme://host:port`.
    pub fn secret_headers<'a>(
        &'a self,
        scheme: Scheme,
        host: &'a Host,
        port: u16,
    ) -> impl Iterator<Item = &'a Secret> + 'a {
        self.secrets.iter().filter(move |s| s.host.matches(scheme, host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> Policy {
        Policy {
            plugin: "t.wasm".into(),
            rules: rules.iter().map(|r| HostRule::parse(r).unwrap()).collect(),
            secrets: vec![],
            limits: NetworkLimits::default(),
        }
    }

    #[tokio::test]
    async fn loopback_needs_the_exact_address() {
        let p = policy(&["http://127.0.0.1:8123", "http://localhost:9000"]);
        let ok = p
            .check_http(Scheme::Http, &Host::parse("127.0.0.1"), 8123)
            .await
            .unwrap();
        assert_eq!(ok, vec!["127.0.0.1:8123".parse().unwrap()]);
        let err = p
            .check_http(Scheme::Http, &Host::parse("127.0.0.1"), 8124)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("http://127.0.0.1:8124") && err.reason.contains("no rule"),
            "{err}"
        );
        let err = p
            .check_http(Scheme::Http, &Host::parse("localhost"), 9000)
            .await
            .unwrap_err();
        assert!(
            err.reason.contains("a loopback address") && err.reason.contains("\"http://localhost:9000\""),
            "{err}"
        );
        let err = p
            .check_http(Scheme::Http, &Host::parse("[::ffff:127.0.0.1]"), 8123)
            .await
            .unwrap_err();
        assert!(err.reason.contains("no rule"), "{err}");
    }

    #[tokio::test]
    async fn any_host_still_refuses_inner_addresses() {
        let p = policy(&["*://*:*"]);
        for host in [
            "169.254.169.254",
            "[::ffff:127.0.0.1]",
            "10.0.0.1",
            "[fd00:ec2::254]",
            "localhost",
        ] {
            let err = p.check_http(Scheme::Http, &Host::parse(host), 80).await.unwrap_err();
            assert!(err.reason.contains("is "), "{host}: {err}");
        }
        assert!(p.check_http(Scheme::Http, &Host::parse("8.8.8.8"), 80).await.is_ok());
    }

    #[tokio::test]
    async fn tcp_by_address_or_by_resolved_name() {
        let p = policy(&["tcp://127.0.0.1:5432", "tcp://localhost:6000"]);
        assert!(p.check_tcp("127.0.0.1:5432".parse().unwrap()).await.is_ok());
        assert!(p.check_tcp("127.0.0.1:5433".parse().unwrap()).await.is_err());
        let err = p.check_tcp("127.0.0.1:6000".parse().unwrap()).await.unwrap_err();
        assert!(
            err.reason.contains("loopback") && err.reason.contains("tcp://localhost:6000"),
            "{err}"
        );
        assert!(p.check_lookup("localhost").is_ok());
        assert!(p.check_lookup("example.com").is_err());
        assert!(policy(&[])
            .check_tcp("8.8.8.8:53".parse().unwrap())
            .await
            .unwrap_err()
            .reason
            .contains("empty"));
    }
}
