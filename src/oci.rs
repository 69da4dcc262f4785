//! OCI images as a preheat names them: image references, the manifests and
//! indexes a registry answers with, and which of an index's images a
//! platform selects. A leaf: it imports nothing from the crate.
//!
//! Platform matching follows containerd's `platforms.Only` as Dragonfly's
//! manager uses it: `os/arch[/variant]`; an image without a variant matches
//! a platform asking for one only where that is the default (`arm64/v8`),
//! and `linux/arm64` also takes `linux/arm/v8`-less `arm64` images. `all`
//! selects every image of an index.

use serde::Deserialize;

/// Index and manifest-list media types.
pub const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// `REGISTRY/NAME[:TAG][@sha256:HEX]`, as `docker pull` takes it (the
/// registry is required: seedgate reaches only configured origins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`.
    pub registry: String,
    /// The repository, e.g. `library/ubuntu`.
    pub name: String,
    /// A tag or a digest (the digest when both are given).
    pub reference: String,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("image '{s}': {why} (expected REGISTRY/NAME:TAG or REGISTRY/NAME@sha256:HEX)")
        };
        let s2 = s.trim();
        let s2 = s2
            .strip_prefix("https://")
            .or_else(|| s2.strip_prefix("http://"))
            .unwrap_or(s2);
        let (registry, rest) = s2.split_once('/').ok_or_else(|| bad("no registry"))?;
        if registry.is_empty()
            || !(registry.contains('.') || registry.contains(':') || registry == "localhost")
        {
            return Err(bad("the first part is not a registry host"));
        }
        let (path, digest) = match rest.split_once('@') {
            Some((p, d)) => (p, Some(d)),
            None => (rest, None),
        };
        // A tag follows the last ':' after the last '/'.
        let (name, tag) = match path.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (path, None),
        };
        let name_ok = !name.is_empty()
            && name.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'.' | b'_' | b'-')
                    })
            });
        if !name_ok {
            return Err(bad("the repository name is not a distribution name"));
        }
        let reference = match (digest, tag) {
            (Some(d), _) if is_sha256(d) => d.to_owned(),
            (Some(_), _) => {
                return Err(bad("the digest is not sha256: and 64 lowercase hex digits"));
            }
            (None, Some(t)) if is_tag(t) => t.to_owned(),
            (None, Some(_)) => return Err(bad("the tag is not a valid tag")),
            (None, None) => "latest".to_owned(),
        };
        Ok(Self {
            registry: registry.to_owned(),
            name: name.to_owned(),
            reference,
        })
    }

    /// The key of its manifest under a registry origin (`NAME/manifests/REF`).
    pub fn manifest_key(&self) -> String {
        format!("{}/manifests/{}", self.name, self.reference)
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(f, "{}/{}{sep}{}", self.registry, self.name, self.reference)
    }
}

pub fn is_sha256(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A content descriptor.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A manifest or an index, as much of it as a preheat reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl Manifest {
    /// Parses `body`; `content_type` is the registry's, which wins over a
    /// `mediaType` field that is absent.
    pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<(Self, bool), String> {
        let m: Manifest = serde_json::from_slice(body)
            .map_err(|e| format!("the manifest is not JSON the OCI spec allows: {e}"))?;
        let media = m
            .media_type
            .as_deref()
            .or(content_type.map(|c| c.split(';').next().unwrap_or(c).trim()))
            .unwrap_or("");
        let index = INDEX_TYPES.contains(&media) || (m.config.is_none() && !m.manifests.is_empty());
        if !index && m.config.is_none() {
            return Err(format!(
                "the manifest ({media}) has neither a config nor manifests"
            ));
        }
        Ok((m, index))
    }

    /// The blobs of an image manifest: its config, then its layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(self.layers.iter())
    }
}

/// Which images of an index a preheat takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformWanted {
    All,
    One {
        os: String,
        arch: String,
        variant: Option<String>,
    },
}

