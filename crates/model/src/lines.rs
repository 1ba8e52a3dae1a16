//! A line scanner for the YAML that manifests are nearly always written
//! in: block mappings and sequences indented with spaces, one-line flow
//! collections, plain and one-line quoted scalars, comments and `---`
//! documents. It yields the very events `yaml_rust2`'s parser yields for
//! the same text, several times faster (it reads bytes and whole lines,
//! not a character queue), for the fast path of [`crate::direct`].
//!
//! It takes only what it can take exactly. At the first thing outside
//! that subset — a tab, a carriage return or any non-ASCII byte anywhere,
//! anchors, aliases, tags, block scalars, multi-line scalars or flow
//! collections, escapes in double quotes, directives, `...`, complex
//! keys, an indicator where a scalar would start, anything it cannot tell
//! is well formed —
//! [`Lines::next`] returns `None` and the caller reads the text again
//! with `yaml_rust2`. So a text the scanner gives up on costs one more
//! pass, never a different result; the tests compare both event streams
//! on the examples, the golden inputs and thousands of edited texts.

use std::collections::VecDeque;

use yaml_rust2::parser::Event;
use yaml_rust2::scanner::TScalarStyle;

/// Nesting deeper than this is left to `yaml_rust2` (the readers refuse
/// anything past [`crate::source::MAX_DEPTH`] anyway).
const MAX_NESTING: usize = 128;

/// The events of one text, a document at a time.
pub(crate) struct Lines<'a> {
    text: &'a [u8],
    /// Where the next unread line starts.
    at: usize,
    /// Whether a document starts at `at` (after a `---`, or the content
    /// that opens the text).
    open: bool,
    /// Events of the document read last, not yet handed out.
    queue: VecDeque<Event>,
    /// The significant lines of the document being read.
    lines: Vec<Line>,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing handed out yet.
    Start,
    /// Between documents.
    Stream,
    /// `StreamEnd` handed out, or the text given up.
    Done,
}

/// One line that is neither blank nor only a comment.
#[derive(Clone, Copy, Debug)]
struct Line {
    /// Its indentation, in spaces.
    indent: usize,
    /// Where its content (after the indentation) starts.
    start: usize,
    /// Where it ends (its line break, or the end of the text).
    end: usize,
}

/// The text is outside the scanner's subset.
struct Off;

type Res<T> = Result<T, Off>;

thread_local! {
    /// The (emptied) buffers of the last scanner dropped on this thread:
    /// the fast path makes a scanner per document, and each would grow its
    /// own from nothing (five or six allocations and copies per document).
    static SPARE: std::cell::Cell<Option<(VecDeque<Event>, Vec<Line>)>> =
        const { std::cell::Cell::new(None) };
}

/// Buffers larger than this many events or lines (a document far larger
/// than a resource) are freed, not kept for the next scanner.
const SPARE_MAX: usize = 4096;

impl Drop for Lines<'_> {
    fn drop(&mut self) {
        if self.queue.capacity() <= SPARE_MAX && self.lines.capacity() <= SPARE_MAX {
            self.queue.clear();
            self.lines.clear();
            SPARE.set(Some((
                std::mem::take(&mut self.queue),
                std::mem::take(&mut self.lines),
            )));
        }
    }
}

impl<'a> Lines<'a> {
    /// A scanner over `text`.
    pub(crate) fn new(text: &'a str) -> Self {
        let (queue, lines) = SPARE.take().unwrap_or_default();
        Lines {
            text: text.as_bytes(),
            at: 0,
            open: false,
            queue,
            lines,
            state: State::Start,
        }
    }

    /// The next event, or `None` when the text is not for this scanner
    /// (and every later call is `None` too).
    pub(crate) fn next(&mut self) -> Option<Event> {
        if let Some(e) = self.queue.pop_front() {
            return Some(e);
        }
        let r = match self.state {
            State::Done => return None,
            State::Start => self.start().map(|()| Event::StreamStart),
            State::Stream if !self.open => {
                self.state = State::Done;
                return Some(Event::StreamEnd);
            }
            State::Stream => self
                .document()
                .and_then(|()| self.queue.pop_front().ok_or(Off)),
        };
        match r {
            Ok(e) => Some(e),
            Err(Off) => {
                self.state = State::Done;
                self.queue.clear();
                None
            }
        }
    }

