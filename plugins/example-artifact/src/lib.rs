//! An example origin plugin, written with the seedgate plugin SDK.
//!
//! It serves `artifact://CATALOG/NAME/VERSION` URLs from an internal HTTP
//! artifact store, so pipelines can say *what* they want instead of where it
//! lives. The origin's config names the URL template:
//!
//! ```toml
//! [origins.artifacts]
//! plugin = "artifact"                    # this file, as plugins.dir/artifact.wasm
//! base_url = "artifact://releases/"      # keys are NAME/VERSION
//! allowed_hosts = ["store.internal"]     # where the template points
//! [origins.artifacts.config]
//! template = "http://store.internal/{catalog}/{name}/{version}/{name}-{version}.tar.gz"
//! token = "env:ARTIFACT_TOKEN"           # optional: sent as a bearer token
//! ```
//!
//! `GET /o/artifacts/tool/1.4.2` then reads
//! `http://store.internal/releases/tool/1.4.2/tool-1.4.2.tar.gz`.

use seedgate_plugin_sdk::*;

struct Artifact;

/// `artifact://CATALOG/NAME/VERSION` → the store's URL for it.
fn resolve(url: &str) -> Result<String, OriginError> {
    let rest = url
        .strip_prefix("artifact://")
        .ok_or_else(|| OriginError::invalid(format!("'{url}' is not an artifact:// URL")))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [catalog, name, version] = parts[..] else {
        return Err(OriginError::invalid(format!(
            "'{url}': expected artifact://CATALOG/NAME/VERSION"
        )));
    };
    if [catalog, name, version].iter().any(|p| p.is_empty()) {
        return Err(OriginError::invalid(format!(
            "'{url}': empty catalog, name or version"
        )));
    }
    Ok(config::require("template")?
        .replace("{catalog}", catalog)
        .replace("{name}", name)
        .replace("{version}", version))
}

/// The bearer token, when one is configured.
fn auth() -> Vec<Header> {
    config::get("token")
        .map(|t| Header::new("authorization", format!("Bearer {t}")))
        .into_iter()
        .collect()
}

impl Origin for Artifact {
    fn schemes() -> Vec<String> {
        vec!["artifact".into()]
    }

    fn stat(ctx: RequestContext) -> Result<ObjectMeta, OriginError> {
        let target = resolve(&ctx.url)?;
        let resp = ok_or_status(&target, http::head(&target, &auth())?)?;
        resp.meta()
            .ok_or_else(|| OriginError::invalid(format!("{target}: no Content-Length")))
    }

    fn plan_read(
        ctx: RequestContext,
        meta: ObjectMeta,
        range: Option<ByteRange>,
    ) -> Result<Vec<RequestPlan>, OriginError> {
        Ok(vec![
            RequestPlan::get(&resolve(&ctx.url)?)
                .headers(auth())
                .ranged(meta.accepts_ranges)
                .range(range)
                .pin(meta.etag.as_deref()),
        ])
    }

    fn list_objects(
        ctx: RequestContext,
        _: String,
        _: Option<String>,
        _: u32,
    ) -> Result<ListPage, OriginError> {
        Err(OriginError::invalid(format!(
            "{}: the artifact store has no listing",
            ctx.url
        )))
    }
}

export_origin!(Artifact);
