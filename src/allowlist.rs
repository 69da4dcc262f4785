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

use std::net::IpAddr;

use ipnet::IpNet;
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

/// Splits an optional `:port` off an allowlist entry: `name:443`,
/// `10.0.0.1:9000`, `[::1]:9000`. A bare IPv6 address keeps its colons.
pub fn split_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("'{s}': '[' without ']'"))?;
        return match tail.strip_prefix(':') {
            Some(p) => Ok((host, Some(parse_port(s, p)?))),
            None if tail.is_empty() => Ok((host, None)),
            None => Err(format!("'{s}': unexpected text after ']'")),
        };
    }
    match s.rsplit_once(':') {
        // One colon: host:port. More: an IPv6 address without brackets.
        Some((host, p)) if !host.contains(':') => Ok((host, Some(parse_port(s, p)?))),
        _ => Ok((s, None)),
    }
}

fn parse_port(entry: &str, p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("'{entry}': '{p}' is not a port (1-65535)"))
}

/// An allowlist entry as configured: a host part and, optionally, a port.
/// The port restricts which redirects may be followed to that host; plans
/// and the `http` import are checked on the host part alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub entry: Entry,
    pub port: Option<u16>,
}

impl HostEntry {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (host, port) = split_port(s)?;
        Ok(Self {
            entry: Entry::parse(host)?,
            port,
        })
    }
}

impl Entry {
    /// Whether this entry covers `host`.
    fn allows(&self, host: Option<Host<&str>>) -> bool {
        match host {
            Some(Host::Domain(d)) => {
                let name = d.trim_end_matches('.').to_ascii_lowercase();
                match self {
                    Entry::Name(n) => *n == name,
                    Entry::Wildcard(suffix) => {
                        name.len() > suffix.len() + 1 && name.ends_with(&format!(".{suffix}"))
                    }
                    Entry::Net(_) => false,
                }
            }
            Some(Host::Ipv4(ip)) => self.allows_ip(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.allows_ip(IpAddr::V6(ip)),
            None => false,
        }
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        matches!(self, Entry::Net(net) if net.contains(&ip))
    }

    /// Parses `name`, `*.suffix`, an address or a CIDR network (with an
    /// optional `:port`, see [`HostEntry`]).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok((host, Some(_))) = split_port(s)
            && !host.contains('/')
        {
            return Self::parse(host);
        }
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
    /// The configured `allowed_hosts` (not the base URL's own host), with
    /// their ports: where a redirect may lead besides the base path.
    extra: Vec<HostEntry>,
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
        let mut hosts = Vec::new();
        for e in extra {
            let h = HostEntry::parse(e)?;
            entries.push(h.entry.clone());
            hosts.push(h);
        }
        Ok(Self {
            entries,
            extra: hosts,
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
            extra: Vec::new(),
            within: None,
        })
    }

    /// Also requires every URL host to pass `limit`.
    pub fn restricted_to(mut self, limit: AllowList) -> Self {
        self.within = Some(Box::new(limit));
        self
    }

    fn host_allowed(&self, host: Option<Host<&str>>) -> bool {
        self.entries.iter().any(|e| e.allows(host.clone()))
    }

    /// Whether `url`'s host and port match one of the configured
    /// `allowed_hosts` (a bare entry means the default port of the URL's
    /// scheme, 80 or 443), and pass the plugin's own list.
    pub fn extra_authority_allowed(&self, url: &Url) -> bool {
        let Some(port) = url.port_or_known_default() else {
            return false;
        };
        self.extra.iter().any(|h| {
            let port_ok = match h.port {
                Some(p) => p == port,
                None => url.port().is_none(),
            };
            port_ok && h.entry.allows(url.host())
        }) && self
            .within
            .as_ref()
            .is_none_or(|w| w.host_allowed(url.host()))
    }

    fn name_allowed(&self, name: &str) -> bool {
        self.host_allowed(Some(Host::Domain(name)))
    }

    fn net_allowed(&self, ip: IpAddr) -> bool {
        self.entries.iter().any(|e| e.allows_ip(ip))
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
    pub fn name_allowed_everywhere(&self, name: &str) -> bool {
        self.name_allowed(name) && self.within.as_ref().is_none_or(|w| w.name_allowed(name))
    }
}

/// The deepest cause of a transport failure, and whether an allowlist or
/// redirect rule refused it: the [`Denied`] a redirect policy or resolver
/// returned travels in the error's source chain, so it is found by type,
/// never by matching its text.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> (String, bool) {
    let mut cause = e.to_string();
    let mut denied = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(d) = s.downcast_ref::<Denied>() {
            return (d.0.clone(), true);
        }
        denied |= s.is::<Denied>();
        cause = s.to_string();
        source = s.source();
    }
    (cause, denied)
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
    fn entries_with_ports() {
        assert_eq!(
            split_port("a.example:443").unwrap(),
            ("a.example", Some(443))
        );
        assert_eq!(split_port("[::1]:9000").unwrap(), ("::1", Some(9000)));
        assert_eq!(split_port("::1").unwrap(), ("::1", None));
        assert_eq!(split_port("10.0.0.0/8").unwrap(), ("10.0.0.0/8", None));
        assert!(split_port("a.example:0").is_err());
        assert!(split_port("a.example:http").is_err());
        assert!(Entry::parse("a.example:443").is_ok());
        assert!(HostEntry::parse("a.example:x").is_err());
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