    /// Checks the bytes and finds the first document: the text's first
    /// content, or what follows a `---` that comes before any content.
    /// Blank lines and comments alone make no document.
    fn start(&mut self) -> Res<()> {
        let text = self.text;
        if !text
            .iter()
            .all(|&b| b == b'\n' || (b' '..=b'~').contains(&b))
        {
            return Err(Off);
        }
        self.state = State::Stream;
        let mut i = 0;
        while i < text.len() {
            let end = line_end(text, i);
            let line = &text[i..end];
            match line.iter().position(|&b| b != b' ') {
                Some(c) if line[c] != b'#' => {
                    self.open = true;
                    self.at = if is_marker(line)? {
                        (end + 1).min(text.len())
                    } else {
                        i
                    };
                    return Ok(());
                }
                _ => i = end + 1,
            }
        }
        Ok(())
    }

    /// Reads the lines from `at` to the next document marker (which it
    /// consumes) or the end of the text, and queues that document's
    /// events.
    fn document(&mut self) -> Res<()> {
        self.read_lines()?;
        self.queue.push_back(Event::DocumentStart);
        if self.lines.is_empty() {
            self.queue.push_back(empty());
        } else {
            let mut i = 0;
            Doc {
                text: self.text,
                lines: &self.lines,
                out: &mut self.queue,
            }
            .node(&mut i, 0)?;
            if i != self.lines.len() {
                return Err(Off);
            }
        }
        self.queue.push_back(Event::DocumentEnd);
        Ok(())
    }

    /// Collects the significant lines from `at` to the next `---`
    /// (consumed; another document follows it) or the end.
    fn read_lines(&mut self) -> Res<()> {
        self.lines.clear();
        self.open = false;
        let text = self.text;
        let mut i = self.at;
        while i < text.len() {
            let end = line_end(text, i);
            let line = &text[i..end];
            if is_marker(line)? {
                self.open = true;
                self.at = (end + 1).min(text.len());
                return Ok(());
            }
            if line.starts_with(b"...") || line.first() == Some(&b'%') {
                return Err(Off);
            }
            if let Some(c) = line.iter().position(|&b| b != b' ')
                && line[c] != b'#'
            {
                self.lines.push(Line {
                    indent: c,
                    start: i + c,
                    end,
                });
            }
            i = end + 1;
        }
        self.at = text.len();
        Ok(())
    }
}

/// Where the line starting at `i` ends.
fn line_end(text: &[u8], i: usize) -> usize {
    text[i..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |n| i + n)
}

/// Whether a line is a document marker: `---` alone (trailing spaces or a
/// comment allowed). `---` followed by content is not for this scanner.
fn is_marker(line: &[u8]) -> Res<bool> {
    let Some(rest) = line.strip_prefix(b"---") else {
        return Ok(false);
    };
    match rest.first() {
        None => Ok(true),
        Some(b' ') => {
            let rest = trim_start(rest);
            if rest.is_empty() || rest[0] == b'#' {
                Ok(true)
            } else {
                Err(Off)
            }
        }
        Some(_) => Err(Off),
    }
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ').count();
    &s[n..]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rev().take_while(|&&b| b == b' ').count();
    &s[..s.len() - n]
}

/// The null scalar of an empty value.
fn empty() -> Event {
    Event::Scalar(String::new(), TScalarStyle::Plain, 0, None)
}

fn scalar(s: &[u8], style: TScalarStyle) -> Res<Event> {
    // Always UTF-8: the text was checked to be printable ASCII.
    let s = std::str::from_utf8(s).map_err(|_| Off)?;
    Ok(Event::Scalar(s.to_owned(), style, 0, None))
}

/// A mapping key at the start of `s`: a plain one (letters, digits and
/// `._/-`, not starting with `-`) or a one-line quoted one, followed by
/// `:` and a space or (`at_end_ok`, in block context) the end of the
/// line. Returns the key's event and what follows (spaces skipped).
fn key(s: &[u8], at_end_ok: bool) -> Option<(Event, &[u8])> {
    let (event, n) = match *s.first()? {
        b'"' | b'\'' => quoted(s).ok()?,
        b'-' => return None,
        _ => {
            let n = s.iter().take_while(|&&b| is_key_byte(b)).count();
            if n == 0 {
                return None;
            }
            (scalar(&s[..n], TScalarStyle::Plain).ok()?, n)
        }
    };
    if s.get(n) != Some(&b':') {
        return None;
    }
    match s.get(n + 1) {
        None if at_end_ok => Some((event, &[])),
        Some(b' ') => Some((event, trim_start(&s[n + 1..]))),
        _ => None,
    }
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-')
}

