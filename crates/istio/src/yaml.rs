//! YAML output, fast: a serde serializer writing block YAML byte for byte
//! as `serde_yaml` (libyaml) writes it, for the shapes packlight renders.
//!
//! Exactness is by construction, not by hope: every scalar is checked
//! against libyaml's plain-scalar analysis and serde_yaml's "would this
//! read back as something else" rule. A string with spaces, line breaks,
//! non-ASCII or otherwise unusual characters, a float, a tag, or a key
//! libyaml would write in complex form makes the fast path give up on the
//! whole document, which is then written by `serde_yaml` itself. Strings
//! made only of digits and number characters (`1.0`, `8000`) are asked of
//! `serde_yaml` once each and the answer is remembered.
//!
//! `tests/yaml.rs` compares both writers on arbitrary documents.

use std::collections::HashMap;
use std::fmt::Display;
use std::io::Write;

use serde::ser::{self, Serialize};

/// Why a document could not be written.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// The sink failed.
    #[error("writing YAML: {0}")]
    Io(#[from] std::io::Error),
    /// serde_yaml refused the value.
    #[error("encoding YAML: {0}")]
    Encode(#[from] serde_yaml::Error),
}

/// Writes YAML documents, reusing one buffer and what it learnt about
/// number-like strings. One per output stream.
#[derive(Default)]
pub struct YamlWriter {
    buf: Vec<u8>,
    /// Number-like strings: whether serde_yaml quotes them.
    quoted: HashMap<String, bool>,
    /// Documents written by serde_yaml (the fast path gave up).
    fallbacks: usize,
}

/// Most number-like strings remembered (the rest are asked each time).
const MAX_REMEMBERED: usize = 4096;

impl YamlWriter {
    /// A writer with an empty buffer.
    pub fn new() -> Self {
        YamlWriter::default()
    }

    /// Writes `---\n` and the value as one YAML document, exactly as
    /// `serde_yaml::to_writer` would after the separator.
    pub fn document<W: Write, T: Serialize + ?Sized>(
        &mut self,
        out: &mut W,
        value: &T,
    ) -> Result<(), YamlError> {
        out.write_all(b"---\n")?;
        self.value(out, value)
    }

    /// Writes the value as YAML (no separator), exactly as
    /// `serde_yaml::to_writer` would.
    pub fn value<W: Write, T: Serialize + ?Sized>(
        &mut self,
        out: &mut W,
        value: &T,
    ) -> Result<(), YamlError> {
        self.buf.clear();
        let fast = {
            let mut e = Emitter {
                out: &mut self.buf,
                quoted: &mut self.quoted,
            };
            value.serialize(Node {
                e: &mut e,
                ctx: Ctx::Root,
            })
        };
        match fast {
            Ok(()) => out.write_all(&self.buf)?,
            Err(_) => {
                self.fallbacks += 1;
                serde_yaml::to_writer(out, value)?
            }
        }
        Ok(())
    }

    /// How many documents so far were written by serde_yaml because the
    /// fast path gave up on them.
    pub fn fallbacks(&self) -> usize {
        self.fallbacks
    }
}

/// The fast path's only error: "let serde_yaml write this document".
#[derive(Debug)]
struct GiveUp;

impl Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not on the fast path")
    }
}

impl std::error::Error for GiveUp {}

impl ser::Error for GiveUp {
    fn custom<T: Display>(_msg: T) -> Self {
        GiveUp
    }
}

struct Emitter<'a> {
    out: &'a mut Vec<u8>,
    quoted: &'a mut HashMap<String, bool>,
}

/// Where a node is written.
#[derive(Clone, Copy)]
enum Ctx {
    /// The document itself.
    Root,
    /// The value of a mapping entry whose key (`key:`) is at this column.
    MapValue(usize),
    /// A sequence item whose `-` is at this column (already written).
    SeqItem(usize),
}

impl Ctx {
    /// The column of a mapping's keys in this place.
    fn map_indent(self) -> usize {
        match self {
            Ctx::Root => 0,
            Ctx::MapValue(i) | Ctx::SeqItem(i) => i + 2,
        }
    }

    /// The column of a sequence's dashes in this place (block sequences
    /// in a mapping are not indented).
    fn seq_indent(self) -> usize {
        match self {
            Ctx::Root => 0,
            Ctx::MapValue(i) => i,
            Ctx::SeqItem(i) => i + 2,
        }
    }
}

