//! YAML/JSON text -> documents with positions. Every node's position is
//! kept by field path (`spec.rules[2].weight`), so diagnostics found later,
//! by serde or by validation, point at the line and column they are about.
//!
//! Pure: takes text, never reads files. Bounded: input size, nesting depth,
//! alias expansion and document count are limited, so no input makes it
//! allocate without bound or recurse without bound.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::diagnostic::Diagnostic;

/// Largest input accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 8 << 20;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes one input may expand to (aliases included).
pub const MAX_NODES: usize = 1_000_000;
/// Most documents in one input.
pub const MAX_DOCUMENTS: usize = 20_000;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

impl Pos {
    fn of(m: &Marker) -> Pos {
        Pos {
            line: u32::try_from(m.line()).unwrap_or(u32::MAX).max(1),
            column: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
        }
    }
}

/// Positions of every node of one document, by field path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanMap {
    spans: BTreeMap<String, Pos>,
    start: Option<Pos>,
}

impl SpanMap {
    /// The position of `path`, or of its nearest ancestor that exists
    /// (a missing field points at the object that should hold it).
    pub fn lookup(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.spans.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '[']);
            match cut {
                Some(i) => p = &p[..i],
                None => return self.spans.get("").copied().or(self.start),
            }
        }
    }

    /// Where the document starts.
    pub fn start(&self) -> Option<Pos> {
        self.start
    }
}

/// One parsed document.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceDoc {
    /// The file it came from (`-` for stdin), if any.
    pub file: Option<String>,
    /// Its content as JSON.
    pub value: Value,
    /// Positions by field path.
    pub spans: SpanMap,
}

impl SourceDoc {
    /// Fills in a diagnostic's file, line and column from `field_path`.
    pub fn locate(&self, mut d: Diagnostic) -> Diagnostic {
        d.file = self.file.clone();
        let pos = match &d.field_path {
            Some(p) => self.spans.lookup(p),
            None => self.spans.start(),
        };
        if let Some(pos) = pos {
            d.line = Some(pos.line);
            d.column = Some(pos.column);
        }
        d
    }
}

/// Parses YAML (JSON is YAML) into documents with the position of every
/// node. On a syntax error the diagnostic names the position and no
/// document of the input is returned: an input is used whole or not at all.
pub fn parse_yaml(text: &str, file: Option<&str>) -> Result<Vec<SourceDoc>, Diagnostic> {
    parse(text, file, true)
}

/// Parses like [`parse_yaml`] but records no positions: the fast path.
/// Diagnostics found later are placed by parsing the text again with
/// positions ([`crate::load`] does).
///
/// A large text is cut at its document markers and the pieces are parsed
/// on two threads; the result is the same as one pass (anchors never cross
/// documents). Whenever a piece fails, or the pieces together break a
/// limit, the whole text is parsed again in one pass, so errors and their
/// positions are exactly those of one pass.
pub fn parse_yaml_values(text: &str, file: Option<&str>) -> Result<Vec<Value>, Diagnostic> {
    if let Some(docs) = parse_halves(text) {
        return Ok(docs);
    }
    Ok(parse(text, file, false)?
        .into_iter()
        .map(|d| d.value)
        .collect())
}

/// Texts smaller than this are parsed in one pass.
const PARALLEL_MIN_BYTES: usize = 256 << 10;

/// The documents of `text` parsed in two halves on two threads, or `None`
/// when the text is small, has no document marker near its middle, or
/// either half (or their sum) fails in any way.
fn parse_halves(text: &str) -> Option<Vec<Value>> {
    if text.len() < PARALLEL_MIN_BYTES || text.len() > MAX_INPUT_BYTES {
        return None;
    }
    let cut = document_start_after(text, text.len() / 2)?;
    let (first, second) = text.split_at(cut);
    let (a, b) = crate::both(|| parse_counted(first), || parse_counted(second));
    let ((mut docs, nodes_a), (more, nodes_b)) = (a?, b.flatten()?);
    if docs.len() + more.len() > MAX_DOCUMENTS || nodes_a + nodes_b > MAX_NODES {
        return None;
    }
    docs.extend(more);
    Some(docs)
}

