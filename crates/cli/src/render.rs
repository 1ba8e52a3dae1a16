//! `packlight render`, `validate` and `crds`: the translator's exact code
//! path, minus I/O to a cluster.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use packlight_istio::RenderOptions;
use packlight_model::{Diagnostic, Model};
use serde_json::Value;

use crate::input::{self, Text};
use crate::{DiagFormat, exit};

/// Inputs shared by render and validate.
#[derive(Args, Debug)]
pub struct InputArgs {
    /// Files or directories of packlight resources; `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Namespace for resources that name none.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
    /// Diagnostics as text or JSON (on stderr).
    #[arg(long = "format", value_enum, default_value_t = DiagFormat::Text)]
    format: DiagFormat,
}

/// Output encodings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Multi-document YAML.
    #[default]
    Yaml,
    /// A JSON `List`.
    Json,
}

/// `packlight render`. `-f` is required unless `--mesh-config` is given
/// (the mesh settings depend on no input).
#[derive(Args, Debug)]
#[command(mut_arg("files", |a| a.required(false).required_unless_present("mesh_config")))]
pub struct RenderArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Output encoding.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Yaml)]
    output: Output,
    /// Print lines and objects in vs. out instead of the objects.
    #[arg(long)]
    stats: bool,
    /// Print the Istio mesh settings packlight needs instead of the objects
    /// (no `-f` needed; files given are not read).
    #[arg(long = "mesh-config")]
    mesh_config: bool,
    /// Namespace of the Istio ingress gateway.
    #[arg(long = "gateway-namespace", default_value = "istio-system")]
    gateway_namespace: String,
    /// Principal of the ingress gateway (for `ingress: true`).
    #[arg(
        long = "ingress-principal",
        default_value = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    )]
    ingress_principal: String,
}

/// `packlight validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    #[command(flatten)]
    input: InputArgs,
}

/// Reads and builds; on any error prints the diagnostics and returns None.
fn load(args: &InputArgs) -> anyhow::Result<Option<(Model, Vec<Text>)>> {
    if !packlight_model::resource::is_dns_label(&args.namespace) {
        anyhow::bail!("{:?} is not a namespace name", args.namespace);
    }
    let texts = match input::read_all(&args.files) {
        Ok(t) => t,
        Err(diags) => {
            print_diags(&diags, args.format)?;
            return Ok(None);
        }
    };
    let refs: Vec<(Option<&str>, &str)> = texts
        .iter()
        .map(|t| (Some(t.name.as_str()), t.text.as_str()))
        .collect();
    let (mut model, inputs) = packlight_model::load(&refs, &args.namespace);
    if inputs.is_empty() && !model.has_errors() {
        let mut d = Diagnostic::error("no packlight resources in the input")
            .hint("give files with apiVersion: packlight.dev/v1alpha1 resources");
        d.file = texts.first().map(|t| t.name.clone());
        model.diagnostics.push(d);
    }
    print_diags(&model.diagnostics, args.format)?;
    if model.has_errors() {
        return Ok(None);
    }
    Ok(Some((model, texts)))
}

pub(crate) fn print_diags(diags: &[Diagnostic], format: DiagFormat) -> anyhow::Result<()> {
    if diags.is_empty() {
        return Ok(());
    }
    let mut err = std::io::stderr().lock();
    match format {
        DiagFormat::Text => {
            for d in diags {
                writeln!(err, "{d}")?;
            }
        }
        DiagFormat::Json => writeln!(err, "{}", serde_json::to_string_pretty(diags)?)?,
    }
    Ok(())
}

/// Renders; prints nothing to stdout unless every input is valid.
pub fn render(args: RenderArgs) -> anyhow::Result<u8> {
    let opts = RenderOptions {
        gateway_namespace: args.gateway_namespace.clone(),
        ingress_principal: args.ingress_principal.clone(),
        ..RenderOptions::default()
    };
    if args.mesh_config {
        let cfg = packlight_istio::mesh_config(&opts);
        write_stdout(&to_yaml(std::slice::from_ref(&cfg))?)?;
        return Ok(exit::OK);
    }
    let Some((model, texts)) = load(&args.input)? else {
        return Ok(exit::INVALID);
    };
    if !args.stats {
        drop(texts);
        write_objects(&model, &opts, args.output)?;
        return Ok(exit::OK);
    }
    let objects = packlight_istio::render(&model.mesh, &opts);
    drop(model);
    let in_objects = texts
        .iter()
        .map(|t| {
            packlight_model::source::parse_yaml(&t.text, None)
                .map(|d| d.iter().filter(|d| !d.value.is_null()).count())
                .unwrap_or(0)
        })
        .sum::<usize>();
    let in_lines: usize = texts.iter().map(|t| meaningful_lines(&t.text)).sum();
    write_stdout(&stats(in_lines, in_objects, &objects)?)?;
    Ok(exit::OK)
}

