//! The fast path of [`crate::load`]: YAML events deserialised straight into
//! the typed resources, with no `serde_json::Value` document in between.
//!
//! It takes only what it can take exactly: a text in which every document
//! is empty or one well-formed packlight resource whose mapping starts with
//! `apiVersion` and `kind`, with no anchors or aliases. Anything else —
//! any syntax error, limit, schema error, unknown kind, bad name — makes it
//! give the whole text up (`None`), and [`crate::load`] reads that text the
//! way it always has ([`crate::source`] + [`crate::resource`]), so every
//! diagnostic, and its position, is exactly what it was.
//!
//! What it accepts it reads as the slow path would: scalars are resolved by
//! the same function and handed to `serde_json::Value`'s own deserializer;
//! collections follow `Value`'s rules (`deserialize_struct` takes a mapping
//! or a sequence, `deserialize_option` maps null to `None`, leftover items
//! are an error); node, depth and document limits are counted the same
//! way; duplicate keys are refused.

use serde::de::value::{Error, StringDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Error as _, IntoDeserializer, Visitor};
use serde_json::Value;
use yaml_rust2::parser::{Event, Parser};

use crate::lines::Lines;
use crate::resource::{Input, Origin, Resource, is_dns_label};
use crate::source::{MAX_DEPTH, MAX_DOCUMENTS, MAX_INPUT_BYTES, MAX_NODES, scalar};
use packlight_api as api;

/// Inputs smaller than this (all texts together) are read on one thread.
const PARALLEL_MIN_BYTES: usize = 256 << 10;

/// One document of a text (or a whole text that cannot be cut into its
/// documents), with the namespace and name it looks like it holds.
struct Piece<'a> {
    text: usize,
    /// Its place among its text's pieces.
    nth: usize,
    body: &'a str,
    key: Option<(&'a str, &'a str)>,
}

/// What reading one piece gave: its inputs' range in the output, and its
/// counts (`None`: not for the fast path).
struct Done {
    piece: usize,
    from: usize,
    to: usize,
    counts: Option<Counts>,
}

