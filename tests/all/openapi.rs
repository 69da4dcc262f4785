//! The OpenAPI document (`src/gateway/openapi.json`, served at
//! `/openapi.json`) against the running server: every documented path and
//! method is routed (never axum's bare 404 or a 405), and every route the
//! gateway has is documented.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::*;

/// The routes `gateway::router` builds, as (method, path): a route added
/// there and not here (or not in the document) fails this test.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/o/{origin}/{key}"),
    ("head", "/o/{origin}/{key}"),
    ("get", "/fetch"),
    ("head", "/fetch"),
    ("get", "/api/v1/tasks"),
    ("get", "/api/v1/tasks/{id}"),
    ("delete", "/api/v1/tasks/{id}"),
    ("get", "/api/v1/downloads"),
    ("get", "/api/v1/origins/{origin}/objects"),
    ("get", "/api/v1/preheat"),
    ("post", "/api/v1/preheat"),
    ("get", "/api/v1/preheat/{id}"),
    ("delete", "/api/v1/preheat/{id}"),
    ("get", "/api/v1/negative-cache"),
    ("delete", "/api/v1/negative-cache"),
    ("delete", "/api/v1/negative-cache/{id}"),
    ("get", "/api/v1/breakers"),
    ("get", "/api/v1/plugins"),
    ("post", "/api/v1/plugins/{name}/reload"),
    ("get", "/api/v1/drain"),
    ("post", "/api/v1/drain"),
    ("get", "/api/v1/cluster/hosts"),
    ("get", "/api/v1/cluster/tasks"),
    ("get", "/api/v1/cluster/tasks/{id}"),
    ("get", "/healthy"),
    ("get", "/oapi/v1/jobs"),
    ("post", "/oapi/v1/jobs"),
    ("get", "/oapi/v1/jobs/{id}"),
];

#[tokio::test]
async fn the_document_matches_the_routes() {
    let (dir, nginx) = origin();
    nginx.put("doc/a.bin", b"documented");
    let sg = Seedgate::start(dir.path(), &http_origin_config(&nginx.base_url()));
    let doc: Value =
        serde_json::from_slice(&get(&sg.url("/openapi.json")).await.bytes().await.unwrap())
            .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "head", "post", "delete", "put", "patch"] {
            if item.get(method).is_some() {
                documented.insert((method.to_string(), path.clone()));
            }
        }
    }
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routed, "documented vs routed");

    for (method, path) in &documented {
        let concrete = path
            .replace("{origin}", "www")
            .replace("{key}", "doc/a.bin")
            .replace("{id}", "0000")
            .replace("{name}", "http");
        let concrete = if concrete == "/fetch" {
            format!("/fetch?url={}doc/a.bin", nginx.base_url())
        } else {
            concrete
        };
        let req = client().request(method.to_uppercase().parse().unwrap(), sg.url(&concrete));
        let req = if method == "post" && path == "/api/v1/preheat" {
            req.header("content-type", "application/json")
                .body(r#"{"origin":"www","keys":["doc/a.bin"]}"#)
        } else {
            req
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap();
        assert_ne!(status, 405, "{method} {concrete}");
        assert!(
            !(status == 404 && body.is_empty() && method != "head"),
            "{method} {concrete}: not routed"
        );
    }
    // Every $ref points at a schema that exists.
    let text = doc.to_string();
    for piece in text.split("#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "missing schema {name}"
        );
    }
}
