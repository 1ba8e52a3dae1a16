//! The embedded durable store: every accepted resource, with its
//! generation, resource version and status, one JSON file each under
//! `DATA_DIR/store/KIND/NAMESPACE/NAME.json`, written atomically
//! (temporary file + rename + fsync), so a crash leaves either the old or
//! the new object, never half of one.
//!
//! The store holds only what the model accepted: validation happens
//! before [`Store::put`], in the engine.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

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

/// The store: in memory, mirrored to disk.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    objects: BTreeMap<ResourceId, Stored>,
    revision: u64,
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
            let status = value
                .as_object_mut()
                .and_then(|m| m.remove("status"))
                .unwrap_or(Value::Null);
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

    fn persist(&self, id: &ResourceId) -> Result<(), StoreError> {
        let path = self.path_of(id);
        let Some(stored) = self.objects.get(id) else {
            return Ok(());
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let text =
            serde_json::to_vec_pretty(&stored.to_value()).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?;
        crate::ca::write_private(&path, &text).map_err(io(&path))
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

    /// Stores `resource` (already validated). The generation is bumped
    /// only when the spec, labels or annotations change; status is kept.
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
        self.persist(&id)?;
        Ok(action)
    }

    /// Replaces a resource's status (not its generation). Returns whether
    /// it changed.
    pub fn set_status(&mut self, id: &ResourceId, status: Value) -> Result<bool, StoreError> {
        let Some(s) = self.objects.get_mut(id) else {
            return Ok(false);
        };
        if s.status == status {
            return Ok(false);
        }
        s.status = status;
        self.persist(id)?;
        Ok(true)
    }

    /// Deletes a resource; `false` when there was none.
    pub fn delete(&mut self, id: &ResourceId) -> Result<bool, StoreError> {
        if self.objects.remove(id).is_none() {
            return Ok(false);
        }
        self.revision += 1;
        let path = self.path_of(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(io(&path)(e)),
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
        assert!(s.delete(&id).unwrap());
        assert!(!s.delete(&id).unwrap());
        assert!(Store::open(dir.path()).unwrap().get(&id).is_none());
    }
}