/// Reads every text the fast path takes whole, and says which texts it
/// took; no input of a text it did not take is returned.
///
/// The documents are read in the order of the namespace and name they
/// look like they hold (ties in input order), not in the input's: what
/// the model then checks, assembles and walks in key order is then
/// allocated in key order. With inputs listed round-robin over
/// namespaces, reading them in input order left a large mesh scattered
/// through memory (10,000 services: 12-16 % slower than the same
/// documents sorted). The guess is only about speed: [`crate::load`]
/// orders the inputs by their real keys.
pub(crate) fn read_all(texts: &[(Option<&str>, &str)], namespace: &str) -> (Vec<Input>, Vec<bool>) {
    let mut taken: Vec<bool> = texts
        .iter()
        .map(|(_, body)| body.len() <= MAX_INPUT_BYTES)
        .collect();
    let mut pieces: Vec<Piece<'_>> = Vec::new();
    let (mut bytes, mut room) = (0, 0);
    for (text, (_, body)) in texts.iter().enumerate().filter(|(i, _)| taken[*i]) {
        bytes += body.len();
        room += documents_at_most(body);
        match crate::source::document_starts(body) {
            Some(starts) => {
                let mut from = 0;
                for (nth, to) in starts.into_iter().chain([body.len()]).enumerate() {
                    let body = &body[from..to];
                    pieces.push(Piece {
                        text,
                        nth,
                        body,
                        key: guess_key(body, namespace),
                    });
                    from = to;
                }
            }
            None => pieces.push(Piece {
                text,
                nth: 0,
                body,
                key: None,
            }),
        }
    }
    let mut order: Vec<usize> = (0..pieces.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&pieces[a], &pieces[b]);
        (a.key, a.text, a.nth).cmp(&(b.key, b.text, b.nth))
    });
    let read = |order: &[usize], out: &mut Vec<Input>| -> Vec<Done> {
        order
            .iter()
            .map(|&piece| {
                let p = &pieces[piece];
                let from = out.len();
                let counts = read_piece(p.body, p.text, namespace, out).ok();
                if counts.is_none() {
                    out.truncate(from);
                }
                Done {
                    piece,
                    from,
                    to: out.len(),
                    counts,
                }
            })
            .collect()
    };
    let mut out = Vec::with_capacity(room);
    let mut done = if bytes >= PARALLEL_MIN_BYTES && order.len() > 1 {
        let (first, second) = order.split_at(order.len() / 2);
        let (mut done, rest) = crate::both(
            || read(first, &mut out),
            || {
                let mut more = Vec::with_capacity(room - room / 2);
                let done = read(second, &mut more);
                (more, done)
            },
        );
        match rest {
            Some((mut more, rest)) => {
                let shift = out.len();
                out.append(&mut more);
                done.extend(rest.into_iter().map(|d| Done {
                    from: d.from + shift,
                    to: d.to + shift,
                    ..d
                }));
            }
            // The second half's reader panicked (a bug): its texts go to
            // the slow path, as a text the fast path gives up on does.
            None => {
                for &piece in second {
                    taken[pieces[piece].text] = false;
                }
            }
        }
        done
    } else {
        read(&order, &mut out)
    };
    // Per text, its pieces in order: each piece's documents are numbered
    // from where the piece starts in its text; a text is taken when every
    // piece was, within the text's limits.
    done.sort_unstable_by_key(|d| d.piece);
    let mut first_doc = Vec::with_capacity(done.len());
    let mut totals = vec![Counts { docs: 0, nodes: 0 }; texts.len()];
    for d in &done {
        let text = pieces[d.piece].text;
        first_doc.push(totals[text].docs);
        match &d.counts {
            Some(c) => {
                totals[text].docs += c.docs;
                totals[text].nodes += c.nodes;
            }
            None => taken[text] = false,
        }
    }
    for (text, t) in totals.iter().enumerate() {
        if t.docs > MAX_DOCUMENTS || t.nodes > MAX_NODES {
            taken[text] = false;
        }
    }
    for (d, first) in done.iter().zip(first_doc) {
        for input in &mut out[d.from..d.to] {
            if let Some(o) = &mut input.origin {
                o.doc += first;
            }
        }
    }
    if taken.iter().any(|t| !t) {
        out.retain(|i| i.origin.as_ref().is_some_and(|o| taken[o.text]));
    }
    (out, taken)
}

/// The namespace and name a document's `metadata` gives, read from its
/// lines without parsing it (`metadata: {name: a, namespace: b}` or a block
/// of plain `name:`/`namespace:` lines); `None` when it is not that
/// simple. Only the order documents are read in depends on it.
fn guess_key<'a>(doc: &'a str, namespace: &'a str) -> Option<(&'a str, &'a str)> {
    let at = if doc.starts_with("metadata:") {
        0
    } else {
        doc.find("\nmetadata:")? + 1
    };
    let rest = &doc[at + "metadata:".len()..];
    let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
    let (mut name, mut ns) = (None, None);
    let mut take = |k: &str, v: &'a str| {
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        match k.trim() {
            "name" => name = Some(v),
            "namespace" => ns = Some(v),
            _ => {}
        }
    };
    let line = line.trim();
    if let Some(flow) = line.strip_prefix('{') {
        let flow = flow.strip_suffix('}')?;
        for part in flow.split(',') {
            let (k, v) = part.split_once(':')?;
            take(k, v);
        }
    } else if line.is_empty() {
        let mut indent = None;
        for l in after.lines() {
            let body = l.trim_start_matches(' ');
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            let this = l.len() - body.len();
            if this == 0 {
                break;
            }
            if *indent.get_or_insert(this) == this
                && let Some((k, v)) = body.split_once(':')
            {
                take(k, v);
            }
        }
    } else {
        return None;
    }
    Some((ns.unwrap_or(namespace), name?))
}

/// At most how many documents a text holds (each starts the text or
/// follows a line break and `---`): room to reserve for its resources.
pub(crate) fn documents_at_most(text: &str) -> usize {
    text.matches("\n---").count() + 1
}

/// What one piece of a text held.
#[derive(Clone)]
struct Counts {
    docs: usize,
    nodes: usize,
}

