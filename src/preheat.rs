//! Preheat jobs: warm objects into the piece store before a rollout.
//!
//! A job names its objects by full URL, by keys of a named origin, or by a
//! key prefix expanded through the origin plugin's `list-objects`. Each
//! object is opened as a task (sharing the download with any reader that
//! wants it too) and waited for until it is stored whole; at most the job's
//! `concurrency` objects at a time, and at most `preheat.max_running_jobs`
//! jobs at a time (the others wait, queued).
//!
//! Jobs are stored by [`crate::storage::jobs`] (the job, each item, an
//! idempotency key). An item's record is written when its
//! state changes; bytes done are counted live in memory and read from
//! there by the API. After a restart, unfinished jobs resume: items stored
//! already are done at once, the others are downloaded (resuming from
//! their recorded pieces).
//!
//! A missing object is reported as `missing` with the origin's reason and
//! is not retried (the origin layer retries transient failures, and the
//! negative cache answers repeats).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::StreamExt;
use http::HeaderMap;
use parking_lot::Mutex;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};
use url::Url;

use crate::config::PreheatConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::origin::{Origin, OriginRouter};
use crate::storage::Storage;
pub use crate::storage::jobs::{
    HostResult, ItemRecord, ItemState, JobRecord, JobRequest, JobState,
};
use crate::storage::jobs::{KeyRecord, StoredJob};
use crate::task::{TaskManager, TaskSpec};

use crate::clock::now_ms;

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Invalid, message)
}

/// A job's item as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ItemView {
    #[serde(flatten)]
    pub record: ItemRecord,
    pub bytes_done: u64,
}

/// A job as the API shows it: progress read live.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    #[serde(flatten)]
    pub record: JobRecord,
    pub progress: Progress,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<ItemView>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub total: u32,
    pub pending: u32,
    pub running: u32,
    pub done: u32,
    pub missing: u32,
    pub failed: u32,
    pub cancelled: u32,
    /// Bytes of the objects whose length is known.
    pub bytes_total: u64,
    pub bytes_done: u64,
}

/// A job in memory: its record, its items and their live byte counts.
struct Job {
    record: Mutex<JobRecord>,
    items: Mutex<Vec<ItemRecord>>,
    bytes: Mutex<Vec<Arc<AtomicU64>>>,
    cancelled: AtomicBool,
    cancel: Notify,
}

impl Job {
    fn view(&self, with_items: bool) -> JobView {
        let record = self.record.lock().clone();
        let items = self.items.lock().clone();
        let bytes: Vec<u64> = self
            .bytes
            .lock()
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let mut p = Progress {
            total: items.len() as u32,
            ..Default::default()
        };
        for (i, item) in items.iter().enumerate() {
            match item.state {
                ItemState::Pending => p.pending += 1,
                ItemState::Running => p.running += 1,
                ItemState::Done => p.done += 1,
                ItemState::Missing => p.missing += 1,
                ItemState::Failed => p.failed += 1,
                ItemState::Cancelled => p.cancelled += 1,
            }
            p.bytes_total += item.content_length.unwrap_or(0);
            p.bytes_done += bytes.get(i).copied().unwrap_or(0);
        }
        let objects = with_items.then(|| {
            items
                .into_iter()
                .enumerate()
                .map(|(i, record)| ItemView {
                    record,
                    bytes_done: bytes.get(i).copied().unwrap_or(0),
                })
                .collect()
        });
        JobView {
            record,
            progress: p,
            objects,
        }
    }
}

/// The other seed hosts of a cluster, for `all_seed_peers` jobs: the
/// built-in scheduler, which knows them.
pub trait SeedFanout: Send + Sync + std::fmt::Debug {
    /// Downloads `download` on every other live seed host, each to its
    /// end, and says how each fared.
    fn preheat(
        &self,
        download: dragonfly_api::common::v2::Download,
    ) -> futures_util::future::BoxFuture<'static, Vec<HostResult>>;
}