/// The byte offset of the first line at or after `from` that starts a
/// document (`---` followed by a blank or the end of the line), when the
/// text has no directives (`%` at a line start, which belong to the next
/// document and would be cut off from it).
pub(crate) fn document_start_after(text: &str, from: usize) -> Option<usize> {
    if has_directives(text) {
        return None;
    }
    text[from..]
        .match_indices("\n---")
        .map(|(at, _)| from + at + 1)
        .find(|&line| starts_document(text, line))
}

/// The byte offset of every line but the first that starts a document,
/// in order; `None` when the text has directives (as above).
pub(crate) fn document_starts(text: &str) -> Option<Vec<usize>> {
    if has_directives(text) {
        return None;
    }
    Some(
        text.match_indices("\n---")
            .map(|(at, _)| at + 1)
            .filter(|&line| starts_document(text, line))
            .collect(),
    )
}

fn has_directives(text: &str) -> bool {
    text.starts_with('%') || text.contains("\n%")
}

/// Whether the line at `line` (which starts with `---`) is a document
/// marker: `---` followed by a blank or the end of the line or text.
fn starts_document(text: &str, line: usize) -> bool {
    matches!(
        text.as_bytes().get(line + 3),
        None | Some(b' ' | b'\t' | b'\n' | b'\r')
    )
}

/// One piece's documents and node count; `None` on any error.
fn parse_counted(text: &str) -> Option<(Vec<Value>, usize)> {
    let mut reader = Reader {
        parser: Parser::new_from_str(text),
        anchors: BTreeMap::new(),
        nodes: 0,
    };
    let docs = read_documents(&mut reader, None, false).ok()?;
    Some((docs.into_iter().map(|d| d.value).collect(), reader.nodes))
}

fn parse(text: &str, file: Option<&str>, with_spans: bool) -> Result<Vec<SourceDoc>, Diagnostic> {
    let fail = |pos: Option<Pos>, msg: String, hint: &str| {
        let mut d = Diagnostic::error(msg).hint(hint.to_string());
        d.file = file.map(str::to_string);
        if let Some(p) = pos {
            d.line = Some(p.line);
            d.column = Some(p.column);
        }
        d
    };
    if text.len() > MAX_INPUT_BYTES {
        return Err(fail(
            None,
            format!(
                "input is {} bytes, more than the {} allowed",
                text.len(),
                MAX_INPUT_BYTES
            ),
            "split it into several files",
        ));
    }
    let mut reader = Reader {
        parser: Parser::new_from_str(text),
        anchors: BTreeMap::new(),
        nodes: 0,
    };
    read_documents(&mut reader, file, with_spans)
}

/// Every document of the reader's text.
fn read_documents(
    reader: &mut Reader<'_>,
    file: Option<&str>,
    with_spans: bool,
) -> Result<Vec<SourceDoc>, Diagnostic> {
    let fail = |pos: Option<Pos>, msg: String, hint: &str| {
        let mut d = Diagnostic::error(msg).hint(hint.to_string());
        d.file = file.map(str::to_string);
        if let Some(p) = pos {
            d.line = Some(p.line);
            d.column = Some(p.column);
        }
        d
    };
    let mut docs = Vec::new();
    loop {
        let (ev, mark) = reader
            .next()
            .map_err(|(p, m)| fail(Some(p), m, SYNTAX_HINT))?;
        match ev {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart => {
                if docs.len() >= MAX_DOCUMENTS {
                    return Err(fail(
                        Some(Pos::of(&mark)),
                        format!("more than {MAX_DOCUMENTS} documents"),
                        "split the input into several files",
                    ));
                }
                reader.anchors.clear();
                let mut spans = SpanMap {
                    spans: BTreeMap::new(),
                    start: Some(Pos::of(&mark)),
                };
                let (first, m) = reader
                    .next()
                    .map_err(|(p, m)| fail(Some(p), m, SYNTAX_HINT))?;
                let value = reader
                    .node(first, m, "", 0, with_spans.then_some(&mut spans))
                    .map_err(|(p, m)| fail(Some(p), m, SYNTAX_HINT))?;
                docs.push(SourceDoc {
                    file: file.map(str::to_string),
                    value,
                    spans,
                });
            }
            _ => {
                return Err(fail(
                    Some(Pos::of(&mark)),
                    "unexpected YAML event outside a document".into(),
                    SYNTAX_HINT,
                ));
            }
        }
    }
    Ok(docs)
}

const SYNTAX_HINT: &str = "fix the YAML syntax at this position";

