//! Invariants of the rendered routing, over generated valid Routes built
//! through `packlight_model::build`: weights per major route sum to 100,
//! every subset referenced exists in the DestinationRule, match routes
//! come first, the default route is last and unmatched (mesh) or matched
//! by the ingress prefix only (ingress), rendering is deterministic, each
//! destination's `x-packlight-version` is its subset's version label, and
//! the VirtualService routes a sample request exactly as the normative
//! algorithm (`RouteTable::decide`) does.

use std::collections::{BTreeMap, BTreeSet};

use packlight_api as api;
use packlight_istio::{RenderOptions, render};
use packlight_model::ir::ServiceKey;
use packlight_model::routing::{RequestSample, Vantage};
use packlight_model::{Input, Resource};
use proptest::prelude::*;
use serde_json::Value;

const NS: &str = "prop";
const SVC: &str = "svc";
const INGRESS_PREFIX: &str = "/svc";

/// A minor of a major: (minor, patch, weight).
type Minor = (u32, Option<u32>, u32);

#[derive(Clone, Debug)]
struct Case {
    /// Per major: (minor, patch?, weight).
    majors: Vec<(u32, Vec<Minor>)>,
    omit_single_weight: bool,
    custom_prefix: Option<u32>,
    /// A major addressed by host `hN.example.com` (ingress only).
    host_major: Option<u32>,
    default_major: Option<usize>,
    /// (index into versions, header value, use query)
    matches: Vec<(usize, String, bool)>,
}

fn weights(n: usize) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..=100, n - 1).prop_map(move |mut cuts| {
        cuts.sort();
        let mut out = Vec::new();
        let mut last = 0;
        for c in cuts {
            out.push(c - last);
            last = c;
        }
        out.push(100 - last);
        out
    })
}

fn major() -> impl Strategy<Value = Vec<Minor>> {
    (1usize..=3, any::<bool>())
        .prop_flat_map(|(n, patched)| weights(n).prop_map(move |w| (n, patched, w)))
        .prop_map(|(n, patched, w)| {
            (0..n)
                .map(|i| (i as u32, patched.then_some(i as u32 + 1), w[i]))
                .collect()
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(major(), 1..=3),
        any::<bool>(),
        prop::option::of(1u32..=3),
        prop::option::of(1u32..=3),
        prop::option::of(0usize..3),
        prop::collection::vec((0usize..9, "[a-z0-9]{1,4}", any::<bool>()), 0..=3),
    )
        .prop_map(|(ms, omit, custom, host, default, matches)| Case {
            majors: ms
                .into_iter()
                .enumerate()
                .map(|(i, m)| (i as u32 + 1, m))
                .collect(),
            omit_single_weight: omit,
            custom_prefix: custom,
            host_major: host.filter(|h| Some(*h) != custom),
            default_major: default,
            matches,
        })
}

fn version(major: u32, minor: u32, patch: Option<u32>) -> String {
    match patch {
        Some(p) => format!("{major}.{minor}.{p}"),
        None => format!("{major}.{minor}"),
    }
}

fn meta(name: &str) -> packlight_model::resource::k8s_meta::ObjectMeta {
    packlight_model::resource::k8s_meta::ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NS.into()),
        ..Default::default()
    }
}