/// Every document of one piece of text, as `source::read_documents` walks
/// them; the first thing outside the fast path is an error. The events
/// come from the line scanner ([`crate::lines`]); a piece it gives up on
/// is read again with `yaml_rust2`'s parser.
fn read_piece(
    piece: &str,
    text: usize,
    namespace: &str,
    out: &mut Vec<Input>,
) -> Result<Counts, Error> {
    let before = out.len();
    let mut ev = Events::new(Source::Lines(Lines::new(piece)));
    match read_events(&mut ev, text, namespace, out) {
        Err(_) if ev.given_up => {
            out.truncate(before);
            let mut ev = Events::new(Source::Yaml(Box::new(Parser::new_from_str(piece))));
            read_events(&mut ev, text, namespace, out)
        }
        r => r,
    }
}

fn read_events(
    ev: &mut Events<'_>,
    text: usize,
    namespace: &str,
    out: &mut Vec<Input>,
) -> Result<Counts, Error> {
    let mut doc = 0;
    loop {
        match ev.next()? {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart => {
                if doc >= MAX_DOCUMENTS {
                    return Err(not_here());
                }
                let first = ev.next()?;
                let node = Node::new(ev, first, 0)?;
                if matches!(node.event, Event::MappingStart(..)) {
                    let resource = read_resource(node.events, namespace)?;
                    out.push(Input {
                        resource,
                        origin: Some(Origin { text, doc }),
                    });
                } else if !node.scalar()?.is_null() {
                    // Only an empty document is skipped (as
                    // `from_documents` does); anything else is an error.
                    return Err(not_here());
                }
                doc += 1;
            }
            _ => return Err(not_here()),
        }
    }
    Ok(Counts {
        docs: doc,
        nodes: ev.nodes,
    })
}

/// The error that sends a text back to the slow path; its text is never
/// shown.
fn not_here() -> Error {
    Error::custom("not for the fast path")
}

/// One resource, its mapping's start read: `apiVersion` and `kind` first,
/// then the kind's type.
fn read_resource(ev: &mut Events<'_>, namespace: &str) -> Result<Resource, Error> {
    let mut keys = Keys::default();
    let (mut api_version, mut kind) = (None, None);
    while api_version.is_none() || kind.is_none() {
        let Event::Scalar(key, ..) = ev.next()? else {
            return Err(not_here());
        };
        keys.insert(&key)?;
        let value = ev.next()?;
        let Value::String(value) = Node::new(ev, value, 1)?.scalar()? else {
            return Err(not_here());
        };
        match key.as_str() {
            "apiVersion" => api_version = Some(value),
            "kind" => kind = Some(value),
            _ => return Err(not_here()),
        }
    }
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        return Err(not_here());
    };
    if api_version
        .strip_prefix(api::GROUP)
        .and_then(|v| v.strip_prefix('/'))
        != Some(api::VERSION)
    {
        return Err(not_here());
    }
    let mut resource = match kind.as_str() {
        "Microservice" => Resource::Microservice(rest_of(ev, keys)?),
        "Route" => Resource::Route(rest_of(ev, keys)?),
        "EgressPolicy" => Resource::EgressPolicy(rest_of(ev, keys)?),
        "AccessPolicy" => Resource::AccessPolicy(rest_of(ev, keys)?),
        "MeshPolicy" => Resource::MeshPolicy(rest_of(ev, keys)?),
        "IngressPolicy" => Resource::IngressPolicy(rest_of(ev, keys)?),
        _ => return Err(not_here()),
    };
    let meta = resource.meta_mut();
    let name_ok = meta.name.as_deref().is_some_and(is_dns_label);
    let namespace = meta
        .namespace
        .take()
        .unwrap_or_else(|| namespace.to_string());
    if !name_ok || !is_dns_label(&namespace) {
        return Err(not_here());
    }
    meta.namespace = Some(namespace);
    Ok(resource)
}

/// The rest of a resource's mapping (metadata, spec; status is read and
/// dropped, as `resource::typed` drops it) as the root type `T`.
fn rest_of<T: DeserializeOwned>(ev: &mut Events<'_>, keys: Keys) -> Result<T, Error> {
    let mut root = Root {
        events: ev,
        keys,
        pending: None,
        ended: false,
    };
    let value = T::deserialize(&mut root)?;
    if !root.ended {
        return Err(not_here());
    }
    Ok(value)
}