type ReadError = (Pos, String);

struct Reader<'a> {
    parser: Parser<std::str::Chars<'a>>,
    anchors: BTreeMap<usize, (Value, usize)>,
    nodes: usize,
}

impl Reader<'_> {
    fn next(&mut self) -> Result<(Event, Marker), ReadError> {
        self.parser.next_token().map_err(|e| {
            (
                Pos::of(e.marker()),
                format!("YAML syntax error: {}", e.info()),
            )
        })
    }

    fn count(&mut self, n: usize, at: &Marker) -> Result<(), ReadError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err((
                Pos::of(at),
                format!("input expands to more than {MAX_NODES} nodes (aliases included)"),
            ));
        }
        Ok(())
    }

    fn node(
        &mut self,
        ev: Event,
        mark: Marker,
        path: &str,
        depth: usize,
        mut spans: Option<&mut SpanMap>,
    ) -> Result<Value, ReadError> {
        if depth > MAX_DEPTH {
            return Err((
                Pos::of(&mark),
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        if let Some(sp) = spans.as_deref_mut() {
            sp.spans.entry(path.to_string()).or_insert(Pos::of(&mark));
        }
        self.count(1, &mark)?;
        match ev {
            Event::Scalar(s, style, anchor, tag) => {
                let v = scalar(s, style, tag.as_ref()).map_err(|m| (Pos::of(&mark), m))?;
                self.remember(anchor, &v);
                Ok(v)
            }
            Event::Alias(id) => {
                let (v, size) =
                    self.anchors.get(&id).cloned().ok_or_else(|| {
                        (Pos::of(&mark), "alias to an unknown anchor".to_string())
                    })?;
                self.count(size, &mark)?;
                Ok(v)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, m) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    let p = match spans {
                        Some(_) => format!("{path}[{}]", items.len()),
                        None => String::new(),
                    };
                    items.push(self.node(ev, m, &p, depth + 1, spans.as_deref_mut())?);
                }
                let v = Value::Array(items);
                self.remember(anchor, &v);
                Ok(v)
            }
            Event::MappingStart(anchor, _) => {
                let mut map = Map::new();
                loop {
                    let (kev, km) = self.next()?;
                    let key = match kev {
                        Event::MappingEnd => break,
                        Event::Scalar(k, _, _, _) => k,
                        _ => {
                            return Err((
                                Pos::of(&km),
                                "a mapping key must be a plain string".to_string(),
                            ));
                        }
                    };
                    // A block mapping's start event is marked at its first
                    // value; the first key is where it really starts.
                    if let (true, Some(sp)) = (map.is_empty(), spans.as_deref_mut()) {
                        let key_pos = Pos::of(&km);
                        if let Some(p) = sp.spans.get_mut(path)
                            && key_pos < *p
                        {
                            *p = key_pos;
                        }
                    }
                    if map.contains_key(&key) {
                        return Err((Pos::of(&km), format!("duplicate key {key:?}")));
                    }
                    let p = match spans {
                        None => String::new(),
                        Some(_) if path.is_empty() => key.clone(),
                        Some(_) => format!("{path}.{key}"),
                    };
                    let (vev, vm) = self.next()?;
                    let v = self.node(vev, vm, &p, depth + 1, spans.as_deref_mut())?;
                    map.insert(key, v);
                }
                let v = Value::Object(map);
                self.remember(anchor, &v);
                Ok(v)
            }
            _ => Err((Pos::of(&mark), "unexpected YAML structure".to_string())),
        }
    }

    fn remember(&mut self, anchor: usize, v: &Value) {
        if anchor > 0 {
            self.anchors.insert(anchor, (v.clone(), size_of(v)));
        }
    }
}

fn size_of(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(size_of).sum::<usize>(),
        Value::Object(o) => 1 + o.values().map(size_of).sum::<usize>(),
        _ => 1,
    }
}

/// Resolves a scalar by the YAML 1.2 core schema: only plain scalars are
/// typed; quoted ones are strings.
pub(crate) fn scalar(s: String, style: TScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    if let Some(t) = tag
        && t.suffix == "str"
    {
        return Ok(Value::String(s));
    }
    if style != TScalarStyle::Plain {
        return Ok(Value::String(s));
    }
    Ok(match s.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => {
            if let Some(n) = integer(&s) {
                Value::Number(n)
            } else if let Some(f) = float(&s) {
                match Number::from_f64(f) {
                    Some(n) => Value::Number(n),
                    None => return Err(format!("{s} is not a finite number")),
                }
            } else {
                Value::String(s)
            }
        }
    })
}