impl Emitter<'_> {
    fn spaces(&mut self, n: usize) {
        self.out.extend(std::iter::repeat_n(b' ', n));
    }

    /// A scalar already in its final form. A document that is a bare
    /// scalar is left to serde_yaml.
    fn scalar(&mut self, ctx: Ctx, text: &[u8]) -> Result<(), GiveUp> {
        if matches!(ctx, Ctx::Root) {
            return Err(GiveUp);
        }
        self.out.push(b' ');
        self.out.extend_from_slice(text);
        self.out.push(b'\n');
        Ok(())
    }

    fn string(&mut self, ctx: Ctx, s: &str) -> Result<(), GiveUp> {
        if matches!(ctx, Ctx::Root) {
            return Err(GiveUp);
        }
        self.out.push(b' ');
        self.string_text(s, false)?;
        self.out.push(b'\n');
        Ok(())
    }

    /// A string scalar as libyaml writes it in block context: plain or
    /// single-quoted; anything else gives up.
    fn string_text(&mut self, s: &str, key: bool) -> Result<(), GiveUp> {
        let b = s.as_bytes();
        // Printable ASCII without spaces: never folded, never escaped.
        if b.is_empty() || !printable_without_spaces(b) {
            return Err(GiveUp);
        }
        // libyaml writes longer keys in complex (`? key`) form.
        if key && b.len() > 128 {
            return Err(GiveUp);
        }
        let quote = match plain_allowed(b) {
            None => return Err(GiveUp),
            Some(false) => true,
            Some(true) => self.reads_as_non_string(s)?,
        };
        if quote {
            self.out.push(b'\'');
            for &c in b {
                if c == b'\'' {
                    self.out.push(b'\'');
                }
                self.out.push(c);
            }
            self.out.push(b'\'');
        } else {
            self.out.extend_from_slice(b);
        }
        Ok(())
    }

    /// True when serde_yaml would quote `s` because, unquoted, it would
    /// read back as null, a bool or a number.
    fn reads_as_non_string(&mut self, s: &str) -> Result<bool, GiveUp> {
        if matches!(
            s,
            "~" | "null" | "Null" | "NULL" | "true" | "True" | "TRUE" | "false" | "False" | "FALSE"
        ) {
            return Ok(true);
        }
        // Integers (decimal, 0x, 0o, 0b, signed), finite floats and
        // `.inf`/`.nan` are made of letters, digits, signs and dots only,
        // and start with a digit, a sign or a dot (a letter start can only
        // be inf or nan to Rust, which are not finite and stay strings).
        let b = s.as_bytes();
        let numberish = matches!(b[0], b'0'..=b'9' | b'+' | b'-' | b'.')
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
        if !numberish {
            return Ok(false);
        }
        // serde_yaml's ints and floats take a sign only first or right
        // after an exponent's `e`; a string with one anywhere else reads
        // back as a string. Such strings (`10-0-1-0-24.cidr...`, one per
        // service) would otherwise each miss the cache and ask serde_yaml.
        if b.windows(2)
            .any(|w| matches!(w[1], b'+' | b'-') && !matches!(w[0], b'e' | b'E'))
        {
            return Ok(false);
        }
        if let Some(q) = self.quoted.get(s) {
            return Ok(*q);
        }
        // Ask serde_yaml, in a mapping value like ours.
        let text = serde_yaml::to_string(&std::collections::BTreeMap::from([("k", s)]))
            .map_err(|_| GiveUp)?;
        let q = match text.strip_prefix("k: ").and_then(|t| t.strip_suffix('\n')) {
            Some(t) if t == s => false,
            Some(t) if t.len() == s.len() + 2 && t.starts_with('\'') => true,
            _ => return Err(GiveUp),
        };
        if self.quoted.len() < MAX_REMEMBERED {
            self.quoted.insert(s.to_string(), q);
        }
        Ok(q)
    }
}

/// True when every byte is printable ASCII other than a space
/// (`0x21..=0x7e`). Every string written goes through this (88 MB of them
/// at 10,000 services), so it reads the whole string without stopping
/// early: the loop is then vectorised, and nearly every string passes.
fn printable_without_spaces(b: &[u8]) -> bool {
    b.iter().fold(0u8, |bad, &c| {
        bad | u8::from(c.wrapping_sub(0x21) > 0x7e - 0x21)
    }) == 0
}

/// libyaml's verdict for a printable, space-free ASCII scalar in block
/// context: plain allowed (`Some(true)`), must be quoted (`Some(false)`),
/// or a case this writer leaves to serde_yaml (`None`: an indicator at the
/// end of the scalar, where libyaml looks past it).
fn plain_allowed(b: &[u8]) -> Option<bool> {
    if b.starts_with(b"---") || b.starts_with(b"...") {
        return Some(false);
    }
    match b[0] {
        b'#' | b',' | b'[' | b']' | b'{' | b'}' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\''
        | b'"' | b'%' | b'@' | b'`' => return Some(false),
        b'?' | b':' | b'-' if b.len() == 1 => return None,
        _ => {}
    }
    // A `:` later is an indicator only before a blank; there is none
    // inside, and at the end libyaml reads past the scalar.
    if b.len() > 1 && b[b.len() - 1] == b':' {
        return None;
    }
    Some(true)
}

