//! A namespace per test, deleted when the test is done with it.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use anyhow::Context;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client, Resource};

use crate::bench::{TestEnv, env};

/// A fresh namespace on the bench, with an admin client.
///
/// Deleted by [`TestNamespace::delete`], or else when dropped (the drop
/// blocks briefly to send the delete request; the namespace controller
/// then removes its contents in the background).
pub struct TestNamespace {
    env: TestEnv,
    client: Client,
    name: String,
    deleted: bool,
}

/// Creates a namespace named `<hint>-<random suffix>` on this test binary's
/// bench (starting the bench on first use; see [`env`]).
pub async fn namespace(hint: &str) -> anyhow::Result<TestNamespace> {
    env().await?.namespace(hint).await
}

impl TestEnv {
    /// Creates a namespace named `<hint>-<random suffix>`.
    pub async fn namespace(&self, hint: &str) -> anyhow::Result<TestNamespace> {
        let client = self.client()?;
        let name = unique_name(hint);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(TestNamespace {
            env: self.clone(),
            client,
            name,
            deleted: false,
        })
    }
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An admin client (usable in the runtime that created this namespace).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The bench this namespace lives on.
    pub fn env(&self) -> &TestEnv {
        &self.env
    }

    /// An admin [`Api`] for a namespaced kind, scoped to this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace now (the request; not waiting for the
    /// namespace controller to finish).
    pub async fn delete(mut self) -> anyhow::Result<()> {
        self.deleted = true;
        delete_namespace(self.client.clone(), &self.name).await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        // Drop cannot await, and may run inside or outside a runtime: send
        // the request from a thread with its own runtime and client.
        let env = self.env.clone();
        let name = std::mem::take(&mut self.name);
        let result = std::thread::spawn(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move { delete_namespace(env.client()?, &name).await })
        })
        .join();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("packlight-testenv: {e:#}"),
            Err(_) => eprintln!("packlight-testenv: namespace deletion thread panicked"),
        }
    }
}

async fn delete_namespace(client: Client, name: &str) -> anyhow::Result<()> {
    match Api::<Namespace>::all(client)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting namespace {name}")),
    }
}

/// `<hint>-<6 random base-36 chars>`, cut to a valid DNS label.
fn unique_name(hint: &str) -> String {
    let mut prefix: String = hint
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(50)
        .collect();
    prefix = prefix.trim_matches('-').to_owned();
    if prefix.is_empty() {
        prefix.push_str("test");
    }
    // RandomState is seeded randomly per instance: a cheap random number
    // without another dependency.
    let mut n = RandomState::new().hash_one(std::time::SystemTime::now());
    let mut suffix = String::new();
    for _ in 0..6 {
        let digit = u32::try_from(n % 36).unwrap_or(0);
        suffix.push(char::from_digit(digit, 36).unwrap_or('x'));
        n /= 36;
    }
    format!("{prefix}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn names_are_dns_labels_and_differ() {
        let a = unique_name("My_Test/ns");
        let b = unique_name("My_Test/ns");
        assert!(a.starts_with("my-test-ns-"), "{a}");
        assert_ne!(a, b);
        assert!(a.len() <= 63);
        assert!(unique_name("--").starts_with("test-"));
    }
}
