//! The fast YAML writer against serde_yaml: byte-identical output for
//! arbitrary documents (the fast path or its fallback), and the fast path
//! taken for what packlight renders.

use packlight_istio::yaml::YamlWriter;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn ours(v: &Value) -> String {
    let mut out = Vec::new();
    YamlWriter::new().value(&mut out, v).unwrap();
    String::from_utf8(out).unwrap()
}

fn theirs(v: &Value) -> String {
    serde_yaml::to_string(v).unwrap()
}

/// Strings made of the characters that decide YAML scalar styles.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9./:*?#@'\"~+ -]{0,6}",
        "[0-9][0-9.xobeE+-]{0,4}",
        Just(String::new()),
        prop::sample::select(vec![
            "true",
            "False",
            "null",
            "~",
            "1.0",
            "8000",
            "0123",
            "0x1F",
            "-0o7",
            ".inf",
            "-.Inf",
            ".nan",
            "1e5",
            "nan",
            "inf",
            "+5",
            "---",
            "...",
            "- a",
            "a:",
            ":a",
            "-",
            "?",
            "a b",
            "@type",
            "*/*.svc",
            "./x.com",
            "/v1(/.*)?",
            "10.0.0.0/24",
            "0.500s",
            "y",
            "no",
            "héllo",
            "tab\there",
            "line\nbreak",
            "a #b",
            "a#b",
            "x: y",
        ])
        .prop_map(str::to_string),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        text().prop_map(Value::String),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u16>().prop_map(|n| json!(n)),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        Just(json!(100.0)),
    ];
    leaf.prop_recursive(5, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn same_bytes_as_serde_yaml(v in value()) {
        prop_assert_eq!(ours(&v), theirs(&v));
    }

    #[test]
    fn same_bytes_for_documents(m in prop::collection::btree_map(text(), value(), 0..5)) {
        let v = Value::Object(m.into_iter().collect());
        prop_assert_eq!(ours(&v), theirs(&v));
    }
}

#[test]
fn rendered_shapes_are_identical() {
    let v = json!({
        "apiVersion": "v1",
        "kind": "X",
        "metadata": {"labels": {"version": "1.0", "app": "a"}, "name": "n"},
        "spec": {
            "empty": {},
            "none": [],
            "list": [{"a": [1, 2], "b": {"c": "d"}}, [[], {}], "s", 5],
            "nested": {"deeper": [{"from": [{"source": {"principals": ["cluster.local/ns/a/sa/b"]}}]}]},
            "regex": "v2\\.example\\.com(:[0-9]+)?",
            "@type": "type.googleapis.com/x",
            "hosts": ["*/*.svc.cluster.local", "istio-system/*", "./api.example.com"],
        },
    });
    assert_eq!(ours(&v), theirs(&v));
    let mut w = YamlWriter::new();
    w.value(&mut Vec::new(), &v).unwrap();
    assert_eq!(w.fallbacks(), 0, "the fast path wrote it");
}

mod common;

/// Streamed objects written by the fast writer equal the JSON values of
/// `render` written by serde_yaml, for every example and golden input;
/// and the typed objects serialise to exactly those values.
#[test]
fn streamed_output_equals_render() {
    use packlight_istio::{RenderOptions, render, render_each};
    for (name, path) in common::inputs() {
        let model = common::load(&path);
        let opts = RenderOptions::default();
        let values = render(&model.mesh, &opts);
        let mut w = YamlWriter::new();
        let mut out = Vec::new();
        let mut json = Vec::new();
        render_each(&model.mesh, &opts, |o| {
            w.document(&mut out, o).unwrap();
            json.push(serde_json::to_value(o).unwrap());
        });
        assert_eq!(json, values, "{name}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            common::to_yaml(&values),
            "{name}"
        );
    }
}
