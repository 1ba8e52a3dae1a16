//! Leader election with a `coordination.k8s.io/v1` Lease: several replicas
//! run, one writes. The leader renews the Lease every third of its
//! duration; a candidate takes it when the holder has not renewed it for a
//! whole duration *as observed on the candidate's own clock* (client-go's
//! rule: no trust in other machines' clocks). Every write is an update
//! with the resourceVersion read, so two candidates never both win.
//!
//! In: a client, the Lease's namespace and name, this replica's identity.
//! Out: [`Elector::acquire`] returns once this replica leads;
//! [`Elector::hold`] renews until it fails to and then returns (the
//! caller stops writing); [`Elector::release`] hands the Lease on at
//! shutdown.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::Error;

/// Where the Lease is and how long it lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// How long a leader holds it without renewing.
    pub duration: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            namespace: "packlight-system".into(),
            name: "packlight-operator".into(),
            duration: Duration::from_secs(15),
        }
    }
}

/// One replica's view of the Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    identity: String,
    /// The last (holder, renewTime) seen, and when it was first seen.
    observed: Option<(String, Option<MicroTime>, Instant)>,
}

impl Elector {
    /// An elector for `identity` (unique per replica, e.g. the pod name).
    pub fn new(client: Client, config: LeaseConfig, identity: String) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            identity,
            observed: None,
        }
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.config.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Tries once to take or renew the Lease. True when this replica holds
    /// it afterwards.
    pub async fn try_acquire(&mut self) -> Result<bool, Error> {
        let now = MicroTime(Timestamp::now());
        let current = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| Error::Kube("reading the leader Lease".into(), e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Another replica created it first.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(Error::Kube("creating the leader Lease".into(), e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.identity;
        if !mine && !holder.is_empty() {
            // Someone else holds it: expired only when its record has not
            // changed for a whole duration on our clock.
            let record = (holder.clone(), spec.renew_time.clone());
            let first_seen = match &self.observed {
                Some((h, r, at)) if (h, r) == (&record.0, &record.1) => *at,
                _ => {
                    self.observed = Some((record.0, record.1, Instant::now()));
                    return Ok(false);
                }
            };
            let duration = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(self.seconds())).unwrap_or(15),
            );
            if first_seen.elapsed() < duration {
                return Ok(false);
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.seconds()),
            acquire_time: if mine {
                spec.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if mine {
                transitions
            } else {
                transitions.saturating_add(1)
            }),
            ..spec
        });
        // `replace` sends the resourceVersion read: a concurrent writer
        // makes this fail with 409 instead of both winning.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                if !mine {
                    tracing::info!(identity = %self.identity, "became the leader");
                }
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::Kube("updating the leader Lease".into(), e)),
        }
    }

    /// Returns once this replica holds the Lease.
    pub async fn acquire(&mut self) {
        let retry = (self.config.duration / 5).max(Duration::from_millis(200));
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews the Lease every third of its duration; returns when it could
    /// not renew it before it would expire (or another replica holds it).
    pub async fn hold(&mut self) {
        let period = (self.config.duration / 3).max(Duration::from_millis(100));
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(period).await;
            match self.try_acquire().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => {
                    tracing::warn!(identity = %self.identity, "lost the leader Lease");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the leader Lease failed");
                    // Stop writing before another replica may take over.
                    if last_renewed.elapsed() + period >= self.config.duration {
                        return;
                    }
                }
            }
        }
    }

    /// Hands the Lease on (clears the holder) if this replica holds it, so
    /// a standby takes over without waiting for it to expire.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        if let Err(e) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "releasing the leader Lease failed");
        }
    }
}
