//! The embedded durable store: every accepted resource, with its
//! generation and resource version, one JSON file each under
//! `DATA_DIR/store/KIND/NAMESPACE/NAME.json`, written atomically and
//! durably (temporary file + fsync + rename), so a crash leaves either the
//! old or the new object, never half of one. Its status (derived: the
//! engine recomputes it at start) sits beside it in `NAME.status`,
//! written atomically but without fsync; a status file lost or torn by a
//! crash is ignored.
//!
//! Changes happen in memory first ([`Store::put`], [`Store::set_status`],
//! [`Store::delete`]); [`Store::take_writes`] hands out the files still to
//! write, which the engine writes after releasing its lock (the xDS push
//! does not wait for the disk). Writes of one file never go back in time:
//! a write older than the last one done for that file is skipped.
//!
//! The store holds only what the model accepted: validation happens
//! before [`Store::put`], in the engine.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use packlight_model::{Input, Resource, ResourceId};
use serde_json::Value;

/// What the store can fail at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file.
    #[error("store file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A stored file that is not a packlight resource any more.
    #[error("store file {path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One stored resource.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The resource as accepted (metadata carries generation and
    /// resourceVersion).
    pub resource: Resource,
    /// Its status (`observedGeneration`, `conditions`), as JSON.
    pub status: Value,
}

impl Stored {
    /// The object as the API shows it: the resource with its status.
    pub fn to_value(&self) -> Value {
        let mut v = self.resource.to_value();
        if let Value::Object(m) = &mut v {
            if self.status.is_null() {
                m.remove("status");
            } else {
                m.insert("status".to_string(), self.status.clone());
            }
        }
        v
    }
}

/// What is still to be written of one object.
#[derive(Clone, Copy, Debug, Default)]
struct Dirty {
    spec: bool,
    status: bool,
}

/// The store: in memory, mirrored to disk.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    objects: BTreeMap<ResourceId, Stored>,
    revision: u64,
    /// Objects changed in memory since the last [`Store::take_writes`].
    dirty: BTreeMap<ResourceId, Dirty>,
    /// Sequence number of the next batch of writes.
    seq: u64,
    /// Per file, the sequence number of the last write done.
    written: Arc<Mutex<HashMap<PathBuf, u64>>>,
}

/// One file to write or remove.
#[derive(Debug)]
struct FileWrite {
    path: PathBuf,
    /// `None`: remove the file.
    body: Option<Vec<u8>>,
    /// fsync before the rename (spec files).
    durable: bool,
}

/// Files the store still has to write, taken from it with
/// [`Store::take_writes`] (cheap, under the engine's lock) and written
/// with [`Writes::write`] (blocking, after the lock is released).
#[derive(Debug)]
#[must_use = "the changes are in memory only until written"]
pub struct Writes {
    seq: u64,
    files: Vec<FileWrite>,
    written: Arc<Mutex<HashMap<PathBuf, u64>>>,
}

impl Writes {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Writes the files (blocking): spec files durably (temporary file,
    /// fsync, rename), status files without fsync, removals. A file
    /// already written by a later batch is left alone.
    pub fn write(self) -> Result<(), StoreError> {
        if self.files.is_empty() {
            return Ok(());
        }
        // A poisoned lock only means a panic in another write; the map of
        // sequence numbers stays usable.
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        for f in self.files {
            if written.get(&f.path).is_some_and(|&s| s > self.seq) {
                continue;
            }
            match &f.body {
                Some(body) => {
                    crate::ca::write_private(&f.path, body, f.durable).map_err(io(&f.path))?
                }
                None => match fs::remove_file(&f.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(&f.path)(e)),
                },
            }
            written.insert(f.path, self.seq);
        }
        Ok(())
    }
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A new object.
    Created,
    /// The spec changed (generation bumped).
    Configured,
    /// Identical to what was stored.
    Unchanged,
}