impl PlatformWanted {
    /// `os/arch[/variant]` or `all`; none is the server's own platform,
    /// as Dragonfly's manager defaults to its host's.
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        let s = match s.map(str::trim) {
            None | Some("") => return Ok(Self::host()),
            Some(s) => s,
        };
        if s.eq_ignore_ascii_case("all") {
            return Ok(Self::All);
        }
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Self::One {
                os: os.to_ascii_lowercase(),
                arch: normalize_arch(arch).to_owned(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Self::One {
                    os: os.to_ascii_lowercase(),
                    arch: normalize_arch(arch).to_owned(),
                    variant: Some(variant.to_ascii_lowercase()),
                })
            }
            _ => Err(format!(
                "platform '{s}': expected OS/ARCH[/VARIANT] (e.g. linux/amd64) or all"
            )),
        }
    }

    /// This server's platform, named as OCI names it.
    pub fn host() -> Self {
        Self::One {
            os: std::env::consts::OS.to_owned(),
            arch: normalize_arch(std::env::consts::ARCH).to_owned(),
            variant: None,
        }
    }

    pub fn matches(&self, p: &Platform) -> bool {
        match self {
            Self::All => true,
            Self::One { os, arch, variant } => {
                if !p.os.eq_ignore_ascii_case(os) || normalize_arch(&p.architecture) != arch {
                    return false;
                }
                match (variant.as_deref(), p.variant.as_deref()) {
                    (None, _) => true,
                    (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
                    // arm64 images rarely state their (default) variant.
                    (Some("v8"), None) => arch == "arm64",
                    (Some(_), None) => false,
                }
            }
        }
    }
}

impl std::fmt::Display for PlatformWanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::One {
                os,
                arch,
                variant: None,
            } => write!(f, "{os}/{arch}"),
            Self::One {
                os,
                arch,
                variant: Some(v),
            } => write!(f, "{os}/{arch}/{v}"),
        }
    }
}

fn normalize_arch(a: &str) -> &str {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "i386" | "x86" => "386",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_docker_pull_reads_them() {
        let r = ImageRef::parse("127.0.0.1:5000/team/app:1.2").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.name.as_str(), r.reference.as_str()),
            ("127.0.0.1:5000", "team/app", "1.2")
        );
        assert_eq!(r.manifest_key(), "team/app/manifests/1.2");
        let r = ImageRef::parse("registry.example/library/ubuntu").unwrap();
        assert_eq!(r.reference, "latest");
        let d = format!("sha256:{}", "b".repeat(64));
        let r = ImageRef::parse(&format!("localhost:5000/app:1@{d}")).unwrap();
        assert_eq!(r.reference, d, "a digest wins over the tag");
        assert_eq!(r.to_string(), format!("localhost:5000/app@{d}"));
        for bad in [
            "ubuntu:22.04",
            "library/ubuntu",
            "r.example/App:1",
            "r.example/app@sha256:abc",
            "r.example/app:-x",
            "r.example/",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn platforms_select_as_containerd_does() {
        let p = |os: &str, arch: &str, variant: Option<&str>| Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        };
        let amd = PlatformWanted::parse(Some("linux/amd64")).unwrap();
        assert!(amd.matches(&p("linux", "amd64", None)));
        assert!(!amd.matches(&p("linux", "arm64", None)));
        assert!(!amd.matches(&p("windows", "amd64", None)));
        let v8 = PlatformWanted::parse(Some("linux/arm64/v8")).unwrap();
        assert!(v8.matches(&p("linux", "arm64", None)));
        assert!(v8.matches(&p("linux", "arm64", Some("v8"))));
        let v7 = PlatformWanted::parse(Some("linux/arm/v7")).unwrap();
        assert!(!v7.matches(&p("linux", "arm", Some("v6"))));
        assert!(
            PlatformWanted::parse(Some("all"))
                .unwrap()
                .matches(&p("plan9", "mips", None))
        );
        assert!(PlatformWanted::parse(Some("linux")).is_err());
        assert_eq!(PlatformWanted::parse(None).unwrap(), PlatformWanted::host());
    }

    #[test]
    fn indexes_and_manifests_tell_apart() {
        let index = br#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"platform":{"os":"linux","architecture":"amd64"}}]}"#;
        let (m, is_index) = Manifest::parse(index, Some(INDEX_TYPES[0])).unwrap();
        assert!(is_index);
        assert_eq!(m.manifests.len(), 1);
        let image = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"c","digest":"sha256:c","size":2},"layers":[{"mediaType":"l","digest":"sha256:l","size":3}]}"#;
        let (m, is_index) = Manifest::parse(image, None).unwrap();
        assert!(!is_index);
        assert_eq!(m.blobs().map(|d| d.size).sum::<u64>(), 5);
        assert!(Manifest::parse(b"{}", None).is_err());
        assert!(Manifest::parse(b"not json", None).is_err());
    }
}
