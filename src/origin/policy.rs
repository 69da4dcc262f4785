//! How an origin's HTTP clients enforce its [`AllowList`]: the redirect
//! rule that decides which `Location`s may be followed, and the resolver
//! that hands out only permitted addresses (so a checked name cannot be
//! rebound to a private one between the check and the connect).

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use crate::allowlist::{AllowList, Denied};

/// Where an origin's redirects may lead (the `Location` of a 3xx from the
/// origin or from a plan's URL):
/// - to the origin's own authority (scheme, host **and port** of
///   `base_url`) under its base path, with a key that passes the same
///   checks as a client's ([`super::key`]);
/// - or to an `allowed_hosts` entry: its port when it names one, else the
///   default port of the target's scheme (storage hosts that S3 and
///   registries redirect to).
///
/// Every hop is checked here and then on its resolved addresses by
/// [`PolicyResolver`], as plans are; at most [`MAX_REDIRECTS`] are followed.
#[derive(Debug, Clone)]
pub struct RedirectRule {
    base: Url,
    allow: Arc<AllowList>,
}

/// Redirects followed for one request, at most.
pub const MAX_REDIRECTS: usize = 5;

impl RedirectRule {
    pub fn new(base: Url, allow: Arc<AllowList>) -> Self {
        Self { base, allow }
    }

    /// Checks one redirect target; the refusal names the target and the rule.
    pub fn check(&self, target: &Url) -> Result<(), Denied> {
        let refuse = |why: String| {
            Err(Denied(format!(
                "redirect to {target} refused: {why} (only the origin's own {}{} or an allowed_hosts entry may be followed)",
                self.base.origin().ascii_serialization(),
                self.base.path()
            )))
        };
        if !matches!(target.scheme(), "http" | "https") {
            return refuse(format!("scheme '{}' is not http or https", target.scheme()));
        }
        let same_authority = target.scheme() == self.base.scheme()
            && target.host() == self.base.host()
            && target.port_or_known_default() == self.base.port_or_known_default();
        if same_authority {
            let Some(key) = target.path().strip_prefix(self.base.path()) else {
                return refuse("it leaves the origin's base path".into());
            };
            if let Err(e) = super::key::check_key(key) {
                return refuse(format!("its path {}: {}", target.path(), e.reason()));
            }
            return Ok(());
        }
        if self.allow.extra_authority_allowed(target) {
            return Ok(());
        }
        refuse(format!(
            "{} is neither the origin's authority nor an allowed_hosts entry",
            target
                .host_str()
                .map(|h| match target.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
                .unwrap_or_default()
        ))
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
                return Err(Box::new(Denied(format!(
                    "host '{host}' is not on the origin's allowlist"
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
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
                return Err(Box::new(Denied(format!(
                    "host '{host}' resolves only to addresses outside the allowlist ({}); list their network in allowed_hosts",
                    shown.join(", ")
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_with_the_origin() {
        let base = Url::parse("http://127.0.0.1:8000/pub/").unwrap();
        let allow = Arc::new(
            AllowList::new(&base, &["storage.example".into(), "10.1.1.1:9000".into()]).unwrap(),
        );
        let rule = RedirectRule::new(base, allow);
        let ok = |u: &str| rule.check(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("http://127.0.0.1:8000/pub/moved/file"));
        assert!(!ok("http://127.0.0.1:8000/secret.txt"));
        assert!(!ok("http://127.0.0.1:8000/pub/..%2fsecret.txt"));
        assert!(!ok("http://127.0.0.1:8001/pub/file"), "another port");
        assert!(!ok("https://127.0.0.1:8000/pub/file"), "another scheme");
        assert!(ok("https://storage.example/bucket/x?sig=1"));
        assert!(ok("http://storage.example/bucket/x"));
        assert!(
            !ok("https://storage.example:8443/x"),
            "a bare name is the default port"
        );
        assert!(ok("http://10.1.1.1:9000/x"));
        assert!(!ok("http://10.1.1.1/x"));
        assert!(!ok("http://169.254.169.254/latest/meta-data"));
        let e = rule
            .check(&Url::parse("http://127.0.0.1:9999/x").unwrap())
            .unwrap_err();
        assert!(
            e.0.contains("http://127.0.0.1:9999/x") && e.0.contains("allowed_hosts"),
            "{e}"
        );
    }
}