/// Renders and writes the objects to stdout as they are made, one kind
/// at a time (no list of every object, no second copy of the output).
fn write_objects(model: &Model, opts: &RenderOptions, output: Output) -> anyhow::Result<()> {
    let stdout = std::io::stdout().lock();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout);
    let result = (|| -> anyhow::Result<()> {
        write_rendered(&mut out, model, opts, output)?;
        out.flush()?;
        Ok(())
    })();
    match result {
        // A closed pipe (`| head`) is not an error of ours.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        r => r,
    }
}

/// Renders `model` into `out` as `render -o` prints it: YAML documents,
/// or a JSON `List`. The first write error stops rendering.
fn write_rendered<W: Write>(
    out: &mut W,
    model: &Model,
    opts: &RenderOptions,
    output: Output,
) -> anyhow::Result<()> {
    let mut failed: Option<anyhow::Error> = None;
    match output {
        Output::Yaml => {
            let mut yaml = packlight_istio::yaml::YamlWriter::new();
            packlight_istio::render_each(&model.mesh, opts, |o| {
                if failed.is_none()
                    && let Err(e) = yaml.document(out, o)
                {
                    failed = Some(match e {
                        packlight_istio::yaml::YamlError::Io(e) => e.into(),
                        e => anyhow::Error::new(e).context("encoding YAML"),
                    });
                }
            });
        }
        Output::Json => {
            out.write_all(b"{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"List\",\n  \"items\": [")?;
            let mut first = true;
            packlight_istio::render_each(&model.mesh, opts, |o| {
                if failed.is_some() {
                    return;
                }
                let r = out
                    .write_all(if first { b"\n" } else { b",\n" })
                    .map_err(anyhow::Error::from)
                    .and_then(|()| serde_json::to_writer_pretty(&mut *out, o).map_err(json_error));
                first = false;
                if let Err(e) = r {
                    failed = Some(e);
                }
            });
            if failed.is_none() {
                out.write_all(b"\n  ]\n}\n")?;
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A JSON writing error; an I/O one stays an `io::Error` (so a closed pipe
/// is recognised).
fn json_error(e: serde_json::Error) -> anyhow::Error {
    match e.io_error_kind() {
        Some(kind) => std::io::Error::from(kind).into(),
        None => e.into(),
    }
}

/// Validates; prints diagnostics (warnings too) and a summary.
pub fn validate(args: ValidateArgs) -> anyhow::Result<u8> {
    match load(&args.input)? {
        None => Ok(exit::INVALID),
        Some((model, _)) => {
            eprintln!("{} resources valid", model.verdicts.len());
            Ok(exit::OK)
        }
    }
}

/// Prints the CRDs.
pub fn crds() -> anyhow::Result<u8> {
    let crds: Vec<Value> = packlight_api::crds()
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    write_stdout(&to_yaml(&crds)?)?;
    Ok(exit::OK)
}

/// Multi-document YAML, `---` before each document.
pub fn to_yaml(objects: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(o).context("encoding YAML")?);
    }
    Ok(out)
}

fn write_stdout(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        // A closed pipe (`| head`) is not an error of ours.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// Lines that say something: not blank, not comments, not `---`.
fn meaningful_lines(text: &str) -> usize {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && *l != "---")
        .count()
}

fn stats(in_lines: usize, in_objects: usize, objects: &[Value]) -> anyhow::Result<String> {
    let kinds = |objs: &[&Value]| -> BTreeSet<String> {
        objs.iter()
            .filter_map(|o| o["kind"].as_str().map(str::to_string))
            .collect()
    };
    let all: Vec<&Value> = objects.iter().collect();
    let istio: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            o["apiVersion"]
                .as_str()
                .is_some_and(|a| a.contains("istio.io"))
        })
        .collect();
    let lines = |objs: &[&Value]| -> anyhow::Result<usize> {
        let owned: Vec<Value> = objs.iter().map(|v| (*v).clone()).collect();
        Ok(meaningful_lines(&to_yaml(&owned)?))
    };
    let out_lines = lines(&all)?;
    let istio_lines = lines(&istio)?;
    let ratio = if in_lines == 0 {
        0.0
    } else {
        istio_lines as f64 / in_lines as f64
    };
    Ok(format!(
        "packlight in:  {in_lines} lines, {in_objects} objects\n\
         rendered out:  {out_lines} lines, {} objects ({} kinds: {})\n\
         Istio alone:   {istio_lines} lines, {} objects ({} kinds)\n\
         Istio lines per packlight line: {ratio:.1}\n",
        all.len(),
        kinds(&all).len(),
        kinds(&all).into_iter().collect::<Vec<_>>().join(", "),
        istio.len(),
        kinds(&istio).len(),
    ))
}
