//! The SDK's example plugin (`plugins/example-artifact`), loaded from a
//! plugins directory as a platform team would deploy it, against nginx.

use crate::support::*;

#[tokio::test]
async fn artifact_urls_map_onto_the_store() {
    let (dir, nginx) = origin();
    let data = pseudo_random(3 * 1024 * 1024, 71);
    nginx.put("releases/tool/1.4.2/tool-1.4.2.tar.gz", &data);
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        seedgate::plugin::test_components::EXAMPLE_ARTIFACT,
        plugins.join("artifact.wasm"),
    )
    .unwrap();
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
"#,
        plugins = plugins.display(),
        base = nginx.base_url()
    );
    let sg = Seedgate::start(dir.path(), &config);

    let resp = get(&sg.url("/o/artifacts/tool/1.4.2")).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
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
}