/// Where a piece's events come from.
enum Source<'a> {
    Lines(Lines<'a>),
    Yaml(Box<Parser<std::str::Chars<'a>>>),
}

/// The events and the node count of one piece of text.
struct Events<'a> {
    source: Source<'a>,
    nodes: usize,
    /// The line scanner gave the text up (not a verdict on the text).
    given_up: bool,
}

impl<'a> Events<'a> {
    fn new(source: Source<'a>) -> Self {
        Events {
            source,
            nodes: 0,
            given_up: false,
        }
    }

    fn next(&mut self) -> Result<Event, Error> {
        match &mut self.source {
            Source::Lines(l) => l.next().ok_or_else(|| {
                self.given_up = true;
                not_here()
            }),
            Source::Yaml(p) => match p.next_token() {
                Ok((event, _)) => Ok(event),
                Err(_) => Err(not_here()),
            },
        }
    }
}

/// Keys seen in one mapping, by hash: a duplicate is refused (a false
/// match only sends the text to the slow path, which says what is wrong).
#[derive(Default)]
struct Keys(Vec<u64>);

impl Keys {
    fn insert(&mut self, key: &str) -> Result<(), Error> {
        // FNV-1a.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        if self.0.contains(&h) {
            return Err(not_here());
        }
        self.0.push(h);
        Ok(())
    }
}

/// One node whose first event has been read.
struct Node<'e, 'a> {
    events: &'e mut Events<'a>,
    event: Event,
    depth: usize,
}

impl<'e, 'a> Node<'e, 'a> {
    /// Counts the node and checks its depth; anchors, aliases and anything
    /// but a scalar or the start of a collection are not for the fast path.
    fn new(events: &'e mut Events<'a>, event: Event, depth: usize) -> Result<Self, Error> {
        let anchor = match &event {
            Event::Scalar(_, _, a, _) | Event::SequenceStart(a, _) | Event::MappingStart(a, _) => {
                *a
            }
            _ => return Err(not_here()),
        };
        events.nodes += 1;
        if anchor > 0 || depth > MAX_DEPTH || events.nodes > MAX_NODES {
            return Err(not_here());
        }
        Ok(Node {
            events,
            event,
            depth,
        })
    }

    /// A scalar resolved as the slow path resolves it.
    fn scalar(self) -> Result<Value, Error> {
        match self.event {
            Event::Scalar(s, style, _, tag) => {
                scalar(s, style, tag.as_ref()).map_err(Error::custom)
            }
            _ => Err(not_here()),
        }
    }

    fn seq<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let mut seq = Items {
            events: self.events,
            depth: self.depth + 1,
            ended: false,
        };
        let value = visitor.visit_seq(&mut seq)?;
        if seq.ended {
            Ok(value)
        } else {
            Err(not_here())
        }
    }

    fn map<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let mut map = Entries {
            events: self.events,
            depth: self.depth + 1,
            keys: Keys::default(),
            value_due: false,
            ended: false,
        };
        let value = visitor.visit_map(&mut map)?;
        if map.ended {
            Ok(value)
        } else {
            Err(not_here())
        }
    }

    /// Reads the node to its end, checking it as the slow path would.
    fn skip(self) -> Result<(), Error> {
        let depth = self.depth + 1;
        match self.event {
            Event::Scalar(..) => self.scalar().map(drop),
            Event::SequenceStart(..) => loop {
                match self.events.next()? {
                    Event::SequenceEnd => return Ok(()),
                    e => Node::new(self.events, e, depth)?.skip()?,
                }
            },
            Event::MappingStart(..) => {
                let mut keys = Keys::default();
                loop {
                    match self.events.next()? {
                        Event::MappingEnd => return Ok(()),
                        Event::Scalar(k, ..) => keys.insert(&k)?,
                        _ => return Err(not_here()),
                    }
                    let e = self.events.next()?;
                    Node::new(self.events, e, depth)?.skip()?;
                }
            }
            _ => Err(not_here()),
        }
    }

    fn is_scalar(&self) -> bool {
        matches!(self.event, Event::Scalar(..))
    }
}

