//! Which hosts an origin's plugin and plans may reach.
//!
//! An allowlist holds names (`cdn.example`, `*.example`) and addresses or
//! networks (`127.0.0.1`, `10.0.0.0/8`). A URL passes when its host matches a
//! name entry or is an address inside a network entry; then every address the
//! name resolves to must be either public or inside a network entry. The
//! second check runs in the HTTP client's resolver, so the connection goes
//! only to addresses that were checked: a public name that resolves to a
//! private, loopback or link-local address (DNS rebinding, metadata
//! endpoints) is refused unless the operator listed that network.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// An exact host name, lowercase.
    Name(String),
    /// `*.suffix`: any name ending in `.suffix` (not `suffix` itself).
    Wildcard(String),
    /// An address or network.
    Net(IpNet),
}

impl Entry {
    /// Parses `name`, `*.suffix`, an address or a CIDR network.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Entry::Net(net));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Entry::Net(IpNet::from(ip)));
        }
        if s.contains('/') {
            return Err(format!("'{s}' is not a valid network (address/prefix)"));
        }
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(format!(
                "'{s}' is not a host name, *.domain, address or network"
            ));
        }
        let name = name.to_ascii_lowercase();
        Ok(if wild {
            Entry::Wildcard(name)
        } else {
            Entry::Name(name)
        })
    }
}

/// An origin's allowlist.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    entries: Vec<Entry>,
    /// The plugin's own list (`plugins.limits.NAME.allowed_hosts`), which a
    /// URL's host must pass as well.
    within: Option<Box<AllowList>>,
}

/// Why a destination was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64) // CGNAT
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local())
        }
    }
}

impl AllowList {
    /// An allowlist of `base_url`'s host plus the extra entries.
    pub fn new(base_url: &Url, extra: &[String]) -> Result<Self, String> {
        let mut entries = Vec::new();
        match base_url.host() {
            Some(Host::Domain(d)) => entries.push(Entry::Name(d.to_ascii_lowercase())),
            Some(Host::Ipv4(ip)) => entries.push(Entry::Net(IpNet::from(IpAddr::V4(ip)))),
            Some(Host::Ipv6(ip)) => entries.push(Entry::Net(IpNet::from(IpAddr::V6(ip)))),
            None => return Err(format!("{base_url} has no host")),
        }
        for e in extra {
            entries.push(Entry::parse(e)?);
        }
        Ok(Self {
            entries,
            within: None,
        })
    }

    /// A list of just `entries` (a plugin's limit).
    pub fn from_entries(entries: &[String]) -> Result<Self, String> {
        Ok(Self {
            entries: entries
                .iter()
                .map(|e| Entry::parse(e))
                .collect::<Result<_, _>>()?,
            within: None,
        })
    }

    /// Also requires every URL host to pass `limit`.
    pub fn restricted_to(mut self, limit: AllowList) -> Self {
        self.within = Some(Box::new(limit));
        self
    }

    fn host_allowed(&self, host: Option<Host<&str>>) -> bool {
        match host {
            Some(Host::Domain(d)) => self.name_allowed(d),
            Some(Host::Ipv4(ip)) => self.net_allowed(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.net_allowed(IpAddr::V6(ip)),
            None => false,
        }
    }

    fn name_allowed(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.entries.iter().any(|e| match e {
            Entry::Name(n) => *n == name,
            Entry::Wildcard(suffix) => {
                name.len() > suffix.len() + 1 && name.ends_with(&format!(".{suffix}"))
            }
            Entry::Net(_) => false,
        })
    }

    fn net_allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.entries
            .iter()
            .any(|e| matches!(e, Entry::Net(net) if net.contains(&ip)))
    }

    /// Whether a resolved address may be connected to.
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        self.net_allowed(ip) || is_public(ip)
    }

    /// Checks a URL before any connection: scheme and host.
    pub fn check_url(&self, url: &Url) -> Result<(), Denied> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Denied(format!(
                "scheme '{}' of {url} is not http or https",
                url.scheme()
            )));
        }
        let host = url.host_str().unwrap_or("");
        if !self.host_allowed(url.host()) {
            return Err(Denied(format!(
                "host '{host}' is not on the origin's allowlist"
            )));
        }
        if let Some(limit) = &self.within
            && !limit.host_allowed(url.host())
        {
            return Err(Denied(format!(
                "host '{host}' is not on the plugin's allowlist (plugins.limits)"
            )));
        }
        Ok(())
    }

    /// Whether a host name passes this list and the plugin's.
    fn name_allowed_everywhere(&self, name: &str) -> bool {
        self.name_allowed(name) && self.within.as_ref().is_none_or(|w| w.name_allowed(name))
    }
}

/// A resolver that only hands out addresses the allowlist permits.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    allow: Arc<AllowList>,
}

impl PolicyResolver {
    pub fn new(allow: Arc<AllowList>) -> Self {
        Self { allow }
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            if !allow.name_allowed_everywhere(&host) {
                return Err(format!("host '{host}' is not on the origin's allowlist").into());
            }
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| allow.address_allowed(a.ip()))
                .collect();
            if allowed.is_empty() {
                let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                return Err(format!(
                    "host '{host}' resolves only to addresses outside the allowlist ({}); list their network in allowed_hosts",
                    shown.join(", ")
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(base: &str, extra: &[&str]) -> AllowList {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        AllowList::new(&Url::parse(base).unwrap(), &extra).unwrap()
    }

    #[test]
    fn names_and_networks() {
        let a = list(
            "http://127.0.0.1:8000/",
            &["*.corp.example", "10.0.0.0/8", "cdn.example"],
        );
        let ok = |u: &str| a.check_url(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("http://127.0.0.1:9/x"));
        assert!(ok("http://10.1.2.3/x"));
        assert!(ok("https://a.corp.example/x"));
        assert!(!ok("https://corp.example/x"));
        assert!(ok("https://CDN.example./x"));
        assert!(!ok("http://127.0.0.2/x"));
        assert!(!ok("http://169.254.169.254/latest/meta-data"));
        assert!(!ok("file:///etc/passwd"));
        // Names may only land on public addresses unless a network is listed.
        assert!(a.address_allowed("10.9.9.9".parse().unwrap()));
        assert!(!a.address_allowed("192.168.1.1".parse().unwrap()));
        assert!(!a.address_allowed("::1".parse().unwrap()));
        assert!(a.address_allowed("::ffff:127.0.0.1".parse().unwrap()));
        assert!(a.address_allowed("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn bad_entries_name_the_problem() {
        assert!(Entry::parse("10.0.0.0/33").unwrap_err().contains("network"));
        assert!(
            Entry::parse("bad host")
                .unwrap_err()
                .contains("not a host name")
        );
    }
}
