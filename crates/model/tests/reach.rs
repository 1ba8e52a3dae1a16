//! `Mesh::reach` and `Mesh::reachable` answer from the per-namespace index;
//! they must agree with the definition (`Mesh::is_routable` on every
//! pair: open services, and those guarded by an AccessPolicy, which answer
//! callers they do not allow with 403).

use std::collections::{BTreeMap, BTreeSet};

use packlight_model::ir::ServiceKey;
use packlight_model::load;
use proptest::prelude::*;

fn mesh_text(services: &[(u8, bool)], deny: &[bool], grants: &[(usize, usize)]) -> String {
    let mut out = String::new();
    for (n, d) in deny.iter().enumerate() {
        if *d {
            out.push_str(&format!(
                "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {{name: default, namespace: ns{n}}}\nspec: {{access: deny}}\n---\n"
            ));
        }
    }
    for (i, (ns, _)) in services.iter().enumerate() {
        out.push_str(&format!(
            "apiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {{name: s{i}, namespace: ns{}}}\nspec: {{port: 80, versions: [{{version: \"1.0\"}}]}}\n---\n",
            ns % deny.len() as u8
        ));
    }
    let mut by_callee: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (caller, callee) in grants {
        by_callee
            .entry(callee % services.len())
            .or_default()
            .push(caller % services.len());
    }
    for (i, (ns, has_policy)) in services.iter().enumerate() {
        let callers = by_callee.get(&i).cloned().unwrap_or_default();
        if *has_policy || !callers.is_empty() {
            let from: Vec<String> = callers
                .iter()
                .map(|c| format!("ns{}/s{c}", services[*c].0 % deny.len() as u8))
                .collect();
            let rule = if from.is_empty() {
                "{ingress: true}".to_string()
            } else {
                format!("{{from: [{}]}}", from.join(", "))
            };
            out.push_str(&format!(
                "apiVersion: packlight.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: s{i}, namespace: ns{}}}\nspec: {{service: s{i}, allow: [{rule}]}}\n---\n",
                ns % deny.len() as u8
            ));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn index_agrees_with_the_definition(
        services in prop::collection::vec((0u8..4, prop::bool::weighted(0.3)), 1..24),
        deny in prop::collection::vec(any::<bool>(), 1..4),
        grants in prop::collection::vec((0usize..24, 0usize..24), 0..20),
    ) {
        let text = mesh_text(&services, &deny, &grants);
        let (model, _) = load(&[(Some("m.yaml"), &text)], "default");
        prop_assert!(!model.has_errors(), "{:?}", model.diagnostics);
        let mesh = &model.mesh;
        for caller in mesh.services.keys() {
            let want: BTreeSet<&ServiceKey> = mesh
                .services
                .values()
                .filter(|s| s.key != *caller && mesh.is_routable(s))
                .map(|s| &s.key)
                .collect();
            let got: BTreeSet<&ServiceKey> = mesh.reachable(caller).into_iter().map(|s| &s.key).collect();
            prop_assert_eq!(&got, &want);
            // reach: None means the whole namespace (minus the caller).
            let mut from_reach = BTreeSet::new();
            for (ns, r) in mesh.reach(caller) {
                match r {
                    None => from_reach.extend(
                        mesh.services.keys().filter(|k| k.namespace == ns && *k != caller),
                    ),
                    Some(set) => {
                        let all: BTreeSet<&ServiceKey> =
                            mesh.services.keys().filter(|k| k.namespace == ns && *k != caller).collect();
                        prop_assert!(set.len() < all.len(), "a full namespace must be None");
                        from_reach.extend(set.iter().map(|k| mesh.services.get_key_value(k).unwrap().0));
                    }
                }
            }
            prop_assert_eq!(&from_reach, &want);
            // reach_of, the borrowed answer for a service at hand, says
            // the same, namespace by namespace.
            let of: BTreeMap<String, Option<BTreeSet<ServiceKey>>> = mesh
                .reach_of(&mesh.services[caller])
                .into_iter()
                .map(|(ns, r)| (ns.to_string(), r.to_owned_keys()))
                .collect();
            prop_assert_eq!(of, mesh.reach(caller));
        }
    }
}