/// Whether a block sequence entry starts here (`-` then a space or the
/// end of the line).
fn is_item(s: &[u8]) -> bool {
    s.first() == Some(&b'-') && matches!(s.get(1), None | Some(b' '))
}

/// Bytes no scalar of this scanner may start with.
fn is_indicator(b: u8) -> bool {
    matches!(
        b,
        b'-' | b'?'
            | b':'
            | b','
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b'#'
            | b'&'
            | b'*'
            | b'!'
            | b'|'
            | b'>'
            | b'%'
            | b'@'
            | b'`'
            | b'\\'
    )
}

/// One document's lines, read into events.
struct Doc<'t, 'q> {
    text: &'t [u8],
    lines: &'t [Line],
    out: &'q mut VecDeque<Event>,
}

impl<'t> Doc<'t, '_> {
    fn content(&self, l: &Line) -> &'t [u8] {
        &self.text[l.start..l.end]
    }

    /// A block node that starts at line `i`'s content.
    fn node(&mut self, i: &mut usize, depth: usize) -> Res<()> {
        if depth > MAX_NESTING {
            return Err(Off);
        }
        let l = self.lines[*i];
        let s = self.content(&l);
        if is_item(s) {
            self.sequence(i, l.indent, depth)
        } else if let Some(first) = key(s, true) {
            self.mapping(i, l.indent, first, depth)
        } else {
            Err(Off)
        }
    }

    /// A block mapping whose entries sit at column `indent`; `first` is
    /// its first entry's key and what follows it on line `i` (a `- ` may
    /// come before it in a sequence).
    fn mapping(
        &mut self,
        i: &mut usize,
        indent: usize,
        first: (Event, &[u8]),
        depth: usize,
    ) -> Res<()> {
        self.out.push_back(Event::MappingStart(0, None));
        let (mut key_event, mut rest) = first;
        loop {
            self.out.push_back(key_event);
            self.value(i, rest, indent, true, depth)?;
            match self.lines.get(*i) {
                Some(n) if n.indent == indent => {
                    let s = self.content(n);
                    if is_item(s) {
                        return Err(Off);
                    }
                    (key_event, rest) = key(s, true).ok_or(Off)?;
                }
                Some(n) if n.indent > indent => return Err(Off),
                _ => break,
            }
        }
        self.out.push_back(Event::MappingEnd);
        Ok(())
    }

    /// A block sequence whose `-` sit at column `indent`.
    fn sequence(&mut self, i: &mut usize, indent: usize, depth: usize) -> Res<()> {
        self.out.push_back(Event::SequenceStart(0, None));
        loop {
            let l = self.lines[*i];
            let s = self.content(&l);
            let after = trim_start(&s[1..]);
            let col = l.end - after.len();
            if is_item(after) {
                return Err(Off);
            }
            if let Some(first) = key(after, true) {
                // A mapping that starts on the entry's line.
                self.mapping(i, indent + (col - l.start), first, depth + 1)?;
            } else {
                self.value(i, after, indent, false, depth)?;
            }
            match self.lines.get(*i) {
                Some(n) if n.indent == indent && is_item(self.content(n)) => {}
                Some(n) if n.indent > indent => return Err(Off),
                _ => break,
            }
        }
        self.out.push_back(Event::SequenceEnd);
        Ok(())
    }

    /// The value after a key or a `- ` on line `i` (`rest`, spaces
    /// skipped), or on the lines below when `rest` is empty. Leaves `i` at
    /// the first line after the value.
    fn value(
        &mut self,
        i: &mut usize,
        rest: &[u8],
        indent: usize,
        in_mapping: bool,
        depth: usize,
    ) -> Res<()> {
        *i += 1;
        if rest.is_empty() || rest[0] == b'#' {
            return match self.lines.get(*i) {
                Some(n) if n.indent > indent => self.node(i, depth + 1),
                // A mapping's value may be a sequence at the key's own
                // column.
                Some(n) if in_mapping && n.indent == indent && is_item(self.content(n)) => {
                    self.sequence(i, indent, depth + 1)
                }
                _ => {
                    self.out.push_back(empty());
                    Ok(())
                }
            };
        }
        let tail = match rest[0] {
            b'{' | b'[' => {
                let mut p = 0;
                flow(rest, &mut p, self.out, depth + 1)?;
                &rest[p..]
            }
            b'"' | b'\'' => {
                let (e, n) = quoted(rest)?;
                self.out.push_back(e);
                &rest[n..]
            }
            b if is_indicator(b) => return Err(Off),
            _ => {
                let s = plain_block(rest)?;
                self.out.push_back(scalar(s, TScalarStyle::Plain)?);
                &rest[s.len()..]
            }
        };
        // Only spaces or a comment may follow, and no line below may
        // continue the scalar (or be more indented at all).
        let tail_ok = tail.is_empty()
            || (tail[0] == b' ' && {
                let t = trim_start(tail);
                t.is_empty() || t[0] == b'#'
            });
        if !tail_ok {
            return Err(Off);
        }
        match self.lines.get(*i) {
            Some(n) if n.indent > indent => Err(Off),
            _ => Ok(()),
        }
    }
}