fn inputs(c: &Case) -> Vec<Input> {
    let all: Vec<String> = c
        .majors
        .iter()
        .flat_map(|(m, vs)| vs.iter().map(move |(mi, p, _)| version(*m, *mi, *p)))
        .collect();
    let mut rules = Vec::new();
    for (m, vs) in &c.majors {
        for (mi, p, w) in vs {
            let weight = if vs.len() == 1 && c.omit_single_weight {
                None
            } else {
                Some(*w)
            };
            rules.push(api::RouteRule {
                version: version(*m, *mi, *p),
                weight,
                matches: None,
            });
        }
    }
    for (i, (v, value, query)) in c.matches.iter().enumerate() {
        let cond = api::StringMatch {
            exact: Some(value.clone()),
            ..Default::default()
        };
        let key = format!("k{i}");
        let m = if *query {
            api::RequestMatch {
                query_params: BTreeMap::from([(key, cond)]),
                ..Default::default()
            }
        } else {
            api::RequestMatch {
                headers: BTreeMap::from([(key, cond)]),
                ..Default::default()
            }
        };
        rules.push(api::RouteRule {
            version: all[v % all.len()].clone(),
            weight: None,
            matches: Some(vec![m]),
        });
    }
    let mut majors = BTreeMap::new();
    if let Some(n) = c.custom_prefix.filter(|n| (*n as usize) <= c.majors.len()) {
        majors.insert(
            n.to_string(),
            api::MajorSpec {
                path_prefix: Some(format!("/api.{n}")),
                host: None,
            },
        );
    }
    if let Some(n) = c.host_major.filter(|n| (*n as usize) <= c.majors.len()) {
        majors.insert(
            n.to_string(),
            api::MajorSpec {
                path_prefix: None,
                host: Some(format!("h{n}.example.com")),
            },
        );
    }
    let spec = api::RouteSpec {
        service: SVC.into(),
        rules,
        default_major: c
            .default_major
            .and_then(|i| c.majors.get(i))
            .map(|(m, _)| m.to_string()),
        majors,
        ..Default::default()
    };
    let route = api::Route {
        metadata: meta(SVC),
        spec,
        status: None,
    };
    let ms = api::Microservice {
        metadata: meta(SVC),
        spec: api::MicroserviceSpec {
            port: 8000,
            protocol: api::Protocol::Http,
            versions: all
                .iter()
                .map(|v| api::VersionSpec {
                    version: v.clone(),
                    image: Some(format!("img:{v}")),
                    ..Default::default()
                })
                .collect(),
        },
        status: None,
    };
    let ingress = api::IngressPolicy {
        metadata: meta("edge"),
        spec: api::IngressPolicySpec {
            hosts: vec!["edge.example.com".into()],
            routes: vec![api::IngressRoute {
                path_prefix: INGRESS_PREFIX.into(),
                service: SVC.into(),
            }],
            // CSRF exemptions copy routes; routing must not change.
            csrf: Some(api::Csrf {
                enabled: true,
                exclude: vec!["/svc/v1/hooks".into(), "/svc/api.2".into(), "/svc/x".into()],
            }),
            ..Default::default()
        },
        status: None,
    };
    vec![
        Input::new(Resource::Microservice(ms)),
        Input::new(Resource::Route(route)),
        Input::new(Resource::IngressPolicy(ingress)),
    ]
}

fn get<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Full-match regex, as Envoy's safe_regex.
fn full(re: &str, v: &str) -> bool {
    regex::Regex::new(&format!("^(?:{re})$"))
        .unwrap()
        .is_match(v)
}

fn string_match(m: &Value, v: Option<&String>) -> bool {
    let Some(v) = v else { return false };
    if let Some(e) = m["exact"].as_str() {
        return v == e;
    }
    if let Some(p) = m["prefix"].as_str() {
        return v.starts_with(p);
    }
    m["regex"].as_str().is_some_and(|r| full(r, v))
}

/// Istio's first-match evaluation of a VirtualService for one request:
/// the chosen route's destinations as version -> weight.
fn evaluate(vs: &Value, req: &RequestSample) -> BTreeMap<String, u64> {
    for route in vs["spec"]["http"].as_array().unwrap() {
        let hit = match route["match"].as_array() {
            None => true,
            Some(ms) => ms.iter().any(|m| {
                m["uri"]["regex"]
                    .as_str()
                    .is_none_or(|r| full(r, &req.path))
                    && m["authority"]["regex"]
                        .as_str()
                        .is_none_or(|r| req.host.as_deref().is_some_and(|h| full(r, h)))
                    && m["headers"]
                        .as_object()
                        .is_none_or(|h| h.iter().all(|(k, c)| string_match(c, req.headers.get(k))))
                    && m["queryParams"]
                        .as_object()
                        .is_none_or(|q| q.iter().all(|(k, c)| string_match(c, req.query.get(k))))
            }),
        };
        if hit {
            return route["route"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let v = d["headers"]["response"]["set"]["x-packlight-version"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    (v, d["weight"].as_u64().unwrap_or(100))
                })
                .collect();
        }
    }
    BTreeMap::new()
}

