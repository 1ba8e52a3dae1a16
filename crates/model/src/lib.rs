//! # packlight-model — validation and the intermediate representation
//!
//! The room where packlight's resources get their *meaning*. In: resources
//! (typed, from `packlight-api`), or YAML/JSON text parsed here with
//! positions. Out: a [`Model`]: the mesh IR ([`ir::Mesh`]: services,
//! versions, majors with their path prefixes, ordered route tables, access
//! and egress policy per workload), a verdict per resource, and
//! [`Diagnostic`]s naming the resource, the field path, the file position
//! and what to do.
//!
//! Pure and deterministic: no I/O, no clock, ordered maps only. Every rule
//! of DESIGN.md is checked here, once, and reused by the CLI, the operator,
//! the standalone API and the console; translators (`packlight-istio`,
//! `packlight-xds`) read only the IR and never re-check input.
#![forbid(unsafe_code)]
// A Diagnostic is large (every field of DESIGN.md's diagnostic type) and
// is returned only on the cold path of rejected input; boxing it everywhere
// would buy nothing measurable.
#![allow(clippy::result_large_err)]

pub mod build;
pub mod diagnostic;
mod direct;
pub mod ir;
mod lines;
pub mod parse;
pub mod resource;
pub mod routing;
pub mod source;
mod validate;
pub mod version;

pub use build::{Model, Verdict, build};
pub use diagnostic::{Diagnostic, Reason, ResourceId, Severity};
pub use resource::{Input, Resource};
pub use version::Version;

/// Parses text (YAML or JSON, many documents) into resources and builds
/// the model. A syntax error rejects the whole text; schema errors reject
/// the document they are in. `namespace` applies where none is given.
///
/// Valid input is parsed once, without positions, straight into the typed
/// resources ([`direct`], its events from the line scanner `lines` for
/// plain block YAML, else `yaml_rust2`); a text that path does not take
/// whole is read through `serde_json` values, and only a text that some
/// diagnostic is about is parsed again, with positions, to place it.
///
/// The inputs come back ordered by namespace and name, then by where
/// they were (text, document); their origins say where.
pub fn load(texts: &[(Option<&str>, &str)], namespace: &str) -> (Model, Vec<Input>) {
    let (mut inputs, taken) = direct::read_all(texts, namespace);
    let mut early: Vec<(Option<resource::Origin>, Diagnostic)> = Vec::new();
    for (i, (file, text)) in texts.iter().enumerate() {
        if taken[i] {
            continue;
        }
        match source::parse_yaml_values(text, *file) {
            Ok(docs) => {
                let (ok, errs) = resource::from_documents(docs, i, namespace);
                inputs.extend(ok);
                early.extend(errs.into_iter().map(|(o, d)| (Some(o), d)));
            }
            // Syntax errors carry their position already.
            Err(d) => early.push((None, d)),
        }
    }
    order_inputs(&mut inputs);
    let mut model = build::build_unplaced(&inputs);
    model.pending.extend(early);
    // Each text that a diagnostic is about is parsed once more, with
    // positions.
    let mut docs_of: std::collections::BTreeMap<usize, Vec<source::SourceDoc>> = Default::default();
    let model = model.settled(|origin, d| {
        let Some(o) = origin else { return d };
        let (file, text) = texts[o.text];
        let docs = docs_of
            .entry(o.text)
            .or_insert_with(|| source::parse_yaml(text, file).unwrap_or_default());
        match docs.get(o.doc) {
            Some(doc) => doc.locate(d),
            None => Diagnostic {
                file: file.map(str::to_string),
                ..d
            },
        }
    });
    (model, inputs)
}

/// Puts inputs in the order [`load`] returns them: by namespace and name,
/// then where each was (text, document), so of two resources with one
/// kind, namespace and name the first in the input is first here too.
/// The fast path reads them in nearly this order already (its guess of
/// each document's key); checking that costs one pass.
fn order_inputs(inputs: &mut [Input]) {
    fn key(i: &Input) -> (&str, &str, Option<&resource::Origin>) {
        let m = i.resource.meta();
        (
            m.namespace.as_deref().unwrap_or("default"),
            m.name.as_deref().unwrap_or_default(),
            i.origin.as_ref(),
        )
    }
    if !inputs.is_sorted_by(|a, b| key(a) <= key(b)) {
        inputs.sort_by(|a, b| key(a).cmp(&key(b)));
    }
}

/// Runs `here` on this thread and `there` on a second one, at once, and
/// returns both results: how the model uses the second core for the two
/// halves of a large input. When no thread can be had, `there` runs here
/// afterwards; `None` only when `there` panicked.
pub(crate) fn both<A, B: Send>(
    here: impl FnOnce() -> A,
    there: impl FnOnce() -> B + Send,
) -> (A, Option<B>) {
    let mut there = Some(there);
    let slot = &mut there;
    let (a, b) = std::thread::scope(|s| {
        let other = std::thread::Builder::new().spawn_scoped(s, move || slot.take().map(|f| f()));
        let a = here();
        (a, other.ok().and_then(|h| h.join().ok().flatten()))
    });
    // Still here: the thread was never started.
    (a, b.or_else(|| there.take().map(|f| f())))
}

#[cfg(test)]
/// The text of every example and golden input file (`examples/`,
/// `examples/httpbin/`, `tests/golden/inputs/`), in path order: the
/// corpus the parsing tests compare on.
pub(crate) fn example_files() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut texts = Vec::new();
    for dir in ["examples", "examples/httpbin", "tests/golden/inputs"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .expect("the examples and golden inputs")
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        texts.extend(
            files
                .iter()
                .map(|f| std::fs::read_to_string(f).expect("a file")),
        );
    }
    assert!(texts.len() > 20, "{}", texts.len());
    texts
}

/// `base` with `edits` made in turn, each (where, how many bytes to cut,
/// which of `pieces` to put in), moved to character boundaries: the
/// edited texts the parsing tests compare on.
#[cfg(test)]
pub(crate) fn edited(base: &str, edits: &[(usize, usize, usize)], pieces: &[&str]) -> String {
    let mut text = base.to_string();
    for &(at, cut, put) in edits {
        let mut at = at % (text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + cut).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        text.replace_range(at..end, pieces[put % pieces.len()]);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_returns_both_results_and_none_for_a_panic() {
        assert_eq!(crate::both(|| 1, || 2), (1, Some(2)));
        let (a, b) = crate::both(|| "here", || -> u8 { panic!("there") });
        assert_eq!((a, b), ("here", None));
    }
}