fn integer(s: &str) -> Option<Number> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let parsed = if let Some(h) = body.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = body.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        body.parse::<i64>().ok()
    } else {
        None
    }?;
    Some(Number::from(if neg { -parsed } else { parsed }))
}

fn float(s: &str) -> Option<f64> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && s.bytes().any(|b| b.is_ascii_digit());
    if ok { s.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_by_path() {
        let text = "kind: Route\nspec:\n  rules:\n  - version: \"1.0\"\n    weight: 80\n";
        let docs = parse_yaml(text, Some("r.yaml")).unwrap();
        assert_eq!(docs.len(), 1);
        let s = &docs[0].spans;
        assert_eq!(s.lookup("kind"), Some(Pos { line: 1, column: 7 }));
        assert_eq!(
            s.lookup("spec.rules[0].weight"),
            Some(Pos {
                line: 5,
                column: 13
            })
        );
        // A missing field points at its nearest ancestor.
        assert_eq!(s.lookup("spec.rules[0].matches"), s.lookup("spec.rules[0]"));
        assert_eq!(docs[0].value["spec"]["rules"][0]["version"], "1.0");
        assert_eq!(docs[0].value["spec"]["rules"][0]["weight"], 80);
    }

    #[test]
    fn multi_document_and_core_schema() {
        let docs = parse_yaml("a: 1.0\nb: '1.0'\nc: ~\n---\nx: [true, 0x10]\n", None).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value["a"], serde_json::json!(1.0));
        assert_eq!(docs[0].value["b"], "1.0");
        assert!(docs[0].value["c"].is_null());
        assert_eq!(docs[1].value["x"], serde_json::json!([true, 16]));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse_yaml("a: [1, 2\nb: 3\n", Some("f.yaml")).unwrap_err();
        assert_eq!(err.file.as_deref(), Some("f.yaml"));
        assert!(err.line.is_some() && err.column.is_some(), "{err}");
        let dup = parse_yaml("a: 1\na: 2\n", None).unwrap_err();
        assert_eq!(dup.line, Some(2));
        assert!(dup.message.contains("duplicate key"), "{dup}");
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse_yaml(&text, None).unwrap_err();
        assert!(err.message.contains("nodes"), "{err}");
    }

    fn one_pass(text: &str) -> Result<Vec<Value>, Diagnostic> {
        Ok(parse(text, Some("f.yaml"), false)?
            .into_iter()
            .map(|d| d.value)
            .collect())
    }

    #[test]
    fn halves_equal_one_pass() {
        let mut text = String::new();
        for i in 0..6000 {
            text.push_str(&format!(
                "---\na{i}: &x [1, '2', {{b: c}}]\nb: *x\n# c\n---\n--- {{k: {i}}}\n"
            ));
        }
        assert!(text.len() > PARALLEL_MIN_BYTES);
        assert!(parse_halves(&text).is_some());
        assert_eq!(parse_yaml_values(&text, Some("f.yaml")), one_pass(&text));
        // An error in either half: exactly the one-pass diagnostic.
        for bad in [format!("{text}a: [1\n"), format!("a: [1\n{text}")] {
            assert!(parse_halves(&bad).is_none());
            let err = parse_yaml_values(&bad, Some("f.yaml")).unwrap_err();
            assert_eq!(Err(err), one_pass(&bad));
        }
    }

    #[test]
    fn markers_inside_scalars_are_not_cut() {
        let half = "x: 1\n---\n".repeat(20_000);
        for middle in [
            "q: \"a\n---\nb\"\n",
            "q: 'a\n---\nb'\n",
            "q: |\n  a\n---\nb: 1\n",
            "q: [a,\n---\n]\n",
            "%YAML 1.2\n---\n",
        ] {
            let text = format!("{half}{middle}{half}");
            assert_eq!(
                parse_yaml_values(&text, Some("f.yaml")),
                one_pass(&text),
                "{middle:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let text = "[".repeat(200) + &"]".repeat(200);
        assert!(parse_yaml(&text, None).is_err());
    }
}
