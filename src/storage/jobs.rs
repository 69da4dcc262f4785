//! Preheat jobs as stored: the formats and keys of the `jobs`,
//! `job-items` and `job-keys` trees, written and read only here.
//!
//! - `jobs`: job id → [`JobRecord`] (JSON);
//! - `job-items`: `JOB/NNNNNNNN` (the item's index, 8 digits) →
//!   [`ItemRecord`] (JSON), so a job's items scan in order;
//! - `job-keys`: idempotency key → [`KeyRecord`] (JSON).
//!
//! Flushed with the rest of the store by [`Storage::flush`]. A record that
//! does not decode is skipped with a warning rather than failing startup:
//! the other jobs still load. `tests/fixtures/preheat-jobs-v1.json` holds
//! records as they have been written so far; a unit test loads them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Storage, StorageError};

/// What a client asks for: `POST /api/v1/preheat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Full object URLs; each must fall under a configured origin's
    /// `base_url` (nothing else is fetched).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// The named origin of `keys` and `prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// Every object whose key starts with this (through `list-objects`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// A fixed piece length in bytes (4 MiB..=64 MiB); part of task ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub piece_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// Request headers for the origin (passed to the plugin as a client's
    /// would be, so only the origin's `forward_headers`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Objects downloaded at once (default `preheat.concurrency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// An image: `REGISTRY/NAME:TAG` or `REGISTRY/NAME@sha256:HEX`, read
    /// through `origin` or the registry origin whose `base_url` is
    /// `…REGISTRY/v2/`. Its config and layers become the items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The image of an index to take: `OS/ARCH[/VARIANT]` or `all`;
    /// default this server's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Query parameters left out of task ids (signatures, expiry), as
    /// Dragonfly peers leave them out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filtered_query_params: Vec<String>,
    /// The job fails, with what is not stored yet, after this long (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Also download each object on every other seed host the built-in
    /// scheduler knows (`DfdaemonUpload.DownloadTask`), Dragonfly's
    /// `all_seed_peers` scope. Without the scheduler, only here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_seed_peers: bool,
}

/// How one object fared on another seed host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostResult {
    pub hostname: String,
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a place among the running jobs.
    Queued,
    /// Expanding its prefix.
    Listing,
    Running,
    /// Every object is stored.
    Succeeded,
    /// Done, but some objects are missing or failed (see the items).
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    Pending,
    Running,
    Done,
    /// The origin says it does not exist.
    Missing,
    Failed,
    /// The job was cancelled before it finished.
    Cancelled,
}