/// Methods that take a scalar only (as `Value` takes no array or object
/// for them): the scalar goes to `Value`'s deserializer.
macro_rules! scalar_only {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            if !self.is_scalar() {
                return Err(not_here());
            }
            self.scalar()?.$method(visitor).map_err(Error::custom)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Node<'_, '_> {
    type Error = Error;

    scalar_only! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.event {
            Event::SequenceStart(..) => self.seq(visitor),
            Event::MappingStart(..) => self.map(visitor),
            _ => self
                .scalar()?
                .deserialize_any(visitor)
                .map_err(Error::custom),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_scalar() {
            self.scalar()?
                .deserialize_option(visitor)
                .map_err(Error::custom)
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.event {
            Event::SequenceStart(..) => self.seq(visitor),
            _ => Err(not_here()),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.event {
            Event::MappingStart(..) => self.map(visitor),
            _ => Err(not_here()),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.event {
            Event::SequenceStart(..) => self.seq(visitor),
            Event::MappingStart(..) => self.map(visitor),
            _ => Err(not_here()),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // Only a plain variant name, as a string scalar.
        match self.scalar()? {
            v @ Value::String(_) => v
                .deserialize_enum(name, variants, visitor)
                .map_err(Error::custom),
            _ => Err(not_here()),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.skip()?;
        visitor.visit_unit()
    }
}

/// The items of a sequence.
struct Items<'e, 'a> {
    events: &'e mut Events<'a>,
    depth: usize,
    ended: bool,
}

impl<'de> de::SeqAccess<'de> for Items<'_, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.ended {
            return Ok(None);
        }
        match self.events.next()? {
            Event::SequenceEnd => {
                self.ended = true;
                Ok(None)
            }
            e => seed
                .deserialize(Node::new(self.events, e, self.depth)?)
                .map(Some),
        }
    }
}

/// The entries of a mapping.
struct Entries<'e, 'a> {
    events: &'e mut Events<'a>,
    depth: usize,
    keys: Keys,
    value_due: bool,
    ended: bool,
}

impl<'de> de::MapAccess<'de> for Entries<'_, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.ended || self.value_due {
            return Err(not_here());
        }
        match self.events.next()? {
            Event::MappingEnd => {
                self.ended = true;
                Ok(None)
            }
            Event::Scalar(key, ..) => {
                self.keys.insert(&key)?;
                self.value_due = true;
                let key: StringDeserializer<Error> = key.into_deserializer();
                seed.deserialize(key).map(Some)
            }
            _ => Err(not_here()),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        if !self.value_due {
            return Err(not_here());
        }
        self.value_due = false;
        let e = self.events.next()?;
        seed.deserialize(Node::new(self.events, e, self.depth)?)
    }
}

/// The rest of a resource's top-level mapping, as the root type sees it:
/// `metadata` (a mapping) and `spec`; `status` is checked and dropped;
/// any other key is not for the fast path.
struct Root<'e, 'a> {
    events: &'e mut Events<'a>,
    keys: Keys,
    /// The value event of the key just given.
    pending: Option<Event>,
    ended: bool,
}

impl<'de> de::Deserializer<'de> for &mut Root<'_, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> de::MapAccess<'de> for &mut Root<'_, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.ended || self.pending.is_some() {
            return Err(not_here());
        }
        loop {
            let key = match self.events.next()? {
                Event::MappingEnd => {
                    self.ended = true;
                    return Ok(None);
                }
                Event::Scalar(key, ..) => key,
                _ => return Err(not_here()),
            };
            self.keys.insert(&key)?;
            let value = self.events.next()?;
            match (key.as_str(), &value) {
                ("status", _) => Node::new(self.events, value, 1)?.skip()?,
                ("metadata", Event::MappingStart(..)) | ("spec", _) => {
                    self.pending = Some(value);
                    let key: StringDeserializer<Error> = key.into_deserializer();
                    return seed.deserialize(key).map(Some);
                }
                _ => return Err(not_here()),
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let e = self.pending.take().ok_or_else(not_here)?;
        seed.deserialize(Node::new(self.events, e, 1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The slow path's resources, when it finds nothing wrong, in the
    /// order `load` gives them.
    fn slow(text: &str) -> Option<String> {
        let docs = crate::source::parse_yaml_values(text, None).ok()?;
        let (mut inputs, errs) = crate::resource::from_documents(docs, 0, "dflt");
        crate::order_inputs(&mut inputs);
        errs.is_empty().then(|| format!("{inputs:?}"))
    }

    /// The fast path's resources, when it takes the text, in that order.
    fn fast(text: &str) -> Option<String> {
        read(text, 0).map(|out| format!("{out:?}"))
    }

    /// [`read_all`] of one text (number `at` of `at + 1`, the others
    /// empty), ordered as `load` orders it.
    fn read(text: &str, at: usize) -> Option<Vec<Input>> {
        let mut texts = vec![(None, ""); at];
        texts.push((None, text));
        let (mut out, taken) = read_all(&texts, "dflt");
        crate::order_inputs(&mut out);
        taken[at].then_some(out)
    }

    /// Every example and golden input, one document each.
    fn corpus() -> Vec<String> {
        static CORPUS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        CORPUS.get_or_init(read_corpus).clone()
    }

    fn read_corpus() -> Vec<String> {
        let docs: Vec<String> = crate::example_files()
            .iter()
            .flat_map(|text| text.split("\n---\n").map(|d| format!("{d}\n")))
            .collect();
        assert!(docs.len() > 30, "{}", docs.len());
        docs
    }

    #[test]
    fn every_example_takes_the_fast_path_and_reads_the_same() {
        for doc in corpus() {
            let f = fast(&doc);
            assert!(f.is_some(), "not on the fast path:\n{doc}");
            assert_eq!(f, slow(&doc), "{doc}");
        }
        let all = corpus().join("---\n");
        assert!(fast(&all).is_some());
        assert_eq!(fast(&all), slow(&all));
    }

    #[test]
    fn the_key_guess_reads_plain_metadata_and_gives_up_on_the_rest() {
        fn guess(doc: &str) -> Option<(&str, &str)> {
            guess_key(doc, "dflt")
        }
        assert_eq!(
            guess("---\nkind: Route\nmetadata: {name: a, namespace: b}\nspec: {}\n"),
            Some(("b", "a"))
        );
        assert_eq!(
            guess("metadata: {namespace: \"b\", labels: {x: y}, name: a}\n"),
            Some(("b", "a"))
        );
        assert_eq!(
            guess(
                "kind: Route\nmetadata:\n  # c\n  labels:\n    name: no\n  name: a\nspec:\n  name: no\n"
            ),
            Some(("dflt", "a"))
        );
        assert_eq!(guess("kind: Route\nmetadata: {namespace: b}\n"), None);
        assert_eq!(guess("kind: Route\nmetadata: [a]\n"), None);
        assert_eq!(guess("kind: Route\nspec:\n  metadata: {name: a}\n"), None);
    }

    #[test]
    fn documents_are_read_in_key_order_and_keep_their_numbers() {
        // Out of key order across two texts; one document has no guess
        // (its metadata is not plain), one is a duplicate of another.
        let doc = |ns: &str, name: &str| {
            format!(
                "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{mtls: strict}}\n"
            )
        };
        let a = format!("{}---\n---\n{}", doc("z", "default"), doc("a", "default"));
        let odd = "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default, namespace: m, labels: {a: \"{,}\"}}\nspec: {}\n";
        let b = format!(
            "{}---\n{odd}---\n{}",
            doc("a", "default"),
            doc("n", "default")
        );
        let (out, taken) = read_all(&[(None, &a), (None, &b)], "dflt");
        assert_eq!(taken, [true, true]);
        // Each input's namespace and where it was (text, document).
        fn places(inputs: &[Input]) -> Vec<(&str, usize, usize)> {
            inputs
                .iter()
                .map(|i| {
                    let o = i.origin.as_ref().unwrap();
                    (
                        i.resource.meta().namespace.as_deref().unwrap(),
                        o.text,
                        o.doc,
                    )
                })
                .collect()
        }
        // The guessless document is read first; `load` then orders all.
        assert_eq!(
            places(&out),
            [
                ("m", 1, 1),
                ("a", 0, 2),
                ("a", 1, 0),
                ("n", 1, 2),
                ("z", 0, 0)
            ]
        );
        let (model, inputs) = crate::load(&[(None, &a), (None, &b)], "dflt");
        assert_eq!(
            places(&inputs),
            [
                ("a", 0, 2),
                ("a", 1, 0),
                ("m", 1, 1),
                ("n", 1, 2),
                ("z", 0, 0)
            ]
        );
        // The later of the two is the duplicate, with its own position.
        let twice: Vec<String> = model.diagnostics.iter().map(|d| format!("{d}")).collect();
        assert_eq!(twice.len(), 1, "{twice:?}");
        assert!(twice[0].contains("defined twice"), "{twice:?}");
        // Text b, document 0: its metadata is on line 3 (text a's on 9).
        assert_eq!(model.diagnostics[0].line, Some(3), "{twice:?}");
    }

    #[test]
    fn halves_number_documents_as_one_pass() {
        let docs = corpus();
        let mut text = String::new();
        while text.len() < PARALLEL_MIN_BYTES * 2 {
            for d in &docs {
                // Renamed, so no resource is defined twice (not that the
                // fast path checks that).
                text.push_str(&d.replace("name: ", &format!("name: n{}", text.len())));
                text.push_str("---\n---\n");
            }
        }
        let out = read(&text, 3).expect("taken");
        let docs = crate::source::parse_yaml_values(&text, None).unwrap();
        let (mut slow, errs) = crate::resource::from_documents(docs, 3, "dflt");
        assert!(errs.is_empty());
        crate::order_inputs(&mut slow);
        assert_eq!(format!("{out:?}"), format!("{slow:?}"));
    }

    #[test]
    fn what_the_fast_path_leaves_to_the_slow_one() {
        let ok = "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec: {mtls: strict}\n";
        assert!(fast(ok).is_some());
        for bad in [
            // kind after spec, anchors, aliases, duplicates, unknown fields
            "apiVersion: packlight.dev/v1alpha1\nmetadata: {name: default}\nkind: MeshPolicy\nspec: {}\n",
            "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: &m {name: default}\nspec: {}\n",
            "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec: {}\nstatus: {a: 1, a: 2}\n",
            "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec: {}\nextra: 1\n",
            "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {name: Default}\nspec: {}\n",
            "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: [default]\nspec: {}\n",
            "apiVersion: packlight.dev/v1\nkind: MeshPolicy\nmetadata: {name: default}\nspec: {}\n",
            "apiVersion: packlight.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {}\n",
            "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default}\nspec: {mtls: 1e999}\n",
            "- a\n",
            "a: [1\n",
        ] {
            assert_eq!(fast(bad), None, "{bad}");
        }
        // An empty document is skipped, as before; status is dropped.
        let with = format!("---\n---\n{ok}status: {{conditions: [{{x: y}}]}}\n");
        assert_eq!(fast(&with), slow(&with));
        assert!(fast(&with).is_some());
    }

    /// Pieces that change a document's meaning or break it.
    const EDITS: &[&str] = &[
        "",
        " ",
        "  ",
        "\n",
        "\n  ",
        "- ",
        ": ",
        ":",
        ",",
        "{",
        "}",
        "[",
        "]",
        "\"",
        "'",
        "#",
        "&a ",
        "*a",
        "!!str ",
        "~",
        "null",
        "1.0",
        "0x1F",
        "1e999",
        "true",
        "-1",
        "\"1.0\"",
        "\n---\n",
        "status: {}\n",
        "metadata: {}\n",
        "kind: Route\n",
        "name: x",
        "spec:",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever the fast path accepts, the slow path accepts with no
        /// diagnostic and reads into the same resources.
        #[test]
        fn fast_path_agrees_with_the_slow_one(
            doc in 0usize..1000,
            edits in proptest::collection::vec((0usize..10_000, 0usize..4, 0..EDITS.len()), 1..4),
        ) {
            let docs = corpus();
            let text = crate::edited(&docs[doc % docs.len()], &edits, EDITS);
            drop(docs);
            if let Some(f) = fast(&text) {
                prop_assert_eq!(Some(f), slow(&text), "{}", text);
            }
        }
    }
}