/// A one-line plain scalar in block context: up to a comment or the end
/// of the line, trailing spaces dropped; no `: ` inside, no `:` last.
fn plain_block(s: &[u8]) -> Res<&[u8]> {
    let mut end = s.len();
    for (k, w) in s.windows(2).enumerate() {
        match w {
            [b' ', b'#'] => {
                end = k;
                break;
            }
            [b':', b' '] => return Err(Off),
            _ => {}
        }
    }
    let v = trim_end(&s[..end]);
    if v.is_empty() || v.last() == Some(&b':') {
        return Err(Off);
    }
    Ok(v)
}

/// A quoted scalar at the start of `s`, on this line; its event and the
/// bytes it took. Escapes (`\` in double quotes) are not for this scanner.
fn quoted(s: &[u8]) -> Res<(Event, usize)> {
    let q = s[0];
    // The text is copied once: straight from `s`, or, when a `''` is in
    // it, into `unescaped` piece by piece.
    let mut unescaped: Option<Vec<u8>> = None;
    let (mut k, mut from) = (1, 1);
    loop {
        let b = *s.get(k).ok_or(Off)?;
        if b == q {
            if q == b'\'' && s.get(k + 1) == Some(&b'\'') {
                // Up to and with the first quote of the two.
                unescaped
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(&s[from..=k]);
                k += 2;
                from = k;
                continue;
            }
            break;
        }
        if q == b'"' && b == b'\\' {
            return Err(Off);
        }
        k += 1;
    }
    let style = if q == b'"' {
        TScalarStyle::DoubleQuoted
    } else {
        TScalarStyle::SingleQuoted
    };
    let event = match unescaped {
        None => scalar(&s[1..k], style)?,
        Some(mut text) => {
            text.extend_from_slice(&s[from..k]);
            Event::Scalar(String::from_utf8(text).map_err(|_| Off)?, style, 0, None)
        }
    };
    Ok((event, k + 1))
}

/// A flow node at `s[*p..]` (spaces before it skipped), all on this line.
fn flow(s: &[u8], p: &mut usize, out: &mut VecDeque<Event>, depth: usize) -> Res<()> {
    if depth > MAX_NESTING {
        return Err(Off);
    }
    skip_spaces(s, p);
    match *s.get(*p).ok_or(Off)? {
        b'{' => {
            out.push_back(Event::MappingStart(0, None));
            *p += 1;
            skip_spaces(s, p);
            if s.get(*p) != Some(&b'}') {
                loop {
                    let (k, rest) = key(&s[*p..], false).ok_or(Off)?;
                    out.push_back(k);
                    *p = s.len() - rest.len();
                    flow(s, p, out, depth + 1)?;
                    if !separator(s, p, b'}')? {
                        break;
                    }
                }
            }
            *p += 1;
            out.push_back(Event::MappingEnd);
        }
        b'[' => {
            out.push_back(Event::SequenceStart(0, None));
            *p += 1;
            skip_spaces(s, p);
            if s.get(*p) != Some(&b']') {
                loop {
                    flow(s, p, out, depth + 1)?;
                    if !separator(s, p, b']')? {
                        break;
                    }
                }
            }
            *p += 1;
            out.push_back(Event::SequenceEnd);
        }
        b'"' | b'\'' => {
            let (e, n) = quoted(&s[*p..])?;
            out.push_back(e);
            *p += n;
        }
        b if is_indicator(b) => return Err(Off),
        _ => {
            let n = s[*p..]
                .iter()
                .take_while(|&&b| !matches!(b, b',' | b'[' | b']' | b'{' | b'}' | b':' | b'#'))
                .count();
            let v = trim_end(&s[*p..*p + n]);
            // `yaml_rust2` also refuses a ` -` right before the flow
            // indicator that ends the scalar (`[x -]`; `[x - ]` it takes).
            if v.is_empty()
                || matches!(s.get(*p + n), Some(b':' | b'#'))
                || s[*p..*p + n].ends_with(b" -")
            {
                return Err(Off);
            }
            out.push_back(scalar(v, TScalarStyle::Plain)?);
            *p += n;
        }
    }
    Ok(())
}