/// One object of a job, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemRecord {
    pub url: String,
    pub origin: String,
    pub state: ItemState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The HTTP status its error means (403: credentials refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Its downloads on the other seed hosts (`all_seed_peers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostResult>,
}

/// A job, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub state: JobState,
    pub request: JobRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Items are known (the prefix is expanded).
    pub expanded: bool,
    pub items: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The HTTP status its error means (a job that could not list or
    /// resolve what it names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Its id in Dragonfly's open API (`/oapi/v1/jobs/{number}`), for a
    /// job created there, with the arguments it was created with
    /// (credentials redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dragonfly_args: Option<serde_json::Value>,
}

/// Which job an idempotency key made, and a fingerprint of its request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub job: String,
    pub fingerprint: String,
}

/// A stored job with its items, in order.
#[derive(Debug, Clone)]
pub struct StoredJob {
    pub record: JobRecord,
    pub items: Vec<ItemRecord>,
}

const JOBS: &str = "jobs";
const ITEMS: &str = "job-items";
const KEYS: &str = "job-keys";

fn item_key(job: &str, i: u32) -> Vec<u8> {
    format!("{job}/{i:08}").into_bytes()
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

/// `value` decoded, or `None` with a warning naming the tree and key.
fn decode_or_warn<T: for<'de> Deserialize<'de>>(tree: &str, key: &[u8], value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(
                tree,
                key = %String::from_utf8_lossy(key),
                error = %e,
                "skipping a preheat record that does not decode"
            );
            None
        }
    }
}

impl Storage {
    /// Every stored job with its items.
    pub fn jobs(&self) -> Result<Vec<StoredJob>, StorageError> {
        let (jobs, items) = self.with(|h| Ok((h.db.open_tree(JOBS)?, h.db.open_tree(ITEMS)?)))?;
        let mut out = Vec::new();
        for entry in jobs.iter() {
            let (key, value) = entry.map_err(|e| self.sled(e))?;
            let Some(record) = decode_or_warn::<JobRecord>(JOBS, &key, &value) else {
                continue;
            };
            let mut job = StoredJob {
                record,
                items: Vec::new(),
            };
            let prefix = format!("{}/", job.record.id);
            for entry in items.scan_prefix(prefix.as_bytes()) {
                let (key, value) = entry.map_err(|e| self.sled(e))?;
                if let Some(item) = decode_or_warn(ITEMS, &key, &value) {
                    job.items.push(item);
                }
            }
            out.push(job);
        }
        Ok(out)
    }

    pub fn put_job(&self, record: &JobRecord) -> Result<(), StorageError> {
        let value = encode(record);
        self.with(|h| h.db.open_tree(JOBS)?.insert(record.id.as_bytes(), value))?;
        Ok(())
    }

    /// Item `i` of job `job`.
    pub fn put_job_item(&self, job: &str, i: u32, item: &ItemRecord) -> Result<(), StorageError> {
        let value = encode(item);
        self.with(|h| h.db.open_tree(ITEMS)?.insert(item_key(job, i), value))?;
        Ok(())
    }

    /// The job an idempotency key made, if any.
    pub fn job_key(&self, key: &str) -> Result<Option<KeyRecord>, StorageError> {
        let value = self.with(|h| h.db.open_tree(KEYS)?.get(key.as_bytes()))?;
        Ok(value.and_then(|v| decode_or_warn(KEYS, key.as_bytes(), &v)))
    }

    pub fn put_job_key(&self, key: &str, record: &KeyRecord) -> Result<(), StorageError> {
        let value = encode(record);
        self.with(|h| h.db.open_tree(KEYS)?.insert(key.as_bytes(), value))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records of `tests/fixtures/storage/preheat-jobs-v1.json`.
    fn fixture() -> Vec<(String, String, String)> {
        let doc: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/storage/preheat-jobs-v1.json"
        ))
        .unwrap();
        serde_json::from_value(doc["records"].clone()).unwrap()
    }

    #[test]
    fn jobs_written_in_format_1_still_load_and_are_written_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), 1 << 20, 0).unwrap();
        let records = fixture();
        for (tree, key, value) in &records {
            storage
                .with(|h| {
                    h.db.open_tree(tree)?
                        .insert(key.as_bytes(), value.as_bytes())
                })
                .unwrap();
        }
        let jobs = storage.jobs().unwrap();
        // The truncated record is skipped; the four others load, with
        // their items in order.
        let summary: Vec<(&str, JobState, Vec<ItemState>)> = jobs
            .iter()
            .map(|j| {
                (
                    &j.record.id[..16],
                    j.record.state,
                    j.items.iter().map(|i| i.state).collect(),
                )
            })
            .collect();
        use ItemState::*;
        assert_eq!(
            summary,
            [
                ("0000000000000001", JobState::Succeeded, vec![Done, Done]),
                (
                    "0000000000000002",
                    JobState::Running,
                    vec![Done, Running, Pending]
                ),
                ("0000000000000003", JobState::Failed, vec![Missing, Failed]),
                ("0000000000000004", JobState::Queued, vec![]),
            ]
        );
        let b = &jobs[1].record;
        assert_eq!(b.request.prefix.as_deref(), Some("models/"));
        assert_eq!(b.request.piece_length, Some(4 << 20));
        assert_eq!(b.request.headers["x-team"], "infra");
        assert_eq!(jobs[1].items[0].content_length, Some(4194305));
        assert!(jobs[2].items[0].error.as_deref().unwrap().contains("404"));
        assert!(!jobs[3].record.expanded);
        let key = storage.job_key("rollout-42").unwrap().unwrap();
        assert_eq!(key.job, jobs[0].record.id);
        assert_eq!(storage.job_key("unknown").unwrap(), None);

        // Written back, each record is the same bytes: the format did not
        // change.
        let mut written = Vec::new();
        for job in &jobs {
            written.push(("jobs", job.record.id.clone(), encode(&job.record)));
            for (i, item) in job.items.iter().enumerate() {
                let key = String::from_utf8(item_key(&job.record.id, i as u32)).unwrap();
                written.push(("job-items", key, encode(item)));
            }
        }
        written.push(("job-keys", "rollout-42".into(), encode(&key)));
        let fixture: Vec<_> = records
            .iter()
            .filter(|(_, key, _)| !key.starts_with("0000000000000005"))
            .map(|(t, k, v)| (t.as_str(), k.clone(), v.clone().into_bytes()))
            .collect();
        assert_eq!(written, fixture);
    }

    #[test]
    fn put_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), 1 << 20, 0).unwrap();
        let record = JobRecord {
            id: "j".into(),
            state: JobState::Queued,
            request: JobRequest {
                urls: vec!["http://o/x".into()],
                ..Default::default()
            },
            idempotency_key: None,
            created_at_ms: 1,
            updated_at_ms: 2,
            expanded: true,
            items: 1,
            error: None,
            status: None,
            number: None,
            dragonfly_args: None,
        };
        storage.put_job(&record).unwrap();
        let item = ItemRecord {
            url: "http://o/x".into(),
            origin: "o".into(),
            state: ItemState::Pending,
            task_id: None,
            content_length: None,
            error: None,
            status: None,
            hosts: Vec::new(),
        };
        // Items load in index order (10 after 2).
        for i in [10, 2, 0] {
            let mut item = item.clone();
            item.url = format!("http://o/{i}");
            storage.put_job_item("j", i, &item).unwrap();
        }
        let jobs = storage.jobs().unwrap();
        assert_eq!(jobs.len(), 1);
        let urls: Vec<_> = jobs[0].items.iter().map(|i| i.url.as_str()).collect();
        assert_eq!(urls, ["http://o/0", "http://o/2", "http://o/10"]);
    }
}
