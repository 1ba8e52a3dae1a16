//! Bad input, one case per validation rule and per malformed-YAML kind:
//! the diagnostic's text and position are asserted, nothing reaches
//! stdout, the exit code is 1, and nothing panics.

use std::process::{Command, Output};

fn packlight(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_packlight"));
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("packlight starts");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.unwrap_or("").to_string();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("packlight runs");
    writer.join().expect("writer");
    out
}

/// Line and column (1-based) of the first occurrence of `needle`.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in input"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = at - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

const MS: &str = "apiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {name: httpbin, namespace: demo}\nspec:\n  port: 8000\n  versions:\n  - {version: \"1.0\"}\n  - {version: \"1.1\"}\n  - {version: \"2.0\"}\n---\n";

fn route(body: &str) -> String {
    format!(
        "apiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {{name: httpbin, namespace: demo}}\nspec:\n  service: httpbin\n{body}"
    )
}

/// (name, input, needle at the reported position, expected text after
/// `file:line:column: `).
fn cases() -> Vec<(&'static str, String, &'static str, &'static str)> {
    vec![
        (
            "weights must sum to 100",
            route("  rules:\n  - {version: \"1.0\", weight: 70}\n  - {version: \"1.1\", weight: 20}\n"),
            "70}",
            "Route demo/httpbin: spec.rules[0].weight: weights of major 1 sum to 90 (1.0=70, 1.1=20), not 100",
        ),
        (
            "a Route needs a weight rule",
            route("  rules:\n  - version: \"2.0\"\n    matches: [{headers: {gray: {exact: \"1\"}}}]\n"),
            "version: \"2.0\"",
            "Route demo/httpbin: spec.rules: no weight rule",
        ),
        (
            "weight and matches together",
            route("  rules:\n  - {version: \"1.0\"}\n  - version: \"2.0\"\n    weight: 100\n    matches: [{headers: {gray: {exact: \"1\"}}}]\n"),
            "version: \"2.0\"",
            "Route demo/httpbin: spec.rules[1]: a rule has both weight and matches",
        ),
        (
            "one weight rule per version",
            route("  rules:\n  - {version: \"1.0\", weight: 50}\n  - version: \"1.0\"\n    weight: 50\n"),
            "\"1.0\"\n    weight",
            "Route demo/httpbin: spec.rules[1].version: version 1.0 has two weight rules",
        ),
        (
            "bad version string",
            route("  rules:\n  - {version: \"1.x\", weight: 100}\n"),
            "\"1.x\"",
            "Route demo/httpbin: spec.rules[0].version: \"1.x\" is not a version",
        ),
        (
            "unquoted version is a number",
            route("  rules:\n  - {version: 1.0, weight: 100}\n"),
            "1.0, weight",
            "Route demo/httpbin: spec.rules[0].version: invalid type: floating point `1.0`, expected a string",
        ),
        (
            "defaultMajor must have weights",
            route("  defaultMajor: \"3\"\n  rules:\n  - {version: \"1.0\"}\n"),
            "\"3\"",
            "Route demo/httpbin: spec.defaultMajor: major 3 has no weight rule",
        ),
        (
            "majors: pathPrefix or host",
            route("  majors:\n    \"1\": {pathPrefix: /a, host: a.example.com}\n  rules:\n  - {version: \"1.0\"}\n"),
            "{pathPrefix: /a",
            "Route demo/httpbin: spec.majors.1: give exactly one of pathPrefix, host",
        ),
        (
            "regex must be RE2",
            route("  rules:\n  - {version: \"1.0\"}\n  - version: \"1.0\"\n    matches: [{headers: {x-user: {regex: \"(a)\\\\1\"}}}]\n"),
            "\"(a)",
            "Route demo/httpbin: spec.rules[1].matches[0].headers.x-user.regex: \"(a)\\\\1\" is not an RE2 regex",
        ),
        (
            "no query prefix",
            route("  rules:\n  - {version: \"1.0\"}\n  - version: \"1.0\"\n    matches: [{queryParams: {debug: {prefix: \"t\"}}}]\n"),
            "\"t\"",
            "Route demo/httpbin: spec.rules[1].matches[0].queryParams.debug.prefix: query parameters match by exact or regex only",
        ),
        (
            "empty match item",
            route("  rules:\n  - {version: \"1.0\"}\n  - version: \"1.0\"\n    matches: [{}]\n"),
            "{}]",
            "Route demo/httpbin: spec.rules[1].matches[0]: empty match item",
        ),
        (
            "bad duration",
            route("  timeout: 5 seconds\n  rules:\n  - {version: \"1.0\"}\n"),
            "5 seconds",
            "Route demo/httpbin: spec.timeout: \"5 seconds\" is not a duration: unknown unit (ms, s, m, h) (write a duration such as 500ms",
        ),
        (
            "bad retry condition",
            route("  retries: {attempts: 2, on: [sometimes]}\n  rules:\n  - {version: \"1.0\"}\n"),
            "sometimes",
            "Route demo/httpbin: spec.retries.on[0]: \"sometimes\" is not a retry condition",
        ),
        (
            "Route version missing from the Microservice",
            format!("{MS}{}", route("  rules:\n  - {version: \"1.0\", weight: 50}\n  - {version: \"1.2\", weight: 50}\n")),
            "\"1.2\"",
            "Route demo/httpbin: spec.rules[1].version: version 1.2 is not a version of Microservice demo/httpbin (it has 1.0, 1.1, 2.0)",
        ),
        (
            "two Routes for one service conflict",
            format!("{}---\n{}", route("  rules:\n  - {version: \"1.0\"}\n"), route("  rules:\n  - {version: \"1.1\"}\n").replace("name: httpbin,", "name: httpbin-2,")),
            "httpbin\n  rules",
            "Route demo/httpbin: spec.service: service httpbin has 2 Routes (httpbin, httpbin-2); only one Route per service",
        ),
        (
            "MeshPolicy is named default",
            "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {name: strict, namespace: demo}\nspec: {mtls: strict}\n".into(),
            "strict, namespace",
            "MeshPolicy demo/strict: metadata.name: a MeshPolicy must be named default, not \"strict\"",
        ),
        (
            "egress CIDR with host bits",
            "apiVersion: packlight.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: e, namespace: demo}\nspec:\n  hosts: [\"example.com\", \"10.0.0.1/24:5432\"]\n".into(),
            "\"10.0.0.1/24:5432\"",
            "EgressPolicy demo/e: spec.hosts[1]: \"10.0.0.1/24:5432\" has host bits set; write the network address 10.0.0.0/24",
        ),
        (
            "egress bad port",
            "apiVersion: packlight.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: e, namespace: demo}\nspec:\n  hosts: [\"example.com:70000\"]\n".into(),
            "\"example.com:70000\"",
            "EgressPolicy demo/e: spec.hosts[0]: \"example.com:70000\": \"70000\" is not a port (1-65535)",
        ),
        (
            "access rule names a caller",
            "apiVersion: packlight.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: a, namespace: demo}\nspec:\n  service: httpbin\n  allow:\n  - methods: [GET]\n".into(),
            "methods: [GET]",
            "AccessPolicy demo/a: spec.allow[0]: the rule names no caller",
        ),
        (
            "access path form",
            "apiVersion: packlight.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: a, namespace: demo}\nspec:\n  service: httpbin\n  allow:\n  - from: [sleep]\n    paths: [\"/a/*/b\"]\n".into(),
            "\"/a/*/b\"",
            "AccessPolicy demo/a: spec.allow[0].paths[0]: \"/a/*/b\" is not a path rule",
        ),
        (
            "access method",
            "apiVersion: packlight.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: a, namespace: demo}\nspec:\n  service: httpbin\n  allow:\n  - from: [sleep]\n    methods: [FETCH]\n".into(),
            "FETCH",
            "AccessPolicy demo/a: spec.allow[0].methods[0]: \"FETCH\" is not an HTTP method",
        ),
        (
            "ingress to an unknown service",
            "apiVersion: packlight.dev/v1alpha1\nkind: IngressPolicy\nmetadata: {name: i, namespace: demo}\nspec:\n  hosts: [data.example.com]\n  routes:\n  - {pathPrefix: /x, service: nowhere}\n".into(),
            "nowhere",
            "IngressPolicy demo/i: spec.routes[0].service: no Microservice nowhere in namespace demo",
        ),
        (
            "CORS credentials with *",
            format!("{MS}apiVersion: packlight.dev/v1alpha1\nkind: IngressPolicy\nmetadata: {{name: i, namespace: demo}}\nspec:\n  hosts: [data.example.com]\n  routes:\n  - {{pathPrefix: /x, service: httpbin}}\n  cors: {{allowOrigins: [\"*\"], allowCredentials: true}}\n"),
            "true}",
            "IngressPolicy demo/i: spec.cors.allowCredentials: credentials cannot be allowed for the origin *",
        ),
        (
            "CORS origin form",
            format!("{MS}apiVersion: packlight.dev/v1alpha1\nkind: IngressPolicy\nmetadata: {{name: i, namespace: demo}}\nspec:\n  hosts: [data.example.com]\n  routes:\n  - {{pathPrefix: /x, service: httpbin}}\n  cors: {{allowOrigins: [\"console.example.com\"]}}\n"),
            "\"console.example.com\"",
            "IngressPolicy demo/i: spec.cors.allowOrigins[0]: \"console.example.com\" is not an origin",
        ),
        (
            "reserved service name",
            "apiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {name: default, namespace: demo}\nspec:\n  port: 80\n  versions: [{version: \"1.0\"}]\n".into(),
            "default, namespace",
            "Microservice demo/default: metadata.name: the service name \"default\" is reserved",
        ),
        (
            "reserved callee name",
            "apiVersion: packlight.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: a, namespace: demo}\nspec:\n  service: deny-all\n  allow: [{from: [sleep]}]\n".into(),
            "deny-all\n",
            "AccessPolicy demo/a: spec.service: the service name \"deny-all\" is reserved",
        ),
        (
            "ingress VirtualService name clash",
            format!("{}---\napiVersion: packlight.dev/v1alpha1\nkind: IngressPolicy\nmetadata: {{name: web, namespace: demo}}\nspec:\n  hosts: [data.example.com]\n  routes:\n  - {{pathPrefix: /x, service: ingress-web}}\n", MS.trim_end_matches("---\n").replace("name: httpbin", "name: ingress-web")),
            "web, namespace: demo}\nspec:\n  hosts",
            "IngressPolicy demo/web: metadata.name: service ingress-web would share the VirtualService name ingress-web with this IngressPolicy",
        ),
        (
            "Microservice versions are unique",
            "apiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {name: m, namespace: demo}\nspec:\n  port: 80\n  versions:\n  - {version: \"1.0\"}\n  - {version: \"1.0\", replicas: 1}\n".into(),
            "\"1.0\", replicas",
            "Microservice demo/m: spec.versions[1].version: version 1.0 is listed twice",
        ),
        (
            "command or endpoints",
            "apiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {name: m, namespace: demo}\nspec:\n  port: 80\n  versions:\n  - {version: \"1.0\", command: [app], endpoints: [\"127.0.0.1:9000\"]}\n".into(),
            "{version: \"1.0\", command",
            "Microservice demo/m: spec.versions[0]: both command and endpoints are given",
        ),
        (
            "defined twice",
            format!("{MS}{}", MS.trim_end_matches("---\n").replace("httpbin, namespace", "httpbin,  namespace")),
            "httpbin,  namespace",
            "Microservice demo/httpbin: metadata.name: Microservice demo/httpbin is defined twice",
        ),
        (
            "wrong apiVersion",
            "apiVersion: networking.istio.io/v1\nkind: Route\nmetadata: {name: r}\nspec: {}\n".into(),
            "networking.istio.io/v1",
            "Route default/r: apiVersion: apiVersion \"networking.istio.io/v1\" is not \"packlight.dev/v1alpha1\"",
        ),
        (
            "unknown kind",
            "apiVersion: packlight.dev/v1alpha1\nkind: Rout\nmetadata: {name: r}\nspec: {}\n".into(),
            "Rout\n",
            "kind: unknown kind \"Rout\"",
        ),
        (
            "missing name",
            "apiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {namespace: demo}\nspec: {}\n".into(),
            "{namespace",
            "Route demo/: metadata.name: missing metadata.name",
        ),
        (
            "unknown field",
            route("  rules:\n  - version: \"1.0\"\n    wieght: 100\n"),
            "100\n",
            "Route demo/httpbin: spec.rules[0].wieght: unknown field \"wieght\"",
        ),
        (
            "wrong type",
            route("  rules:\n  - {version: \"1.0\", weight: eighty}\n"),
            "eighty",
            "Route demo/httpbin: spec.rules[0].weight: invalid type: string \"eighty\", expected u32",
        ),
        (
            "missing field",
            "apiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {name: r, namespace: demo}\nspec:\n  service: s\n".into(),
            "service: s",
            "Route demo/r: spec: missing field \"rules\"",
        ),
        (
            "syntax error",
            "apiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {name: r\nspec: {}\n".into(),
            ": {}\n",
            "YAML syntax error: while parsing a flow mapping, did not find expected ',' or '}'",
        ),
        (
            "a document that is not a mapping",
            "- just\n- a list\n".into(),
            "- just",
            "a document must be a mapping",
        ),
    ]
}

