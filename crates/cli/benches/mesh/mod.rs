//! The render benchmarks' mesh and the path they time, shared by the
//! criterion bench (`render.rs`) and the interleaved ratio bench
//! (`render_ratio.rs`).

/// The benchmark mesh as multi-document YAML files of 1,000 services each
/// (one file may hold at most 8 MiB), over 10 namespaces.
#[allow(dead_code)] // not every bench binary uses each
pub fn mesh_yaml(services: usize) -> Vec<String> {
    mesh_in(services, 10)
}

/// [`mesh_yaml`] over `namespaces` namespaces (the services taking
/// turns), each under its deny-all MeshPolicy.
pub fn mesh_in(services: usize, namespaces: usize) -> Vec<String> {
    let mut files = Vec::new();
    let mut out = String::with_capacity(1000 * 1200);
    for n in 0..namespaces {
        out.push_str(&format!(
            "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {{name: default, namespace: ns{n}}}\nspec: {{mtls: strict, access: deny, egress: deny}}\n---\n"
        ));
    }
    for i in 0..services {
        if i > 0 && i % 1000 == 0 {
            files.push(std::mem::take(&mut out));
        }
        let ns = format!("ns{}", i % namespaces);
        let caller = format!("svc{}", (i + 1) % services);
        let caller_ns = format!("ns{}", (i + 1) % services % namespaces);
        out.push_str(&format!(
            "apiVersion: packlight.dev/v1alpha1
kind: Microservice
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  port: 8000
  versions:
  - {{version: \"1.0\", image: \"example/app:1.0\"}}
  - {{version: \"1.1\", image: \"example/app:1.1\"}}
  - {{version: \"2.0\", image: \"example/app:2.0\"}}
---
apiVersion: packlight.dev/v1alpha1
kind: Route
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  service: svc{i}
  rules:
  - {{version: \"1.0\", weight: 80}}
  - {{version: \"1.1\", weight: 20}}
  - {{version: \"2.0\", weight: 100}}
  - version: \"2.0\"
    matches: [{{headers: {{gray: {{exact: \"1\"}}}}}}]
---
apiVersion: packlight.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  service: svc{i}
  allow:
  - {{from: [\"{caller_ns}/{caller}\"], methods: [GET]}}
---
apiVersion: packlight.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: svc{i}, namespace: {ns}}}
spec:
  service: svc{i}
  hosts: [\"api{i}.example.com\", \"10.{}.{}.0/24:5432\"]
---
",
            (i / 256) % 256,
            i % 256
        ));
    }
    files.push(out);
    files
}

/// The whole path, writing into a sink; returns the number of objects
/// written.
#[allow(dead_code)] // not every bench binary uses each
pub fn render(files: &[String]) -> usize {
    render_to(
        files,
        &mut std::io::BufWriter::with_capacity(1 << 16, std::io::sink()),
    )
}

/// The whole path, writing the YAML into `out`; returns the number of
/// objects written.
pub fn render_to(files: &[String], out: &mut impl std::io::Write) -> usize {
    let texts: Vec<(Option<&str>, &str)> = files
        .iter()
        .map(|t| (Some("mesh.yaml"), t.as_str()))
        .collect();
    let (model, _) = packlight_model::load(&texts, "default");
    assert!(!model.has_errors(), "{:?}", model.diagnostics.first());
    let mut yaml = packlight_istio::yaml::YamlWriter::new();
    let mut objects = 0;
    packlight_istio::render_each(
        &model.mesh,
        &packlight_istio::RenderOptions::default(),
        |o| {
            yaml.document(out, o).expect("writing the YAML");
            objects += 1;
        },
    );
    assert_eq!(yaml.fallbacks(), 0, "every object on the fast path");
    objects
}