impl Action {
    /// `created`, `configured`, `unchanged` (kubectl's words).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The spec (and labels/annotations) of a resource: what a change is.
fn content(r: &Resource) -> Value {
    let v = r.to_value();
    let meta = &v["metadata"];
    serde_json::json!({
        "spec": v.get("spec").cloned().unwrap_or(Value::Null),
        "labels": meta.get("labels").cloned().unwrap_or(Value::Null),
        "annotations": meta.get("annotations").cloned().unwrap_or(Value::Null),
    })
}

impl Store {
    /// Opens (or creates) the store under `data_dir/store`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let dir = data_dir.join("store");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut store = Store {
            dir,
            objects: BTreeMap::new(),
            revision: 0,
            dirty: BTreeMap::new(),
            seq: 0,
            written: Arc::default(),
        };
        store.load()?;
        Ok(store)
    }

    fn load(&mut self) -> Result<(), StoreError> {
        let mut files = Vec::new();
        walk(&self.dir, &mut files)?;
        files.sort();
        for path in files {
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = fs::read_to_string(&path).map_err(io(&path))?;
            let corrupt = |message: String| StoreError::Corrupt {
                path: path.clone(),
                message,
            };
            let mut value: Value =
                serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
            // Older stores kept the status inside the object's file.
            let inline = value
                .as_object_mut()
                .and_then(|m| m.remove("status"))
                .unwrap_or(Value::Null);
            let status = read_status(&path.with_extension("status")).unwrap_or(inline);
            let (inputs, diags) =
                packlight_model::resource::from_documents(vec![value], 0, "default");
            if let Some((_, d)) = diags.into_iter().next() {
                return Err(corrupt(d.message));
            }
            for input in inputs {
                let rv = resource_version(&input.resource);
                self.revision = self.revision.max(rv);
                self.objects.insert(
                    input.resource.id(),
                    Stored {
                        resource: input.resource,
                        status: status.clone(),
                    },
                );
            }
        }
        Ok(())
    }

    fn path_of(&self, id: &ResourceId) -> PathBuf {
        self.dir
            .join(&id.kind)
            .join(&id.namespace)
            .join(format!("{}.json", id.name))
    }

    fn mark(&mut self, id: &ResourceId, spec: bool, status: bool) {
        let d = self.dirty.entry(id.clone()).or_default();
        d.spec |= spec;
        d.status |= status;
    }

    /// The files changed in memory since the last call, to be written
    /// with [`Writes::write`]; the in-memory store is already up to date.
    pub fn take_writes(&mut self) -> Result<Writes, StoreError> {
        self.seq += 1;
        let mut files = Vec::new();
        for (id, d) in std::mem::take(&mut self.dirty) {
            let path = self.path_of(&id);
            let status_path = path.with_extension("status");
            let Some(stored) = self.objects.get(&id) else {
                files.push(FileWrite {
                    path,
                    body: None,
                    durable: true,
                });
                files.push(FileWrite {
                    path: status_path,
                    body: None,
                    durable: false,
                });
                continue;
            };
            let json = |v: &Value, path: &Path| {
                serde_json::to_vec_pretty(v).map_err(|e| StoreError::Corrupt {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
            };
            if d.spec {
                let body = json(&stored.resource.to_value(), &path)?;
                files.push(FileWrite {
                    path,
                    body: Some(body),
                    durable: true,
                });
            }
            if d.status || d.spec {
                let body = json(&stored.status, &status_path)?;
                files.push(FileWrite {
                    path: status_path,
                    body: Some(body),
                    durable: false,
                });
            }
        }
        Ok(Writes {
            seq: self.seq,
            files,
            written: Arc::clone(&self.written),
        })
    }

    /// Writes what changed in memory now (blocking).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.take_writes()?.write()
    }

    /// Every stored resource, ordered by kind, namespace, name.
    pub fn iter(&self) -> impl Iterator<Item = (&ResourceId, &Stored)> {
        self.objects.iter()
    }

    /// The stored resources as model inputs.
    pub fn inputs(&self) -> Vec<Input> {
        self.objects
            .values()
            .map(|s| Input::new(s.resource.clone()))
            .collect()
    }

    /// One resource.
    pub fn get(&self, id: &ResourceId) -> Option<&Stored> {
        self.objects.get(id)
    }

    /// The store's revision: the highest resourceVersion handed out.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Stores `resource` (already validated) in memory; it is written by
    /// the next [`Store::take_writes`]. The generation is bumped only when
    /// the spec, labels or annotations change; status is kept.
    pub fn put(&mut self, mut resource: Resource) -> Result<Action, StoreError> {
        let id = resource.id();
        let prev = self.objects.get(&id);
        let action = match prev {
            None => Action::Created,
            Some(p) if content(&p.resource) == content(&resource) => Action::Unchanged,
            Some(_) => Action::Configured,
        };
        if action == Action::Unchanged {
            return Ok(action);
        }
        self.revision += 1;
        let generation = prev.and_then(|p| p.resource.meta().generation).unwrap_or(0) + 1;
        let created = prev.and_then(|p| p.resource.meta().creation_timestamp.clone());
        let uid = prev.and_then(|p| p.resource.meta().uid.clone());
        let status = prev.map(|p| p.status.clone()).unwrap_or(Value::Null);
        let meta = resource.meta_mut();
        meta.namespace = Some(id.namespace.clone());
        meta.generation = Some(generation);
        meta.resource_version = Some(self.revision.to_string());
        meta.creation_timestamp = created.or_else(|| {
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ))
        });
        meta.uid = uid.or_else(|| Some(format!("{}-{}", id.kind.to_lowercase(), self.revision)));
        meta.managed_fields = None;
        self.objects.insert(id.clone(), Stored { resource, status });
        self.mark(&id, true, false);
        Ok(action)
    }

    /// Replaces a resource's status (not its generation), in memory.
    /// Returns whether it changed.
    pub fn set_status(&mut self, id: &ResourceId, status: Value) -> Result<bool, StoreError> {
        let Some(s) = self.objects.get_mut(id) else {
            return Ok(false);
        };
        if s.status == status {
            return Ok(false);
        }
        s.status = status;
        self.mark(id, false, true);
        Ok(true)
    }

    /// Deletes a resource in memory (its files go with the next
    /// [`Store::take_writes`]); `false` when there was none.
    pub fn delete(&mut self, id: &ResourceId) -> Result<bool, StoreError> {
        if self.objects.remove(id).is_none() {
            return Ok(false);
        }
        self.revision += 1;
        self.mark(id, true, true);
        Ok(true)
    }
}

