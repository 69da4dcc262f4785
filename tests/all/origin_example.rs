//! The SDK's example plugin (`plugins/example-artifact`), loaded from a
//! plugins directory as a platform team would deploy it, against nginx.

use crate::support::*;

/// The plugin as built from this tree, and as built (from the same source)
/// before the WIT's `config.misconfigured` import existed: a component made
/// against the older contract still loads and serves.
const BUILDS: [(&str, &str); 2] = [
    (
        "current",
        seedgate::plugin::test_components::EXAMPLE_ARTIFACT,
    ),
    (
        "before config.misconfigured",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/plugins/example-artifact-wit-0.1.0-before-misconfigured.wasm"
        ),
    ),
];

#[tokio::test]
async fn artifact_urls_map_onto_the_store() {
    for (build, wasm) in BUILDS {
        artifact_urls_map_onto_the_store_with(build, wasm).await;
    }
}

async fn artifact_urls_map_onto_the_store_with(build: &str, wasm: &str) {
    let (dir, nginx) = origin();
    let data = pseudo_random(3 * 1024 * 1024, 71);
    nginx.put("releases/tool/1.4.2/tool-1.4.2.tar.gz", &data);
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(wasm, plugins.join("artifact.wasm")).unwrap();
    let config = format!(
        r#"
[plugins]
dir = "{plugins}"

[origins.artifacts]
plugin = "artifact"
base_url = "artifact://releases/"
allowed_hosts = ["127.0.0.1"]
[origins.artifacts.config]
template = "{base}{{catalog}}/{{name}}/{{version}}/{{name}}-{{version}}.tar.gz"

[origins.untemplated]
plugin = "artifact"
base_url = "artifact://nightlies/"
"#,
        plugins = plugins.display(),
        base = nginx.base_url()
    );
    let sg = Seedgate::start(dir.path(), &config);

    let resp = get(&sg.url("/o/artifacts/tool/1.4.2")).await;
    assert_eq!(resp.status(), 200, "{build}: {:?}", resp.text().await);
    assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(&data));
    let path = "/releases/tool/1.4.2/tool-1.4.2.tar.gz";
    assert_eq!(nginx.gets(path), 1, "{:?}", nginx.requests(path));

    let resp = get(&sg.url("/o/artifacts/tool/9.9.9")).await;
    assert_eq!(resp.status(), 404);

    let resp = get(&sg.url("/o/artifacts/tool")).await;
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("expected artifact://CATALOG/NAME/VERSION"),
        "{body}"
    );

    // A config without its template: the current build says so
    // (`config.misconfigured`), a 502 naming the plugin and the key; the
    // older build cannot, and its `invalid` stays the client's 400.
    let resp = get(&sg.url("/o/untemplated/tool/1.4.2")).await;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("has no 'template'"),
        "{build}: {status} {body:.200}"
    );
    if build == "current" {
        assert_eq!(status, 502, "{build}: {body}");
        assert!(
            body.contains("plugin 'artifact' is misconfigured (config 'template')"),
            "{body}"
        );
    } else {
        assert_eq!(status, 400, "{build}: {body}");
    }
}
