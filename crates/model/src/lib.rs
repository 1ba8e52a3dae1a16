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

pub mod build;
pub mod diagnostic;
pub mod ir;
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
pub fn load(texts: &[(Option<&str>, &str)], namespace: &str) -> (Model, Vec<Input>) {
    let mut inputs = Vec::new();
    let mut early = Vec::new();
    for (file, text) in texts {
        match source::parse_yaml(text, *file) {
            Ok(docs) => {
                let (ok, errs) = resource::from_documents(docs, namespace);
                inputs.extend(ok);
                early.extend(errs);
            }
            Err(d) => early.push(d),
        }
    }
    let mut model = build(&inputs);
    if !early.is_empty() {
        early.extend(model.diagnostics);
        model.diagnostics = early;
    }
    (model, inputs)
}