#[test]
fn every_rule_and_malformation_has_a_positioned_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (name, text, needle, want) in cases() {
        let path = dir.path().join(format!("{}.yaml", name.replace(' ', "-")));
        std::fs::write(&path, &text).unwrap();
        let file = path.display().to_string();
        for cmd in ["render", "validate"] {
            let out = packlight(&[cmd, "-f", &file], None);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let (line, col) = position_of(&text, needle);
            let prefix = format!("{file}:{line}:{col}: {want}");
            let ok = out.status.code() == Some(1)
                && out.stdout.is_empty()
                && stderr.lines().any(|l| l.starts_with(&prefix))
                && !stderr.contains("panicked");
            if !ok {
                failures.push(format!(
                    "{name} ({cmd}): exit {:?}, stdout {} bytes, want a line starting\n  {prefix}\ngot\n  {}",
                    out.status.code(),
                    out.stdout.len(),
                    stderr.trim().replace('\n', "\n  ")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn empty_file_is_an_error_not_silence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.yaml");
    std::fs::write(&path, "").unwrap();
    let out = packlight(&["render", "-f", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("empty.yaml: no packlight resources in the input"),
        "{stderr}"
    );
}

#[test]
fn huge_file_is_refused_with_a_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let line = "# padding padding padding padding padding padding padding padding\n";
    std::fs::write(&path, line.repeat((9 << 20) / line.len())).unwrap();
    let out = packlight(&["render", "-f", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("huge.yaml: file is larger than 8388608 bytes"),
        "{stderr}"
    );
}

#[test]
fn one_bad_document_means_no_output_at_all() {
    let text = format!(
        "{MS}{}",
        route("  rules:\n  - {version: \"1.0\", weight: 90}\n")
    );
    let out = packlight(&["render", "-f", "-"], Some(&text));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "partial output: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "-:17:30: Route demo/httpbin: spec.rules[0].weight: weights of major 1 sum to 90"
        ),
        "{stderr}"
    );
}

#[test]
fn json_diagnostics_carry_every_field() {
    let text = route("  rules:\n  - {version: \"1.0\", weight: 70}\n");
    let out = packlight(&["validate", "--format", "json", "-f", "-"], Some(&text));
    assert_eq!(out.status.code(), Some(1));
    let diags: serde_json::Value = serde_json::from_slice(&out.stderr).expect("JSON on stderr");
    let d = &diags[0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["file"], "-");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(7), Some(30))
    );
    assert_eq!(
        (
            d["kind"].as_str(),
            d["namespace"].as_str(),
            d["name"].as_str()
        ),
        (Some("Route"), Some("demo"), Some("httpbin"))
    );
    assert_eq!(d["fieldPath"], "spec.rules[0].weight");
    assert!(
        d["hint"]
            .as_str()
            .unwrap()
            .contains("add up to exactly 100")
    );
}

#[test]
fn warnings_do_not_fail() {
    let text = format!(
        "{MS}apiVersion: packlight.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: a, namespace: demo}}\nspec:\n  service: httpbin\n  allow:\n  - from: [ghost]\n"
    );
    let out = packlight(&["render", "-f", "-"], Some(&text));
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "warning: AccessPolicy demo/a: spec.allow[0].from[0]: caller demo/ghost does not exist"
        ),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("kind: AuthorizationPolicy"));
}

#[test]
fn usage_errors_exit_2() {
    let out = packlight(&["render"], None);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--filename <FILES>"), "{stderr}");
    let out = packlight(&["validate"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = packlight(&["render", "-n", "Not_A_Namespace", "-f", "-"], Some(""));
    assert_eq!(out.status.code(), Some(2));
}

/// `render --mesh-config` reads no input: it needs no `-f`, and prints the
/// same settings with or without one.
#[test]
fn mesh_config_needs_no_files() {
    let alone = packlight(&["render", "--mesh-config"], None);
    assert_eq!(alone.status.code(), Some(0), "{alone:?}");
    let text = String::from_utf8_lossy(&alone.stdout);
    assert!(text.contains("cluster.outbound"), "{text}");
    let with_f = packlight(&["render", "--mesh-config", "-f", "-"], Some(""));
    assert_eq!(with_f.status.code(), Some(0), "{with_f:?}");
    assert_eq!(with_f.stdout, alone.stdout);
}
