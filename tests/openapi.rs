//! docs/openapi.yaml against the real server: every documented operation is performed, its
//! status must be one the document lists, and its JSON body must have the documented shape
//! (types and required fields, through `$ref`s). Every endpoint of docs/api.md's table must be in
//! the document, so neither can drift from the server or from each other.

mod common;

use common::Server;
use serde_json::Value;

const QUEUE: &str = "oa-q";
/// There are never subscriptions; any id will do.
const SUBSCRIPTION: &str = "57692ab13990b48c644bb7e6";

fn spec() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
    let text = std::fs::read_to_string(&path).expect("docs/openapi.yaml");
    serde_norway::from_str(&text).expect("docs/openapi.yaml is valid YAML")
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(spec: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("only local refs: {r}"));
        v = spec.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {r}"));
    }
    v
}

/// Checks `value` against the subset of JSON Schema the document uses.
fn conforms(spec: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    let ok = match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(other) => panic!("unknown schema type {other} at {at}"),
    };
    if !ok {
        errors.push(format!("{at}: expected {}, got {value}", schema["type"]));
        return;
    }
    for key in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if value.get(key).is_none() {
            errors.push(format!("{at}: required field `{key}` missing in {value}"));
        }
    }
    if let (Some(props), Some(obj)) = (schema.get("properties").and_then(Value::as_object), value.as_object()) {
        for (key, sub) in props {
            if let Some(v) = obj.get(key) {
                conforms(spec, sub, v, &format!("{at}.{key}"), errors);
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            conforms(spec, items, v, &format!("{at}[{i}]"), errors);
        }
    }
}

/// A queue with two messages, the first of them claimed: (unclaimed message id, claim id).
fn setup(c: &mut common::Client) -> (String, String) {
    assert!(matches!(c.put(&format!("/v2/queues/{QUEUE}"), None).status, 201 | 204));
    let ids = c.post_messages(QUEUE, &[r#"{"n": 1}"#, r#"{"n": 2}"#]);
    let claim = c.request("POST", &format!("/v2/queues/{QUEUE}/claims?limit=1"), Some(r#"{"ttl": 60}"#), &[]);
    assert_eq!(claim.status, 201, "{}", claim.text());
    let claim_id = claim.header("location").and_then(|l| l.rsplit('/').next()).expect("claim location").to_owned();
    // The claim took the oldest free message; the newest of the two is still free.
    (ids[1].clone(), claim_id)
}

#[test]
fn every_documented_operation_answers_as_documented() {
    let spec = spec();
    let server = Server::start();
    let mut c = server.client();
    let mut performed = 0;
    let mut errors = Vec::new();
    let paths = spec["paths"].as_object().expect("paths");
    for (template, item) in paths {
        for method in ["get", "head", "put", "post", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let (message_id, claim_id) = setup(&mut c);
            let fill = |s: &str| {
                s.replace("{queue_name}", QUEUE)
                    .replace("{message_id}", &message_id)
                    .replace("{claim_id}", &claim_id)
                    .replace("{subscription_id}", SUBSCRIPTION)
                    .replace("{project_id}", "oa-project")
            };
            let mut path = fill(template);
            if let Some(q) = op.get("x-test-query").and_then(Value::as_str) {
                path = format!("{path}?{}", fill(q));
            }
            let content = op.pointer("/requestBody/content").and_then(Value::as_object);
            let (content_type, body) = match content.and_then(|c| c.iter().next()) {
                Some((ct, media)) => (Some(ct.clone()), media.get("example").map(Value::to_string)),
                None => (None, None),
            };
            let mut headers = Vec::new();
            if let (Some(ct), Some(_)) = (&content_type, &body) {
                headers.push(("Content-Type", ct.as_str()));
            }
            let verb = method.to_ascii_uppercase();
            let resp = c.request(&verb, &path, body.as_deref(), &headers);
            performed += 1;
            let what = format!("{verb} {template} ({path})");
            let Some(doc) = op["responses"].get(resp.status.to_string()) else {
                errors.push(format!("{what}: status {} is not documented: {}", resp.status, resp.text()));
                continue;
            };
            let doc = resolve(&spec, doc);
            let Some(media) = doc.get("content").and_then(Value::as_object) else {
                if !resp.body.is_empty() && method != "head" {
                    errors.push(format!("{what}: documented without a body, got {}", resp.text()));
                }
                continue;
            };
            if method == "head" {
                continue;
            }
            let (media_type, media) = media.iter().next().expect("a media type");
            let got = resp.header("content-type").unwrap_or("");
            if !got.starts_with(media_type.as_str()) {
                errors.push(format!("{what}: content type {got:?}, documented {media_type}"));
            }
            if media_type.contains("json") {
                conforms(&spec, &media["schema"], &resp.json(), &what, &mut errors);
            } else if resp.body.is_empty() {
                errors.push(format!("{what}: empty {media_type} body"));
            }
        }
    }
    assert!(errors.is_empty(), "docs/openapi.yaml disagrees with the server:\n{}", errors.join("\n"));
    assert!(performed >= 25, "only {performed} operations performed");
}

#[test]
fn errors_have_the_documented_shape() {
    let spec = spec();
    let server = Server::start();
    let mut c = server.client();
    let mut errors = Vec::new();
    let error_schema = &spec["components"]["schemas"]["Error"];
    for resp in [
        c.get("/v2/queues?limit=0"),
        c.request("GET", "/v2/queues", None, &[("Client-ID", "")]),
        c.get(&format!("/v2/queues/{QUEUE}/claims/nope")),
        c.get("/v2/topics"),
    ] {
        assert!(resp.status >= 400, "{}", resp.text());
        conforms(&spec, error_schema, &resp.json(), &format!("error {}", resp.status), &mut errors);
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// `{q}`, `{queue_name}`, `{id}` … all become `{}`.
fn normalize(path: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for ch in path.chars() {
        match ch {
            '{' => {
                depth += 1;
                out.push('{');
            }
            '}' => {
                depth -= 1;
                out.push('}');
            }
            _ if depth > 0 => {}
            _ => out.push(ch),
        }
    }
    out
}

#[test]
fn every_endpoint_in_api_md_is_in_the_openapi_document() {
    let spec = spec();
    let documented: Vec<(String, &Value)> =
        spec["paths"].as_object().unwrap().iter().map(|(p, item)| (normalize(p), item)).collect();
    let api_md = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md")).unwrap();
    let table = api_md.split("## Endpoints").nth(1).expect("an Endpoints section").split("\n## ").next().unwrap();
    let mut checked = 0;
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = row.split(" | ").next().unwrap();
        for token in first_cell.split('`').skip(1).step_by(2) {
            let (methods, path) = match token.split_once(' ') {
                Some((m, p)) if m.chars().all(|c| c.is_ascii_uppercase() || c == '/') => (m, p),
                _ => ("", token),
            };
            let path = normalize(path.split(['?', '[', '…']).next().unwrap().trim_end_matches('/'));
            let path = if path.is_empty() { "/".to_owned() } else { path };
            let item = documented
                .iter()
                .find(|(p, _)| *p == path)
                .unwrap_or_else(|| panic!("docs/api.md lists `{token}` but docs/openapi.yaml has no {path}"))
                .1;
            for method in methods.split('/').filter(|m| !m.is_empty()) {
                assert!(
                    item.get(method.to_ascii_lowercase()).is_some(),
                    "docs/api.md lists `{token}` but docs/openapi.yaml has no {method} {path}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} endpoints found in docs/api.md");
}