/// Every preheat job: creates, runs, resumes, lists and cancels them.
pub struct JobManager {
    config: PreheatConfig,
    storage: Arc<Storage>,
    tasks: Arc<TaskManager>,
    origins: Arc<OriginRouter>,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    /// Places among the running jobs.
    running: Arc<Semaphore>,
    /// Serializes creation, so one idempotency key makes one job.
    creating: tokio::sync::Mutex<()>,
    /// Credential headers of each job, kept in memory only: its stored
    /// request says `[redacted]` in their place.
    secrets: Mutex<HashMap<String, BTreeMap<String, String>>>,
    /// The other seed hosts, when the built-in scheduler runs.
    fanout: std::sync::OnceLock<Arc<dyn SeedFanout>>,
}

/// Headers that carry credentials: never stored, logged or answered.
const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-registry-auth",
];

/// Whether header `name` carries credentials.
pub fn is_secret_header(name: &str) -> bool {
    SECRET_HEADERS.iter().any(|s| name.eq_ignore_ascii_case(s))
}

/// What a stored request shows in place of a credential.
pub const REDACTED: &str = "[redacted]";

/// Splits the credential headers out of `request`, leaving `[redacted]`
/// in their place.
fn redact(request: &mut JobRequest) -> BTreeMap<String, String> {
    let mut secrets = BTreeMap::new();
    for (name, value) in request.headers.iter_mut() {
        if is_secret_header(name) {
            secrets.insert(name.clone(), std::mem::replace(value, REDACTED.to_owned()));
        }
    }
    secrets
}

/// Manifests are read into memory up to this size.
const MANIFEST_CAP: u64 = 4 << 20;

impl std::fmt::Debug for JobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobManager").finish_non_exhaustive()
    }
}

/// A fingerprint of a request, to tell a repeated submission from a
/// different one under the same idempotency key.
fn fingerprint(r: &JobRequest) -> String {
    let json = serde_json::to_vec(r).expect("requests serialize");
    hex::encode(Sha256::digest(json))
}

impl JobManager {
    /// Loads the stored jobs and resumes the unfinished ones.
    pub fn start(
        config: PreheatConfig,
        storage: Arc<Storage>,
        tasks: Arc<TaskManager>,
        origins: Arc<OriginRouter>,
    ) -> Result<Arc<Self>> {
        let me = Arc::new(Self {
            running: Arc::new(Semaphore::new(config.max_running_jobs)),
            config,
            storage,
            tasks,
            origins,
            jobs: Mutex::new(BTreeMap::new()),
            creating: tokio::sync::Mutex::new(()),
            secrets: Mutex::new(HashMap::new()),
            fanout: std::sync::OnceLock::new(),
        });
        let mut resumed = 0;
        for StoredJob { record, items } in me.storage.jobs()? {
            let unfinished = !record.state.is_final();
            let job = Arc::new(Job {
                bytes: Mutex::new(
                    items
                        .iter()
                        .map(|i| {
                            let done = if i.state == ItemState::Done {
                                i.content_length.unwrap_or(0)
                            } else {
                                0
                            };
                            Arc::new(AtomicU64::new(done))
                        })
                        .collect(),
                ),
                items: Mutex::new(items),
                record: Mutex::new(record.clone()),
                cancelled: AtomicBool::new(false),
                cancel: Notify::new(),
            });
            me.jobs.lock().insert(record.id.clone(), job.clone());
            if unfinished {
                resumed += 1;
                me.clone().spawn(job);
            }
        }
        if resumed > 0 {
            tracing::info!(jobs = resumed, "resuming preheat jobs");
        }
        Ok(me)
    }

    /// Where `all_seed_peers` jobs also go (set once, by the server).
    pub fn set_fanout(&self, fanout: Arc<dyn SeedFanout>) {
        let _ = self.fanout.set(fanout);
    }

    /// The most objects a job may download at once.
    pub fn max_concurrency(&self) -> usize {
        self.config.max_concurrency
    }

    fn origin(&self, name: &str) -> Result<Arc<Origin>> {
        self.origins.get(name).map_err(|e| invalid(e.message))
    }

