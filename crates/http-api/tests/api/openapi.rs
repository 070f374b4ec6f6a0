//! The OpenAPI document against the router's route table.

use serde_json::Value;

/// The OpenAPI document lists exactly the routes the router serves, with their methods.
#[test]
fn openapi_document_matches_the_routes() {
    let document: Value = serde_json::from_str(http_api::OPENAPI).unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| *m != "parameters")
        {
            documented.insert((path.clone(), method.to_uppercase()));
        }
    }
    let mut served = std::collections::BTreeSet::new();
    for spec in &http_api::ROUTES {
        for kind in ["sinks", "sources"] {
            for method in spec.methods {
                served.insert((spec.path.replace("{kind}", kind), method.to_string()));
            }
        }
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented routes nobody serves: {unserved:?}"
    );
}
