//! Checking responses against a case's expectations: every response is
//! checked, failures are counted per kind (with one sample), and the
//! version distribution is judged once all responses are in.

use std::collections::BTreeMap;

use super::table::Expect;

/// What one request produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// An HTTP answer (headers with lower-case names).
    Response {
        status: u16,
        headers: BTreeMap<String, String>,
        body: String,
    },
    /// No HTTP answer: refused, reset, closed, timed out.
    Failed(String),
}

/// Accumulates the outcomes of one case.
#[derive(Debug, Default)]
pub struct Tally {
    pub total: u32,
    pub statuses: BTreeMap<u16, u32>,
    pub failed: u32,
    /// Body `version` (or `-` when the body has none) -> count.
    pub versions: BTreeMap<String, u32>,
    /// Problem -> (count, sample).
    problems: BTreeMap<String, (u32, String)>,
}

/// The `version` field of a demo-app JSON body.
pub fn body_version(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("version")?.as_str().map(str::to_owned)
}

impl Tally {
    fn problem(&mut self, kind: String, sample: String) {
        let e = self.problems.entry(kind).or_insert((0, sample));
        e.0 += 1;
    }

    /// Records one outcome, checking the per-response expectations.
    pub fn add(&mut self, expect: &Expect, outcome: &Outcome) {
        self.total += 1;
        let (status, headers, body) = match outcome {
            Outcome::Failed(e) => {
                self.failed += 1;
                if !expect.fails && !expect.refused {
                    self.problem("request failed (expected an HTTP answer)".into(), e.clone());
                }
                return;
            }
            Outcome::Response {
                status,
                headers,
                body,
            } => (*status, headers, body),
        };
        *self.statuses.entry(status).or_default() += 1;
        let sample = || format!("status {status}, body {}", clip(body));
        if expect.fails {
            self.problem(
                format!("got status {status} (expected the request to fail)"),
                sample(),
            );
        }
        if expect.refused && (200..300).contains(&status) {
            self.problem(
                format!("got status {status} (expected refused: failure or non-2xx)"),
                sample(),
            );
        }
        if let Some(want) = expect.status
            && status != want
        {
            self.problem(format!("status {status} (expected {want})"), sample());
        }
        if let Some(set) = &expect.status_in
            && !set.contains(&status)
        {
            self.problem(
                format!("status {status} (expected one of {set:?})"),
                sample(),
            );
        }
        for s in &expect.body_contains {
            if !body.contains(s.as_str()) {
                self.problem(format!("body lacks {s:?}"), sample());
            }
        }
        for s in &expect.body_not_contains {
            if body.contains(s.as_str()) {
                self.problem(format!("body contains {s:?}"), sample());
            }
        }
        for (name, want) in &expect.headers {
            let got = headers.get(&name.to_ascii_lowercase());
            if let Some(present) = want.present
                && got.is_some() != present
            {
                let what = if present { "missing" } else { "present" };
                self.problem(
                    format!("header {name} {what}"),
                    format!("{got:?}; {}", sample()),
                );
            }
            if let Some(eq) = &want.equals
                && got != Some(eq)
            {
                self.problem(
                    format!("header {name} = {got:?} (expected {eq:?})"),
                    sample(),
                );
            }
            if let Some(c) = &want.contains
                && !got.is_some_and(|g| g.contains(c.as_str()))
            {
                self.problem(
                    format!("header {name} = {got:?} (expected to contain {c:?})"),
                    sample(),
                );
            }
        }
        let version = body_version(body);
        let key = version.clone().unwrap_or_else(|| "-".to_owned());
        *self.versions.entry(key.clone()).or_default() += 1;
        if let Some(want) = &expect.version
            && version.as_deref() != Some(want.as_str())
        {
            self.problem(
                format!("answered by version {key} (expected {want})"),
                sample(),
            );
        }
        if let Some(set) = &expect.versions_in
            && !set.contains(&key)
        {
            self.problem(
                format!("answered by version {key} (expected one of {set:?})"),
                sample(),
            );
        }
        if expect.version_header_matches_body {
            let header = headers.get("x-packlight-version");
            if header != version.as_ref() || header.is_none() {
                self.problem(
                    format!("x-packlight-version {header:?} != body version {version:?}"),
                    sample(),
                );
            }
        }
    }

    /// The failed expectations of the whole case, one line each.
    pub fn verdict(&self, expect: &Expect, wanted: u32) -> Vec<String> {
        let mut out = Vec::new();
        if self.total < wanted {
            out.push(format!(
                "only {} of {wanted} requests were sent in the time allowed",
                self.total
            ));
        }
        for (kind, (n, sample)) in &self.problems {
            out.push(format!(
                "{n} of {} responses: {kind}; e.g. {sample}",
                self.total
            ));
        }
        for (status, min) in &expect.at_least {
            let got = self.statuses.get(status).copied().unwrap_or(0);
            if got < *min {
                out.push(format!(
                    "{got} responses with status {status} (expected at least {min}); statuses {:?}",
                    self.statuses
                ));
            }
        }
        if let Some(want) = &expect.versions {
            out.extend(distribution_problems(
                &self.versions,
                want,
                expect.tolerance.unwrap_or(4.0),
            ));
        }
        out
    }
}

/// Each expected version within `tolerance` points of its percentage, and
/// no version answering that is not expected (or expected at 0).
pub fn distribution_problems(
    got: &BTreeMap<String, u32>,
    want: &BTreeMap<String, f64>,
    tolerance: f64,
) -> Vec<String> {
    let total: u32 = got.values().sum();
    if total == 0 {
        return vec!["no responses to judge the version split".to_owned()];
    }
    let pct = |n: u32| f64::from(n) * 100.0 / f64::from(total);
    let mut out = Vec::new();
    for (version, share) in want {
        let n = got.get(version).copied().unwrap_or(0);
        let p = pct(n);
        if (p - share).abs() > tolerance {
            out.push(format!(
                "version {version}: {p:.1}% of {total} ({n}), expected {share}% ±{tolerance}"
            ));
        }
    }
    for (version, n) in got {
        if !want.contains_key(version) {
            out.push(format!(
                "version {version} answered {n} of {total} ({:.1}%), expected none",
                pct(*n)
            ));
        }
    }
    out
}

fn clip(s: &str) -> String {
    const MAX: usize = 160;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}…", &s[..end])
}