    /// Checks a request and lists the items it names (a prefix is
    /// expanded later, when the job runs).
    fn items_of(&self, r: &JobRequest) -> Result<Vec<ItemRecord>> {
        let mut items = Vec::new();
        if r.urls.is_empty() && r.keys.is_empty() && r.prefix.is_none() && r.image.is_none() {
            return Err(invalid(
                "a preheat job needs urls, keys, a prefix or an image",
            ));
        }
        if r.image.is_some() && (!r.urls.is_empty() || !r.keys.is_empty() || r.prefix.is_some()) {
            return Err(invalid("an image job takes no urls, keys or prefix"));
        }
        if r.platform.is_some() && r.image.is_none() {
            return Err(invalid("platform is only used with an image"));
        }
        if let Some(len) = r.piece_length {
            crate::piece::check_piece_length(len).map_err(invalid)?;
        }
        if let Some(c) = r.concurrency
            && !(1..=self.config.max_concurrency).contains(&c)
        {
            return Err(invalid(format!(
                "concurrency {c} is outside 1..={} (preheat.max_concurrency)",
                self.config.max_concurrency
            )));
        }
        for (name, value) in &r.headers {
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("header name '{name}' is not valid")))?;
            http::HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("header '{name}' has a value that is not valid")))?;
        }
        for url in &r.urls {
            let parsed =
                Url::parse(url).map_err(|e| invalid(format!("'{url}' is not a URL: {e}")))?;
            // The same check as /fetch: under an origin, and no key that
            // climbs out of its base path (plainly or percent-encoded).
            let origin = self
                .origins
                .resolve_url(&parsed)
                .map_err(|e| invalid(e.message))?;
            items.push(ItemRecord {
                url: parsed.to_string(),
                origin: origin.name.clone(),
                state: ItemState::Pending,
                task_id: None,
                content_length: None,
                error: None,
                status: None,
                hosts: Vec::new(),
            });
        }
        if !r.keys.is_empty() || r.prefix.is_some() {
            let name = r
                .origin
                .as_deref()
                .ok_or_else(|| invalid("keys and prefix need an origin"))?;
            let origin = self.origin(name)?;
            for key in &r.keys {
                items.push(ItemRecord {
                    url: origin.object_url(key)?.to_string(),
                    origin: origin.name.clone(),
                    state: ItemState::Pending,
                    task_id: None,
                    content_length: None,
                    error: None,
                    status: None,
                    hosts: Vec::new(),
                });
            }
        } else if r.origin.is_some() && r.image.is_none() {
            return Err(invalid(
                "origin is only used with keys, a prefix or an image",
            ));
        }
        if items.len() > self.config.max_items {
            return Err(invalid(format!(
                "{} objects is more than preheat.max_items ({})",
                items.len(),
                self.config.max_items
            )));
        }
        Ok(items)
    }

    /// Creates a job (or, for a known idempotency key with the same
    /// request, returns the job it made). `Ok((job, created))`.
    pub async fn create(
        self: &Arc<Self>,
        request: JobRequest,
        idempotency_key: Option<String>,
    ) -> Result<(JobView, bool)> {
        self.create_inner(request, idempotency_key, None).await
    }

    /// Creates a job from Dragonfly's open API: it gets the next number
    /// (Dragonfly's job ids are integers) and keeps `args` to answer with.
    pub async fn create_dragonfly(
        self: &Arc<Self>,
        request: JobRequest,
        args: serde_json::Value,
    ) -> Result<JobView> {
        Ok(self.create_inner(request, None, Some(args)).await?.0)
    }

    /// The job Dragonfly's open API knows as `number`.
    pub fn get_by_number(&self, number: u64) -> Option<JobView> {
        let job = self
            .jobs
            .lock()
            .values()
            .find(|j| j.record.lock().number == Some(number))
            .cloned()?;
        Some(job.view(true))
    }

    async fn create_inner(
        self: &Arc<Self>,
        request: JobRequest,
        idempotency_key: Option<String>,
        dragonfly_args: Option<serde_json::Value>,
    ) -> Result<(JobView, bool)> {
        if self.tasks.draining() {
            return Err(Error::new(
                ErrorKind::Overloaded,
                "this seed peer is draining for maintenance (seedgate drain): it takes no new preheat job",
            ));
        }
        let mut request = request;
        if let Some(image) = &request.image {
            let (origin, _, _) = self.image_origin(
                image,
                request.origin.as_deref(),
                request.platform.as_deref(),
            )?;
            request.origin = Some(origin.name.clone());
        }
        let items = self.items_of(&request)?;
        let secrets = redact(&mut request);
        let _one_at_a_time = self.creating.lock().await;
        let print = fingerprint(&request);
        if let Some(key) = &idempotency_key
            && let Some(known) = self.storage.job_key(key)?
        {
            if known.fingerprint != print {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "Idempotency-Key '{key}' was used for job {} with a different request",
                        known.job
                    ),
                ));
            }
            if let Some(view) = self.get(&known.job, false) {
                return Ok((view, false));
            }
        }
        let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let now = now_ms();
        let record = JobRecord {
            id: id.clone(),
            state: JobState::Queued,
            expanded: request.prefix.is_none() && request.image.is_none(),
            items: items.len() as u32,
            request,
            idempotency_key: idempotency_key.clone(),
            created_at_ms: now,
            updated_at_ms: now,
            error: None,
            status: None,
            number: dragonfly_args.is_some().then(|| {
                let jobs = self.jobs.lock();
                1 + jobs
                    .values()
                    .filter_map(|j| j.record.lock().number)
                    .max()
                    .unwrap_or(0)
            }),
            dragonfly_args,
        };
        if !secrets.is_empty() {
            self.secrets.lock().insert(id.clone(), secrets);
        }
        for (i, item) in items.iter().enumerate() {
            self.put_item(&id, i as u32, item)?;
        }
        self.put_job(&record)?;
        if let Some(key) = &idempotency_key {
            self.storage.put_job_key(
                key,
                &KeyRecord {
                    job: id.clone(),
                    fingerprint: print,
                },
            )?;
        }
        // Durable before it is acknowledged.
        self.storage.flush().await?;
        let job = Arc::new(Job {
            bytes: Mutex::new(items.iter().map(|_| Arc::new(AtomicU64::new(0))).collect()),
            items: Mutex::new(items),
            record: Mutex::new(record),
            cancelled: AtomicBool::new(false),
            cancel: Notify::new(),
        });
        self.jobs.lock().insert(id.clone(), job.clone());
        tracing::info!(job = %id, objects = job.items.lock().len(), "preheat job created");
        let view = job.view(false);
        self.clone().spawn(job);
        Ok((view, true))
    }

    pub fn get(&self, id: &str, with_items: bool) -> Option<JobView> {
        let job = self.jobs.lock().get(id).cloned()?;
        Some(job.view(with_items))
    }

    /// Every job, newest first, without items.
    pub fn list(&self) -> Vec<JobView> {
        let jobs: Vec<Arc<Job>> = self.jobs.lock().values().cloned().collect();
        let mut views: Vec<JobView> = jobs.iter().map(|j| j.view(false)).collect();
        views.sort_by_key(|v| std::cmp::Reverse(v.record.created_at_ms));
        views
    }

    /// Jobs by state, for metrics.
    pub fn count_by_state(&self) -> HashMap<JobState, usize> {
        let mut counts = HashMap::new();
        for job in self.jobs.lock().values() {
            *counts.entry(job.record.lock().state).or_default() += 1;
        }
        counts
    }

    /// Cancels a job: no new object starts, and objects being downloaded
    /// are no longer waited for (their downloads finish, since readers may
    /// share them). A finished job is left as it is.
    pub fn cancel(&self, id: &str) -> Result<JobView> {
        let job = self
            .jobs
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no preheat job {id}")))?;
        if !job.record.lock().state.is_final() {
            job.cancelled.store(true, Ordering::SeqCst);
            job.cancel.notify_waiters();
            tracing::info!(job = %id, "preheat job cancel requested");
        }
        Ok(job.view(false))
    }

    fn put_job(&self, record: &JobRecord) -> Result<()> {
        Ok(self.storage.put_job(record)?)
    }

    fn put_item(&self, job: &str, i: u32, item: &ItemRecord) -> Result<()> {
        Ok(self.storage.put_job_item(job, i, item)?)
    }

    fn set_state(&self, job: &Job, state: JobState, error: Option<&Error>) {
        let record = {
            let mut r = job.record.lock();
            r.state = state;
            r.updated_at_ms = now_ms();
            if let Some(e) = error {
                r.error = Some(e.to_string());
                r.status = Some(e.http_status());
            }
            r.clone()
        };
        if let Err(e) = self.put_job(&record) {
            tracing::warn!(job = %record.id, error = %e, "storing preheat job");
        }
    }

    fn set_item(&self, job: &Job, i: usize, change: impl FnOnce(&mut ItemRecord)) {
        let item = {
            let mut items = job.items.lock();
            change(&mut items[i]);
            items[i].clone()
        };
        let id = job.record.lock().id.clone();
        if let Err(e) = self.put_item(&id, i as u32, &item) {
            tracing::warn!(job = %id, error = %e, "storing preheat item");
        }
    }

    fn spawn(self: Arc<Self>, job: Arc<Job>) {
        let tasks = self.tasks.clone();
        tasks.spawn(async move {
            let id = job.record.lock().id.clone();
            let outcome = self.run(&job).await;
            let state = match &outcome {
                Err(_) => JobState::Failed,
                Ok(()) if job.cancelled.load(Ordering::SeqCst) => JobState::Cancelled,
                Ok(()) => {
                    let items = job.items.lock();
                    if items.iter().all(|i| i.state == ItemState::Done) {
                        JobState::Succeeded
                    } else {
                        JobState::Failed
                    }
                }
            };
            self.set_state(&job, state, outcome.as_ref().err());
            if let Err(e) = self.storage.flush().await {
                tracing::warn!(job = %id, error = %e, "flushing preheat job");
            }
            let p = job.view(false).progress;
            tracing::info!(job = %id, ?state, done = p.done, missing = p.missing, failed = p.failed, bytes = p.bytes_done, "preheat job ended");
        });
    }

    async fn run(&self, job: &Arc<Job>) -> Result<()> {
        let _place = tokio::select! {
            p = self.running.clone().acquire_owned() => p.expect("never closed"),
            () = cancelled(job) => return Ok(()),
        };
        let request = job.record.lock().request.clone();
        if !job.record.lock().expanded {
            self.set_state(job, JobState::Listing, None);
            if request.image.is_some() {
                self.resolve_image(job, &request).await?;
            } else {
                self.expand(job, &request).await?;
            }
        }
        if job.cancelled.load(Ordering::SeqCst) {
            self.cancel_rest(job);
            return Ok(());
        }
        self.set_state(job, JobState::Running, None);
        let concurrency = request
            .concurrency
            .unwrap_or(self.config.concurrency)
            .max(1);
        let spec = TaskSpec {
            tag: request.tag.clone(),
            application: request.application.clone(),
            piece_length: request.piece_length,
            filtered_query_params: request.filtered_query_params.clone(),
            ..TaskSpec::default()
        };
        let headers = self.headers_of(job, &request);
        let todo: Vec<usize> = job
            .items
            .lock()
            .iter()
            .enumerate()
            .filter(|(_, i)| !matches!(i.state, ItemState::Done | ItemState::Missing))
            .map(|(n, _)| n)
            .collect();
        let work = futures_util::stream::iter(todo)
            .map(|i| self.run_item(job, i, &spec, &headers))
            .buffer_unordered(concurrency);
        let deadline = async {
            match request.timeout_ms {
                Some(ms) => {
                    let created = job.record.lock().created_at_ms;
                    let left = (created + ms).saturating_sub(now_ms());
                    tokio::time::sleep(std::time::Duration::from_millis(left)).await
                }
                None => std::future::pending().await,
            }
        };
        let timed_out = tokio::select! {
            () = work.for_each(|()| async {}) => false,
            () = cancelled(job) => false,
            () = deadline => true,
        };
        if job.cancelled.load(Ordering::SeqCst) {
            self.cancel_rest(job);
        }
        if timed_out {
            let ms = request.timeout_ms.unwrap_or_default();
            let why = format!(
                "the job's timeout ({}) passed before this object was stored",
                humantime::format_duration(std::time::Duration::from_millis(ms))
            );
            self.fail_rest(job, &why);
            return Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "the job's timeout ({}) passed",
                    humantime::format_duration(std::time::Duration::from_millis(ms))
                ),
            ));
        }
        Ok(())
    }

    /// Marks what did not finish as failed, for `why` (504: the job's time
    /// ran out).
    fn fail_rest(&self, job: &Job, why: &str) {
        self.end_open_items(job, |item| {
            item.state = ItemState::Failed;
            item.error = Some(why.to_owned());
            item.status = Some(504);
        });
    }

    /// Marks what did not finish as cancelled.
    fn cancel_rest(&self, job: &Job) {
        self.end_open_items(job, |item| item.state = ItemState::Cancelled);
    }

    /// Applies `end` to every item still pending or running.
    fn end_open_items(&self, job: &Job, end: impl Fn(&mut ItemRecord)) {
        let open: Vec<usize> = job
            .items
            .lock()
            .iter()
            .enumerate()
            .filter(|(_, i)| matches!(i.state, ItemState::Pending | ItemState::Running))
            .map(|(n, _)| n)
            .collect();
        for i in open {
            self.set_item(job, i, &end);
        }
    }

    /// The headers a job's requests go with: its stored ones, with the
    /// credentials it was created with in place of `[redacted]` (after a
    /// restart they are gone, and the request goes without them).
    fn headers_of(&self, job: &Job, request: &JobRequest) -> HeaderMap {
        let id = job.record.lock().id.clone();
        let secrets = self.secrets.lock().get(&id).cloned().unwrap_or_default();
        let mut headers = HeaderMap::new();
        for (k, v) in &request.headers {
            let v = if v == REDACTED {
                match secrets.get(k) {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                v
            };
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        headers
    }

    /// The registry origin an image is read through: `named`, or the one
    /// whose `base_url` is the image registry's `/v2/`.
    fn image_origin(
        &self,
        image: &str,
        named: Option<&str>,
        platform: Option<&str>,
    ) -> Result<(
        Arc<Origin>,
        crate::oci::ImageRef,
        crate::oci::PlatformWanted,
    )> {
        let image = crate::oci::ImageRef::parse(image).map_err(invalid)?;
        let platform = crate::oci::PlatformWanted::parse(platform).map_err(invalid)?;
        let is_registry = |o: &Origin| o.base_url.path().ends_with("/v2/");
        let origin = match named {
            Some(name) => {
                let o = self.origin(name)?;
                if !is_registry(&o) {
                    return Err(invalid(format!(
                        "origin '{name}' is not a registry: its base_url {} does not end in /v2/",
                        o.base_url
                    )));
                }
                o
            }
            None => self
                .origins
                .all()
                .find(|o| {
                    is_registry(o)
                        && o.base_url.path() == "/v2/"
                        && o.base_url[url::Position::BeforeHost..url::Position::AfterPort]
                            == image.registry
                })
                .cloned()
                .ok_or_else(|| {
                    invalid(format!(
                        "no origin is the registry {} (an origin with base_url http(s)://{}/v2/ and plugin oci), or name one with \"origin\"",
                        image.registry, image.registry
                    ))
                })?,
        };
        Ok((origin, image, platform))
    }

    /// Resolves an image job's manifest (and, for an index, the images of
    /// its platform) into items: each config and layer blob once.
    async fn resolve_image(&self, job: &Arc<Job>, request: &JobRequest) -> Result<()> {
        let (origin, image, platform) = self.image_origin(
            request.image.as_deref().unwrap_or_default(),
            request.origin.as_deref(),
            request.platform.as_deref(),
        )?;
        let context = format!("resolving image {image}");
        let headers = self.headers_of(job, request);
        let fetch = |key: String, digest: Option<String>| {
            let (origin, headers) = (origin.clone(), headers.clone());
            async move {
                let url = origin.object_url(&key)?;
                let (meta, body) = origin.fetch_small(&url, &headers, MANIFEST_CAP).await?;
                if let Some(want) = digest {
                    let got = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
                    if got != want {
                        return Err(Error::new(
                            ErrorKind::Invalid,
                            format!("{url}: the manifest's bytes hash to {got}, not {want}"),
                        )
                        .blamed(crate::error::Blame::Origin));
                    }
                }
                crate::oci::Manifest::parse(&body, meta.content_type.as_deref()).map_err(|e| {
                    Error::new(ErrorKind::Invalid, format!("{url}: {e}"))
                        .blamed(crate::error::Blame::Origin)
                })
            }
        };
        let top_digest = image
            .reference
            .starts_with("sha256:")
            .then(|| image.reference.clone());
        let (top, is_index) = fetch(image.manifest_key(), top_digest)
            .await
            .map_err(|e| e.context(&context))?;
        let mut images = Vec::new();
        if is_index {
            let chosen: Vec<_> = top
                .manifests
                .iter()
                .filter(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
                .collect();
            if chosen.is_empty() {
                let have: Vec<String> = top
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .map(|p| match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    })
                    .collect();
                return Err(invalid(format!(
                    "{context}: no image for platform {platform} (the index has {})",
                    have.join(", ")
                )));
            }
            for d in chosen {
                if !crate::oci::is_sha256(&d.digest) {
                    return Err(invalid(format!(
                        "{context}: manifest digest '{}' is not sha256",
                        d.digest
                    )));
                }
                let key = format!("{}/manifests/{}", image.name, d.digest);
                let (m, nested) = fetch(key, Some(d.digest.clone()))
                    .await
                    .map_err(|e| e.context(&context))?;
                if nested {
                    return Err(invalid(format!(
                        "{context}: an index inside an index is not followed"
                    )));
                }
                images.push(m);
            }
        } else {
            images.push(top);
        }
        let id = job.record.lock().id.clone();
        for m in &images {
            for blob in m.blobs() {
                if !crate::oci::is_sha256(&blob.digest) {
                    return Err(invalid(format!(
                        "{context}: blob digest '{}' is not sha256",
                        blob.digest
                    )));
                }
                let url = origin.object_url(&format!("{}/blobs/{}", image.name, blob.digest))?;
                self.add_item(
                    job,
                    &id,
                    &origin.name,
                    url.to_string(),
                    Some(blob.size),
                    || {
                        format!(
                            "{context}: more than preheat.max_items ({}) blobs",
                            self.config.max_items
                        )
                    },
                )?;
            }
        }
        tracing::info!(job = %id, image = %image, %platform, images = images.len(), blobs = job.items.lock().len(), "image resolved");
        self.mark_expanded(job)
    }

    /// Records that a job's items are all known (its prefix listed, its
    /// image resolved).
    fn mark_expanded(&self, job: &Job) -> Result<()> {
        let record = {
            let mut r = job.record.lock();
            r.expanded = true;
            r.items = job.items.lock().len() as u32;
            r.clone()
        };
        self.put_job(&record)
    }

    /// Adds the object at `url` to a job being expanded, unless it holds
    /// it already; past `preheat.max_items`, the error `too_many` says.
    fn add_item(
        &self,
        job: &Job,
        id: &str,
        origin: &str,
        url: String,
        content_length: Option<u64>,
        too_many: impl FnOnce() -> String,
    ) -> Result<()> {
        let mut items = job.items.lock();
        if items.iter().any(|i| i.url == url) {
            return Ok(());
        }
        if items.len() >= self.config.max_items {
            return Err(invalid(too_many()));
        }
        let item = ItemRecord {
            url,
            origin: origin.to_owned(),
            state: ItemState::Pending,
            task_id: None,
            content_length,
            error: None,
            status: None,
            hosts: Vec::new(),
        };
        let i = items.len() as u32;
        items.push(item.clone());
        drop(items);
        job.bytes.lock().push(Arc::new(AtomicU64::new(0)));
        self.put_item(id, i, &item)
    }

    /// Lists the prefix into items, page by page.
    async fn expand(&self, job: &Arc<Job>, request: &JobRequest) -> Result<()> {
        let (Some(name), Some(prefix)) = (&request.origin, &request.prefix) else {
            return Ok(());
        };
        let origin = self.origin(name)?;
        let id = job.record.lock().id.clone();
        let mut token = None;
        loop {
            let page = origin
                .list(prefix, token.take(), 1000)
                .await
                .map_err(|e| e.context(format!("listing prefix '{prefix}'")))?;
            for object in page.objects {
                self.add_item(job, &id, &origin.name, object.url, object.size, || {
                    format!(
                        "prefix '{prefix}' holds more than preheat.max_items ({}) objects",
                        self.config.max_items
                    )
                })?;
            }
            match page.next_page_token {
                Some(t) if !job.cancelled.load(Ordering::SeqCst) => token = Some(t),
                _ => break,
            }
        }
        self.mark_expanded(job)
    }

    async fn run_item(&self, job: &Arc<Job>, i: usize, spec: &TaskSpec, headers: &HeaderMap) {
        if job.cancelled.load(Ordering::SeqCst) {
            return;
        }
        let (url, origin) = {
            let items = job.items.lock();
            (items[i].url.clone(), items[i].origin.clone())
        };
        let bytes = job.bytes.lock()[i].clone();
        self.set_item(job, i, |item| item.state = ItemState::Running);
        let outcome = async {
            let origin = self.origin(&origin)?;
            let url = Url::parse(&url).map_err(|e| invalid(format!("'{url}': {e}")))?;
            // Listed URLs come from the plugin: they get the same check as
            // the URLs a client gives (under this origin, no escape).
            let owner = self.origins.resolve_url(&url)?;
            if owner.name != origin.name {
                return Err(invalid(format!(
                    "'{url}' is under origin '{}', not '{}'",
                    owner.name, origin.name
                )));
            }
            // A task restarted because the object changed is opened again,
            // as often as the engine itself would restart it.
            let mut tries = 0;
            loop {
                let object = self
                    .tasks
                    .open_with(&origin, &url, headers, 0, spec.clone())
                    .await?;
                let (task, length) = (object.record.id.clone(), object.record.content_length);
                self.set_item(job, i, |item| {
                    item.task_id = Some(task);
                    item.content_length = Some(length);
                });
                let stored = self
                    .tasks
                    .wait_stored(&object, |b| bytes.store(b, Ordering::Relaxed))
                    .await;
                match stored {
                    Err(e) if e.kind == ErrorKind::Changed && tries < crate::task::MAX_RESTARTS => {
                        tries += 1
                    }
                    other => return other,
                }
            }
        };
        let outcome = tokio::select! {
            r = outcome => r,
            () = cancelled(job) => return,
        };
        let all_seed_peers = job.record.lock().request.all_seed_peers;
        let hosts = match (self.fanout.get(), all_seed_peers) {
            (Some(fanout), true) => {
                let download = dragonfly_api::common::v2::Download {
                    url: url.clone(),
                    piece_length: spec.piece_length,
                    tag: spec.tag.clone(),
                    application: spec.application.clone(),
                    filtered_query_params: spec.filtered_query_params.clone(),
                    request_header: headers
                        .iter()
                        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
                        .collect(),
                    r#type: dragonfly_api::common::v2::TaskType::Standard as i32,
                    priority: dragonfly_api::common::v2::Priority::Level0 as i32,
                    enable_task_id_based_blob_digest: self
                        .origins
                        .get(&origin)
                        .is_ok_and(|o| o.content_addressed),
                    ..Default::default()
                };
                tokio::select! {
                    h = fanout.preheat(download) => h,
                    () = cancelled(job) => return,
                }
            }
            _ => Vec::new(),
        };
        let elsewhere = hosts
            .iter()
            .filter_map(|h| {
                h.error
                    .as_ref()
                    .map(|e| format!("on seed host {} ({}): {e}", h.hostname, h.ip))
            })
            .collect::<Vec<_>>();
        let outcome = match outcome {
            Ok(()) if !elsewhere.is_empty() => {
                Err(Error::new(ErrorKind::Transient, elsewhere.join("; ")))
            }
            other => other,
        };
        self.set_item(job, i, |item| {
            item.hosts = hosts;
            match outcome {
                Ok(()) => {
                    item.state = ItemState::Done;
                    item.error = None;
                    item.status = None;
                }
                Err(e) => {
                    item.state = if e.kind == ErrorKind::NotFound {
                        ItemState::Missing
                    } else {
                        ItemState::Failed
                    };
                    item.error = Some(e.to_string());
                    item.status = Some(e.http_status());
                }
            }
        });
    }
}

/// Completes when the job is cancelled.
async fn cancelled(job: &Job) {
    loop {
        // Registered before the flag is read, so a cancel in between is
        // not missed.
        let mut notified = std::pin::pin!(job.cancel.notified());
        notified.as_mut().enable();
        if job.cancelled.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }
}
