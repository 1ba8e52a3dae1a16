//! No input makes the model panic: arbitrary text, arbitrary YAML-shaped
//! documents, and mutations of valid resources all end in a model or a
//! diagnostic.

use packlight_model::load;
use proptest::prelude::*;

const VALID: &str = include_str!("../../../examples/route-rules.yaml");

fn yaml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("\"1.0\"".to_string()),
        Just("1.0".to_string()),
        Just("100".to_string()),
        Just("-1".to_string()),
        Just("true".to_string()),
        Just("'(a)\\1'".to_string()),
        Just("/v1".to_string()),
        Just("*.example.com:99999".to_string()),
        "[a-z0-9./:*-]{0,12}".prop_map(|s| format!("{s:?}")),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("version".to_string()),
                        Just("weight".to_string()),
                        Just("matches".to_string()),
                        Just("headers".to_string()),
                        Just("rules".to_string()),
                        Just("hosts".to_string()),
                        Just("allow".to_string()),
                        Just("from".to_string()),
                        "[a-zA-Z]{1,8}",
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|kv| {
                let mut seen = std::collections::BTreeSet::new();
                let body: Vec<String> = kv
                    .into_iter()
                    .filter(|(k, _)| seen.insert(k.clone()))
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(text in "\\PC{0,400}") {
        let _ = load(&[(Some("fuzz.yaml"), &text)], "default");
    }

    #[test]
    fn arbitrary_specs_of_every_kind(
        kind in prop::sample::select(packlight_api::KINDS.to_vec()),
        spec in yaml_value(),
    ) {
        let text = format!(
            "apiVersion: packlight.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: default, namespace: demo}}\nspec: {spec}\n"
        );
        let (model, _) = load(&[(Some("fuzz.yaml"), &text)], "default");
        // Whatever is wrong is said with a position in the file.
        for d in model.diagnostics.iter().filter(|d| d.is_error()) {
            prop_assert_eq!(d.file.as_deref(), Some("fuzz.yaml"));
            prop_assert!(d.line.is_some(), "{}", d);
        }
    }

    #[test]
    fn mutated_valid_input(cut in 0usize..VALID.len(), junk in "[ :\\-\\[\\]{}\"'#&*!|>%@`a-z0-9\n]{0,8}") {
        let mut text = VALID.to_string();
        let at = (0..=cut).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.insert_str(at, &junk);
        let (model, _) = load(&[(Some("m.yaml"), &text)], "default");
        let _ = model.has_errors();
    }
}
