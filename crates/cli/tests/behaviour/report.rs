//! What both runners of the behaviour table share once a case has run:
//! its verdict (with `knownFailure` taken into account), the progress
//! line, the summary and the final assertion; and the form encoding of
//! login steps.

use std::fmt::Write as _;

use super::table::Case;

/// A case's result.
pub enum Verdict {
    Pass,
    Fail(Vec<String>),
    Skipped(String),
    /// Failed as its `knownFailure` says (not counted as a failure).
    Known(String, Vec<String>),
}

pub struct CaseReport {
    pub file: String,
    pub case: String,
    pub verdict: Verdict,
    /// The case's note on how engines differ.
    pub differs: Option<String>,
}

impl CaseReport {
    /// A failure of `case` (or of the file: `(file)`, `(start)`) before or
    /// outside the cases.
    pub fn failed(file: &str, case: &str, problem: String) -> CaseReport {
        CaseReport {
            file: file.to_owned(),
            case: case.to_owned(),
            verdict: Verdict::Fail(vec![problem]),
            differs: None,
        }
    }
}

/// The verdict of a case that ran with these `problems`.
pub fn verdict(case: &Case, problems: Vec<String>) -> Verdict {
    match (&case.known_failure, problems.is_empty()) {
        (None, true) => Verdict::Pass,
        (None, false) => Verdict::Fail(problems),
        (Some(why), false) => Verdict::Known(why.clone(), problems),
        (Some(why), true) => Verdict::Fail(vec![format!(
            "passes although marked knownFailure ({why}): remove knownFailure"
        )]),
    }
}

/// Prints the progress line of one case and records it.
pub fn record(out: &mut Vec<CaseReport>, prefix: &str, file: &str, case: &Case, verdict: Verdict) {
    eprintln!(
        "{prefix}: {file}: {}: {}",
        case.name,
        match &verdict {
            Verdict::Pass => "pass",
            Verdict::Fail(_) => "FAIL",
            Verdict::Skipped(_) => "skipped",
            Verdict::Known(..) => "known failure",
        }
    );
    out.push(CaseReport {
        file: file.to_owned(),
        case: case.name.clone(),
        verdict,
        differs: case.differs.clone(),
    });
}

/// Prints every case's result and the counts, then fails the test if any
/// case failed.
pub fn conclude(reports: &[CaseReport], engine: &str) {
    let mut summary = String::new();
    let (mut pass, mut fail, mut skipped, mut known) = (0, 0, 0, 0);
    for r in reports {
        let note = r
            .differs
            .as_deref()
            .map(|d| format!(" [engines differ: {d}]"))
            .unwrap_or_default();
        match &r.verdict {
            Verdict::Pass => {
                pass += 1;
                let _ = writeln!(summary, "pass  {}: {}{note}", r.file, r.case);
            }
            Verdict::Skipped(why) => {
                skipped += 1;
                let _ = writeln!(summary, "skip  {}: {} ({why})", r.file, r.case);
            }
            Verdict::Known(why, problems) => {
                known += 1;
                let _ = writeln!(
                    summary,
                    "KNOWN {}: {} (known failure: {why})",
                    r.file, r.case
                );
                for p in problems {
                    let _ = writeln!(summary, "        - {p}");
                }
            }
            Verdict::Fail(problems) => {
                fail += 1;
                let _ = writeln!(summary, "FAIL  {}: {}{note}", r.file, r.case);
                for p in problems {
                    let _ = writeln!(summary, "        - {p}");
                }
            }
        }
    }
    eprintln!(
        "{summary}behaviour table ({engine}): {pass} cases passed, {fail} failed, {skipped} skipped, {known} known failures"
    );
    assert_eq!(fail, 0, "behaviour cases failed:\n{summary}");
}

/// `application/x-www-form-urlencoded` value.
pub fn form_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