fn check_routes(vs: &Value, subsets: &BTreeMap<String, String>, ingress: bool) {
    let routes = vs["spec"]["http"].as_array().unwrap();
    let mut seen_weighted = false;
    for r in routes {
        let dests = r["route"].as_array().unwrap();
        let is_match = r["name"].as_str().unwrap().contains("match-");
        if is_match {
            assert!(!seen_weighted, "match route after a weight route");
            assert_eq!(dests.len(), 1);
        } else {
            seen_weighted = true;
            let sum: u64 = dests.iter().map(|d| d["weight"].as_u64().unwrap()).sum();
            assert_eq!(sum, 100, "weights of {} sum to {sum}", r["name"]);
        }
        for d in dests {
            let subset = d["destination"]["subset"].as_str().unwrap();
            let label = subsets
                .get(subset)
                .unwrap_or_else(|| panic!("subset {subset} not in the DestinationRule"));
            assert_eq!(
                d["headers"]["response"]["set"]["x-packlight-version"],
                *label
            );
        }
    }
    let last = routes.last().unwrap();
    assert!(last["name"].as_str().unwrap().ends_with("default"));
    if ingress {
        assert_eq!(
            last["match"],
            serde_json::json!([{"uri": {"regex": "/svc(/.*)?"}}])
        );
    } else {
        assert!(last.get("match").is_none(), "default route has a match");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn rendered_routes_keep_the_invariants(c in case(), path_major in 0u32..5, custom in any::<bool>(), hit in 0usize..4, tail in prop::sample::select(vec!["", "/x", "/hooks/y"]), host in prop::option::of((1u32..=4, any::<bool>()))) {
        let model = packlight_model::build(&inputs(&c));
        prop_assert!(!model.has_errors(), "{:#?}", model.diagnostics);
        let opts = RenderOptions::default();
        let objs = render(&model.mesh, &opts);
        prop_assert_eq!(&objs, &render(&model.mesh, &opts));

        let dr = get(&objs, "DestinationRule", SVC);
        let subsets: BTreeMap<String, String> = dr["spec"]["subsets"].as_array().unwrap().iter()
            .map(|s| (s["name"].as_str().unwrap().to_string(), s["labels"]["version"].as_str().unwrap().to_string()))
            .collect();
        let names: BTreeSet<&String> = subsets.keys().collect();
        prop_assert_eq!(names.len(), subsets.len());
        let vs = get(&objs, "VirtualService", SVC);
        check_routes(vs, &subsets, false);
        let ivs = get(&objs, "VirtualService", "ingress-edge");
        check_routes(ivs, &subsets, true);

        // Same decision as the normative algorithm, in the mesh and at
        // the ingress.
        let table = model.mesh.services[&ServiceKey::new(NS, SVC)].route.clone().unwrap();
        let seg = if custom { format!("/api.{path_major}") } else { format!("/v{path_major}") };
        let mut req = RequestSample::get(&format!("{seg}{tail}"));
        if let Some((n, port)) = host {
            req = req.host(&if port { format!("h{n}.example.com:8080") } else { format!("h{n}.example.com") });
        }
        if let Some((_, value, query)) = c.matches.get(hit) {
            let key = format!("k{hit}");
            if *query { req.query.insert(key, value.clone()); } else { req.headers.insert(key, value.clone()); }
        }
        for (view, vantage, req) in [
            (vs, Vantage::Mesh, req.clone()),
            (ivs, Vantage::Ingress { prefix: INGRESS_PREFIX }, RequestSample { path: format!("{INGRESS_PREFIX}{}", req.path), ..req.clone() }),
        ] {
            let want: BTreeMap<String, u64> = match table.decide(&req, vantage) {
                packlight_model::routing::Decision::Pinned { version, .. } => BTreeMap::from([(version.to_string(), 100)]),
                packlight_model::routing::Decision::Weighted { weights, .. } => weights.iter().map(|w| (w.version.to_string(), u64::from(w.weight))).collect(),
            };
            prop_assert_eq!(evaluate(view, &req), want, "request {:?}", req);
        }
    }
}