/// A status file's content; `None` when missing or unreadable (it is
/// written without fsync, so a crash may leave it torn).
fn read_status(path: &Path) -> Option<Value> {
    let text = fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "status file ignored");
            None
        }
    }
}

fn resource_version(r: &Resource) -> u64 {
    r.meta()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(text: &str) -> Resource {
        let (model, inputs) = packlight_model::load(&[(None, text)], "demo");
        assert!(!model.has_errors(), "{:?}", model.diagnostics);
        inputs.into_iter().next().unwrap().resource
    }

    const MS: &str = "apiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {name: a}\nspec:\n  port: 80\n  versions: [{version: \"1.0\"}]\n";

    #[test]
    fn survives_a_restart_with_generations() {
        let dir = tempfile::tempdir().unwrap();
        let id;
        {
            let mut s = Store::open(dir.path()).unwrap();
            let r = resource(MS);
            id = r.id();
            assert_eq!(s.put(r.clone()).unwrap(), Action::Created);
            assert_eq!(s.put(r).unwrap(), Action::Unchanged);
            let r2 = resource(&MS.replace("port: 80", "port: 81"));
            assert_eq!(s.put(r2).unwrap(), Action::Configured);
            s.set_status(&id, serde_json::json!({"observedGeneration": 2}))
                .unwrap();
            s.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let got = s.get(&id).unwrap();
        assert_eq!(got.resource.meta().generation, Some(2));
        assert_eq!(got.status["observedGeneration"], 2);
        assert_eq!(s.revision(), 2);
        assert_eq!(got.to_value()["spec"]["port"], 81);
    }

    #[test]
    fn deletes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let r = resource(MS);
        let id = r.id();
        s.put(r).unwrap();
        s.flush().unwrap();
        assert!(s.delete(&id).unwrap());
        assert!(!s.delete(&id).unwrap());
        s.flush().unwrap();
        assert!(Store::open(dir.path()).unwrap().get(&id).is_none());
    }

    #[test]
    fn nothing_is_on_disk_before_the_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let r = resource(MS);
        let id = r.id();
        s.put(r).unwrap();
        assert!(Store::open(dir.path()).unwrap().get(&id).is_none());
        let writes = s.take_writes().unwrap();
        assert!(!writes.is_empty());
        writes.write().unwrap();
        assert!(Store::open(dir.path()).unwrap().get(&id).is_some());
        assert!(s.take_writes().unwrap().is_empty());
    }

    #[test]
    fn an_older_batch_never_overwrites_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let r = resource(MS);
        let id = r.id();
        s.put(r).unwrap();
        let old = s.take_writes().unwrap();
        s.put(resource(&MS.replace("port: 80", "port: 81")))
            .unwrap();
        let new = s.take_writes().unwrap();
        new.write().unwrap();
        old.write().unwrap();
        let got = Store::open(dir.path()).unwrap();
        assert_eq!(got.get(&id).unwrap().to_value()["spec"]["port"], 81);
    }

    #[test]
    fn a_torn_status_file_is_ignored_and_old_inline_status_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let r = resource(MS);
        let id = r.id();
        s.put(r).unwrap();
        s.set_status(&id, serde_json::json!({"observedGeneration": 1}))
            .unwrap();
        s.flush().unwrap();
        let spec = s.path_of(&id);
        std::fs::write(spec.with_extension("status"), "{\"observedGen").unwrap();
        let got = Store::open(dir.path()).unwrap();
        assert!(got.get(&id).unwrap().status.is_null());
        // The layout before status files: status inside the object.
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&spec).unwrap()).unwrap();
        v["status"] = serde_json::json!({"observedGeneration": 1});
        std::fs::write(&spec, v.to_string()).unwrap();
        std::fs::remove_file(spec.with_extension("status")).unwrap();
        let got = Store::open(dir.path()).unwrap();
        assert_eq!(got.get(&id).unwrap().status["observedGeneration"], 1);
    }
}