/// `n` in decimal (with a `-` when `negative`), in the tail of `buf`.
fn decimal(mut n: u64, negative: bool, buf: &mut [u8; 21]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if negative {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// A node to write in a context.
struct Node<'e, 'a> {
    e: &'e mut Emitter<'a>,
    ctx: Ctx,
}

/// A mapping or sequence being written.
struct Compound<'e, 'a> {
    e: &'e mut Emitter<'a>,
    ctx: Ctx,
    first: bool,
}

impl Compound<'_, '_> {
    /// Starts an entry (writes what comes before the key).
    fn map_entry(&mut self) {
        let indent = self.ctx.map_indent();
        if self.first {
            match self.ctx {
                Ctx::Root => {}
                Ctx::MapValue(_) => {
                    self.e.out.push(b'\n');
                    self.e.spaces(indent);
                }
                Ctx::SeqItem(_) => self.e.out.push(b' '),
            }
            self.first = false;
        } else {
            self.e.spaces(indent);
        }
    }

    /// Starts an item (writes up to and including its `-`).
    fn seq_item(&mut self) -> usize {
        let indent = self.ctx.seq_indent();
        if self.first {
            match self.ctx {
                Ctx::Root => {}
                Ctx::MapValue(_) => {
                    self.e.out.push(b'\n');
                    self.e.spaces(indent);
                }
                Ctx::SeqItem(_) => self.e.out.push(b' '),
            }
            self.first = false;
        } else {
            self.e.spaces(indent);
        }
        self.e.out.push(b'-');
        indent
    }

    fn end(self, empty: &[u8]) -> Result<(), GiveUp> {
        if self.first {
            self.e.scalar(self.ctx, empty)?;
        }
        Ok(())
    }
}

impl<'e, 'a> ser::Serializer for Node<'e, 'a> {
    type Ok = ();
    type Error = GiveUp;
    type SerializeSeq = Compound<'e, 'a>;
    type SerializeTuple = Compound<'e, 'a>;
    type SerializeTupleStruct = Compound<'e, 'a>;
    type SerializeTupleVariant = ser::Impossible<(), GiveUp>;
    type SerializeMap = Compound<'e, 'a>;
    type SerializeStruct = Compound<'e, 'a>;
    type SerializeStructVariant = ser::Impossible<(), GiveUp>;

    fn serialize_bool(self, v: bool) -> Result<(), GiveUp> {
        self.e.scalar(self.ctx, if v { b"true" } else { b"false" })
    }

    fn serialize_i8(self, v: i8) -> Result<(), GiveUp> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<(), GiveUp> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<(), GiveUp> {
        self.serialize_i64(i64::from(v))
    }

    fn serialize_i64(self, v: i64) -> Result<(), GiveUp> {
        let mut digits = [0u8; 21];
        let text = decimal(v.unsigned_abs(), v < 0, &mut digits);
        self.e.scalar(self.ctx, text)
    }

    fn serialize_u8(self, v: u8) -> Result<(), GiveUp> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result<(), GiveUp> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<(), GiveUp> {
        self.serialize_u64(u64::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result<(), GiveUp> {
        let mut digits = [0u8; 21];
        let text = decimal(v, false, &mut digits);
        self.e.scalar(self.ctx, text)
    }

    fn serialize_f32(self, _v: f32) -> Result<(), GiveUp> {
        Err(GiveUp)
    }

    fn serialize_f64(self, _v: f64) -> Result<(), GiveUp> {
        Err(GiveUp)
    }

    fn serialize_char(self, v: char) -> Result<(), GiveUp> {
        self.serialize_str(v.encode_utf8(&mut [0u8; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<(), GiveUp> {
        self.e.string(self.ctx, v)
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<(), GiveUp> {
        Err(GiveUp)
    }

    fn serialize_none(self) -> Result<(), GiveUp> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), GiveUp> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), GiveUp> {
        self.e.scalar(self.ctx, b"null")
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), GiveUp> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), GiveUp> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), GiveUp> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), GiveUp> {
        // serde_yaml writes a tag: not on the fast path.
        Err(GiveUp)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'e, 'a>, GiveUp> {
        Ok(Compound {
            e: self.e,
            ctx: self.ctx,
            first: true,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'e, 'a>, GiveUp> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'e, 'a>, GiveUp> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, GiveUp> {
        Err(GiveUp)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'e, 'a>, GiveUp> {
        Ok(Compound {
            e: self.e,
            ctx: self.ctx,
            first: true,
        })
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Compound<'e, 'a>, GiveUp> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, GiveUp> {
        Err(GiveUp)
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = GiveUp;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GiveUp> {
        let indent = self.seq_item();
        value.serialize(Node {
            e: self.e,
            ctx: Ctx::SeqItem(indent),
        })
    }

    fn end(self) -> Result<(), GiveUp> {
        Compound::end(self, b"[]")
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = GiveUp;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GiveUp> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<(), GiveUp> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = GiveUp;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GiveUp> {
        ser::SerializeSeq::serialize_element(self, value)
    }

    fn end(self) -> Result<(), GiveUp> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = GiveUp;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), GiveUp> {
        self.map_entry();
        key.serialize(Key { e: self.e })?;
        self.e.out.push(b':');
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), GiveUp> {
        let indent = self.ctx.map_indent();
        value.serialize(Node {
            e: self.e,
            ctx: Ctx::MapValue(indent),
        })
    }

    fn end(self) -> Result<(), GiveUp> {
        Compound::end(self, b"{}")
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = GiveUp;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), GiveUp> {
        ser::SerializeMap::serialize_key(self, key)?;
        ser::SerializeMap::serialize_value(self, value)
    }

    fn end(self) -> Result<(), GiveUp> {
        ser::SerializeMap::end(self)
    }
}

/// A mapping key: strings only on the fast path.
struct Key<'e, 'a> {
    e: &'e mut Emitter<'a>,
}

macro_rules! give_up {
    ($($name:ident($($t:ty),*);)*) => {
        $(fn $name(self, $(_: $t),*) -> Result<(), GiveUp> { Err(GiveUp) })*
    };
}

impl ser::Serializer for Key<'_, '_> {
    type Ok = ();
    type Error = GiveUp;
    type SerializeSeq = ser::Impossible<(), GiveUp>;
    type SerializeTuple = ser::Impossible<(), GiveUp>;
    type SerializeTupleStruct = ser::Impossible<(), GiveUp>;
    type SerializeTupleVariant = ser::Impossible<(), GiveUp>;
    type SerializeMap = ser::Impossible<(), GiveUp>;
    type SerializeStruct = ser::Impossible<(), GiveUp>;
    type SerializeStructVariant = ser::Impossible<(), GiveUp>;

    fn serialize_str(self, v: &str) -> Result<(), GiveUp> {
        self.e.string_text(v, true)
    }

    give_up! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_bytes(&[u8]);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _v: &T) -> Result<(), GiveUp> {
        Err(GiveUp)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), GiveUp> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), GiveUp> {
        Err(GiveUp)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, GiveUp> {
        Err(GiveUp)
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, GiveUp> {
        Err(GiveUp)
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, GiveUp> {
        Err(GiveUp)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, GiveUp> {
        Err(GiveUp)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, GiveUp> {
        Err(GiveUp)
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, GiveUp> {
        Err(GiveUp)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, GiveUp> {
        Err(GiveUp)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_without_spaces_is_the_range_check() {
        for c in 0..=255u8 {
            for at in 0..20 {
                let mut s = vec![b'a'; 19];
                s.insert(at, c);
                assert_eq!(
                    super::printable_without_spaces(&s),
                    (0x21..=0x7e).contains(&c),
                    "{c:#x} at {at}"
                );
            }
        }
        assert!(super::printable_without_spaces(b""));
    }

    /// Every string of up to four number characters is quoted as
    /// serde_yaml quotes it (the inner-sign shortcut included).
    #[test]
    fn number_like_strings_are_quoted_as_serde_yaml_quotes_them() {
        const CHARS: &[u8] = b"01e+-.x";
        let mut strings = vec![String::new()];
        let mut checked = 0;
        for _ in 0..4 {
            let mut longer = Vec::new();
            for s in &strings {
                for &c in CHARS {
                    let t = format!("{s}{}", c as char);
                    let value = std::collections::BTreeMap::from([("k", t.as_str())]);
                    let want = serde_yaml::to_string(&value).expect("plain data");
                    let mut got = Vec::new();
                    super::YamlWriter::new()
                        .value(&mut got, &value)
                        .expect("a Vec takes any write");
                    assert_eq!(String::from_utf8(got).expect("UTF-8"), want, "{t:?}");
                    checked += 1;
                    longer.push(t);
                }
            }
            strings = longer;
        }
        assert_eq!(checked, 7 + 49 + 343 + 2401);
    }
}