/// After a flow entry: `,` and another entry (true), or the closing
/// bracket, left for the caller (false).
fn separator(s: &[u8], p: &mut usize, close: u8) -> Res<bool> {
    skip_spaces(s, p);
    match s.get(*p) {
        Some(&b',') => {
            *p += 1;
            skip_spaces(s, p);
            // A trailing comma is not for this scanner.
            if matches!(s.get(*p), None | Some(b']' | b'}' | b',')) {
                return Err(Off);
            }
            Ok(true)
        }
        Some(&b) if b == close => Ok(false),
        _ => Err(Off),
    }
}

fn skip_spaces(s: &[u8], p: &mut usize) {
    while s.get(*p) == Some(&b' ') {
        *p += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use yaml_rust2::parser::Parser;

    /// The scanner's events, or `None` where it gives the text up.
    fn ours(text: &str) -> Option<Vec<Event>> {
        let mut l = Lines::new(text);
        let mut v = Vec::new();
        loop {
            let e = l.next()?;
            let end = e == Event::StreamEnd;
            v.push(e);
            if end {
                return Some(v);
            }
        }
    }

    /// `yaml_rust2`'s events, or `None` on a syntax error.
    fn theirs(text: &str) -> Option<Vec<Event>> {
        let mut p = Parser::new_from_str(text);
        let mut v = Vec::new();
        loop {
            let (e, _) = p.next_token().ok()?;
            let end = e == Event::StreamEnd;
            v.push(e);
            if end {
                return Some(v);
            }
        }
    }

    fn agree(text: &str) -> bool {
        match ours(text) {
            Some(o) => theirs(text) == Some(o),
            None => true,
        }
    }

    /// Texts the scanner takes, with what each must take.
    const TAKEN: &[&str] = &[
        "",
        "\n\n",
        "# c\n",
        "---\n",
        "---",
        "--- # c\n",
        "a: 1\n",
        "a: 1",
        "a: 1\n---\n",
        "a: 1\n---\nb: 2\n---\n---\n",
        "# c\n---\na: 1\n",
        "\n---\n\n",
        "a:\n",
        "a:\nb: x y  # c\n",
        "a: b:c\n",
        "a: http://x/y?z=1#f\n",
        "a: [1, 2, x y]\n",
        "a: {b: 1, c: [d, {e: f}]}\n",
        "a: { b: 1 , c: [ ] }\n",
        "a: {}\nb: []\n",
        "a: \"x: y # z\"\nb: 'it''s'\n",
        "a: '''x'''\nb: ''''\n'c''d': ['e''f''g', '']\n",
        "a:\n- 1\n- x\nb: 2\n",
        "a:\n  - 1\n  -\n  - {x: y}\n",
        "- a\n- b: 1\n  c: 2\n-\n  - x\n",
        "- b: 1\n  c:\n  - 2\n  d: 3\n",
        "a:\n  b:\n    c: d\n  e: f\n",
        "a:    \n  b: c\n",
        "a: 1 # c\n  # d\nb: 2\n",
        "metadata: {name: x, namespace: ns0}\nspec:\n  port: 8000\n  versions:\n  - {version: \"1.0\", image: \"example/app:1.0\"}\n",
        "spec:\n  rules:\n  - version: \"2.0\"\n    matches: [{headers: {gray: {exact: \"1\"}}}]\n",
        "a: {\"2\": {b: /x}, 'c': d}\n\"e\":\n- 'f': g\n",
        "\"a\": 1\n",
        // One service of the render benchmark (crates/cli/benches).
        "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default, namespace: ns0}\nspec: {mtls: strict, access: deny, egress: deny}\n---\n\
         apiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {name: svc1, namespace: ns1}\nspec:\n  service: svc1\n  rules:\n  \
         - {version: \"1.0\", weight: 80}\n  - {version: \"1.1\", weight: 20}\n  - {version: \"2.0\", weight: 100}\n  - version: \"2.0\"\n    \
         matches: [{headers: {gray: {exact: \"1\"}}}]\n---\napiVersion: packlight.dev/v1alpha1\nkind: AccessPolicy\n\
         metadata: {name: svc1, namespace: ns1}\nspec:\n  service: svc1\n  allow:\n  - {from: [\"ns2/svc2\"], methods: [GET]}\n---\n\
         apiVersion: packlight.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: svc1, namespace: ns1}\nspec:\n  service: svc1\n  \
         hosts: [\"api1.example.com\", \"10.0.1.0/24:5432\"]\n---\n",
    ];

    /// Texts it gives up: each is outside its subset (some are not YAML
    /// at all).
    const LEFT: &[&str] = &[
        "a: -1\n",
        "a: x\n  y\n",
        "a: [1,\n 2]\n",
        "a: \"x\ny\"\n",
        "a: b: c\n",
        "a: &x 1\nb: *x\n",
        "a: !!str 1\n",
        "a: |\n  x\n",
        "a:\tb\n",
        "a: 1\r\n",
        "a: é\n",
        "%YAML 1.2\n---\na: 1\n",
        "a: 1\n...\n",
        "--- a\n",
        "a: 1\n b: 2\n",
        "a: [1, ]\n",
        "a: {b}\n",
        "a: [b: c]\n",
        "a: 1\n- b\n",
        "- a\nb: 1\n",
        "a: \"x\\\"y\"\n",
        "? a\n: b\n",
        "a: [1, 2, x -]\n",
        "a: {k: x -}\n",
        "a: [x -, 1]\n",
    ];

    #[test]
    fn takes_the_common_subset_and_agrees() {
        for t in TAKEN {
            assert!(ours(t).is_some(), "given up: {t:?}");
            assert_eq!(ours(t), theirs(t), "{t:?}");
        }
        for t in LEFT {
            assert_eq!(ours(t), None, "{t:?}");
        }
    }

    /// Every example and golden input is taken, and read as `yaml_rust2`
    /// reads it.
    #[test]
    fn takes_every_example_and_golden_input() {
        for t in crate::example_files() {
            let o = ours(&t);
            assert!(o.is_some(), "given up:\n{t}");
            assert_eq!(o, theirs(&t), "{t}");
        }
    }

    /// Pieces that change a text's meaning or break it.
    const EDITS: &[&str] = &[
        "", " ", "  ", "\n", "\n  ", "\n    ", "- ", "-", ": ", ":", ",", "{", "}", "[", "]", "\"",
        "'", "''", "#", " #", "&a ", "*a", "!!str ", "~", "|", ">", "?", "\n---\n", "---", "...",
        "\n- ", "a: ", "\na: ", "x", "\\", "%", "@", "\t", "\r",
    ];

    #[test]
    fn edited_texts_it_takes_read_as_yaml_rust2_reads_them() {
        // A fixed walk, so the share taken is known to be large (the
        // property below draws its own).
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut draw = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let files = crate::example_files();
        let (mut taken, mut given_up) = (0, 0);
        for _ in 0..20_000 {
            let base = match draw(3) {
                0 => files[draw(files.len())].as_str(),
                _ => TAKEN[draw(TAKEN.len())],
            };
            let edits: Vec<_> = (0..1 + draw(2))
                .map(|_| (draw(10_000), draw(3), draw(EDITS.len())))
                .collect();
            let text = crate::edited(base, &edits, EDITS);
            match ours(&text) {
                Some(o) => {
                    assert_eq!(Some(o), theirs(&text), "{text:?}");
                    taken += 1;
                }
                None => given_up += 1,
            }
        }
        assert!(
            taken > 3_000 && given_up > 3_000,
            "{taken} taken, {given_up} given up"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]

        /// Whatever the scanner takes, `yaml_rust2` reads into the same
        /// events.
        #[test]
        fn agrees_with_yaml_rust2(
            base in 0usize..1000,
            edits in proptest::collection::vec((0usize..10_000, 0usize..4, 0..EDITS.len()), 1..5),
        ) {
            let all: Vec<&str> = TAKEN.iter().chain(LEFT).copied().collect();
            let text = crate::edited(all[base % all.len()], &edits, EDITS);
            prop_assert!(agree(&text), "{:?}: ours {:?}\ntheirs {:?}", text, ours(&text), theirs(&text));
        }
    }
}
