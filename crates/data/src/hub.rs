//! Fetching dataset (and model) files through the Hugging Face hub into its
//! standard cache (`datasets--ORG--NAME/{refs/REVISION, snapshots/COMMIT/FILE,
//! blobs/ETAG}`, `models--ORG--NAME/…` for models), shared with Python's
//! `huggingface_hub`.
//!
//! * A cache hit is resolved here, from `refs/` and `snapshots/`, and never
//!   touches the network.
//! * A miss is downloaded with `hf-hub` 0.4 (blocking `ureq` client), which
//!   writes the cache layout. That client has no timeouts, so the download
//!   runs on its own thread and a watchdog gives up when no byte has arrived
//!   for `hub.timeout_secs` (the thread is left to die with its socket).
//! * Offline (`hub.offline` or `HF_HUB_OFFLINE=1`) or failing: an error that
//!   says what was tried, where the cache is, and how to proceed without it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{HubConfig, Source, Split};
use crate::DataError;

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
const DIR_FIX: &str = "or pass --set data.dir=DIR with the files (see data/README.md)";

/// Which kind of hub repository a file lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RepoKind {
    Dataset,
    Model,
}

/// One file of one dataset (or model) repository at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HubFile {
    pub kind: RepoKind,
    pub repo: String,
    pub revision: String,
    pub file: String,
}

/// The repository and file for a source and split, with `hub` overrides.
pub(crate) fn hub_file(source: Source, split: Split, hub: &HubConfig) -> HubFile {
    let (repo, dir) = match source {
        Source::FashionMnist => ("zalando-datasets/fashion_mnist", "fashion_mnist"),
        Source::Cifar10 => ("uoft-cs/cifar10", "plain_text"),
        _ => ("ylecun/mnist", "mnist"),
    };
    let (over, name) = match split {
        Split::Train => (&hub.train_file, "train"),
        Split::Test => (&hub.test_file, "test"),
    };
    HubFile {
        kind: RepoKind::Dataset,
        repo: hub.repo.clone().unwrap_or_else(|| repo.to_string()),
        revision: hub.revision.clone(),
        file: over
            .clone()
            .unwrap_or_else(|| format!("{dir}/{name}-00000-of-00001.parquet")),
    }
}

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The hub cache folder: `hub.cache_dir`, else the rules of Python's
/// `huggingface_hub` (`HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`,
/// `HF_HOME/hub`, `XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub`).
pub fn cache_dir(hub: &HubConfig) -> Result<PathBuf, DataError> {
    hub.cache_dir
        .clone()
        .or_else(|| env_path("HF_HUB_CACHE"))
        .or_else(|| env_path("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| env_path("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| env_path("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
        .or_else(|| {
            env_path("HOME")
                .or_else(|| env_path("USERPROFILE"))
                .map(|h| h.join(".cache").join("huggingface").join("hub"))
        })
        .ok_or_else(|| {
            DataError::config(
                "hub.cache_dir",
                "no Hugging Face cache folder: none of HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME, HOME is set",
                "set data.hub.cache_dir or HF_HOME, ".to_string() + DIR_FIX,
            )
        })
}

fn env_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "on" | "yes" | "true"
            )
        })
        .unwrap_or(false)
}

fn endpoint(hub: &HubConfig) -> String {
    hub.endpoint
        .clone()
        .or_else(|| {
            std::env::var("HF_ENDPOINT")
                .ok()
                .filter(|v| !v.trim().is_empty())
        })
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
        .trim()
        .trim_end_matches('/')
        .to_string()
}

fn repo_folder(cache: &Path, kind: RepoKind, repo: &str) -> PathBuf {
    let prefix = match kind {
        RepoKind::Dataset => "datasets",
        RepoKind::Model => "models",
    };
    cache.join(format!("{prefix}--{}", repo.replace('/', "--")))
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The cached copy of `f`, if any: `refs/REVISION` names the commit (or the
/// revision is a commit), and `snapshots/COMMIT/FILE` exists. No network.
pub(crate) fn cached(cache: &Path, f: &HubFile) -> Option<PathBuf> {
    let base = repo_folder(cache, f.kind, &f.repo);
    let commit = if is_commit(&f.revision) {
        f.revision.clone()
    } else {
        std::fs::read_to_string(base.join("refs").join(&f.revision))
            .ok()?
            .trim()
            .to_string()
    };
    if commit.is_empty() {
        return None;
    }
    let p = base.join("snapshots").join(commit).join(&f.file);
    p.is_file().then_some(p)
}

/// Where a hit would be, for messages.
fn expected_path(cache: &Path, f: &HubFile) -> String {
    format!(
        "{}/snapshots/<commit in refs/{}>/{}",
        repo_folder(cache, f.kind, &f.repo).display(),
        f.revision,
        f.file
    )
}

/// Returns the local path of the dataset file, from the cache or downloaded.
pub(crate) fn fetch(source: Source, split: Split, hub: &HubConfig) -> Result<PathBuf, DataError> {
    let f = hub_file(source, split, hub);
    let cache = cache_dir(hub)?;
    if let Some(p) = cached(&cache, &f) {
        return Ok(p);
    }
    let what = format!(
        "{source} {split} split ({}) is not in the hub cache",
        f.file
    );
    if hub.offline || env_offline() {
        let why = if hub.offline {
            "data.hub.offline = true"
        } else {
            "HF_HUB_OFFLINE is set"
        };
        return Err(DataError::Hub {
            what,
            problem: format!("offline ({why}), so it was not downloaded"),
            tried: format!("the cache only: {}", expected_path(&cache, &f)),
            cache,
            fix: format!(
                "go online once (unset HF_HUB_OFFLINE / data.hub.offline) to fill the cache, {DIR_FIX}"
            ),
        });
    }
    let endpoint = endpoint(hub);
    download(
        &cache,
        &f,
        &endpoint,
        Duration::from_secs(hub.timeout_secs),
        &format!("{source} {split} split"),
        DIR_FIX,
    )
}

/// Returns the local path of `file` in the hub *model* repository `repo` (e.g.
/// `timm/vgg19.tv_in1k`, `model.safetensors`) at `hub.revision`, from the
/// cache or downloaded with the same cache, timeout and offline rules as the
/// datasets. Only `hub.revision`, `cache_dir`, `endpoint`, `timeout_secs` and
/// `offline` are read. `fix` ends every error's advice: how to go on without
/// the hub (e.g. "or pass --vgg PATH with a local file").
pub fn fetch_model_file(
    repo: &str,
    file: &str,
    hub: &HubConfig,
    fix: &str,
) -> Result<PathBuf, DataError> {
    let f = HubFile {
        kind: RepoKind::Model,
        repo: repo.to_string(),
        revision: hub.revision.clone(),
        file: file.to_string(),
    };
    let cache = cache_dir(hub)?;
    if let Some(p) = cached(&cache, &f) {
        return Ok(p);
    }
    if hub.offline || env_offline() {
        return Err(DataError::Hub {
            what: format!("{file} of model {repo} is not in the hub cache"),
            problem: "offline (HF_HUB_OFFLINE is set or the hub is switched off), so it was not downloaded".to_string(),
            tried: format!("the cache only: {}", expected_path(&cache, &f)),
            cache,
            fix: format!("go online once (unset HF_HUB_OFFLINE) to fill the cache, {fix}"),
        });
    }
    let endpoint = endpoint(hub);
    download(
        &cache,
        &f,
        &endpoint,
        Duration::from_secs(hub.timeout_secs),
        &format!("{file} of model {repo}"),
        fix,
    )
}

/// Progress sink for hf-hub: drives the bar and stamps the last activity.
struct Watch {
    bar: ProgressBar,
    last_ms: Arc<AtomicU64>,
    start: Instant,
}

impl Watch {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl hf_hub::api::Progress for Watch {
    fn init(&mut self, size: usize, _filename: &str) {
        self.bar.set_length(size as u64);
        self.touch();
    }
    fn update(&mut self, size: usize) {
        self.bar.inc(size as u64);
        self.touch();
    }
    fn finish(&mut self) {
        self.touch();
    }
}

fn progress_bar(file: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(file.rsplit('/').next().unwrap_or(file).to_string());
    bar
}

/// Explains a failure message of hf-hub / ureq and suggests a fix.
fn diagnose(msg: &str, f: &HubFile, endpoint: &str, fix: &str) -> (String, String) {
    let m = msg.to_ascii_lowercase();
    if m.contains("status code 404") {
        let (kind, check) = match f.kind {
            RepoKind::Dataset => (
                "dataset",
                "check data.hub.repo, data.hub.revision and data.hub.train_file / test_file",
            ),
            RepoKind::Model => ("model", "check the repository name and revision"),
        };
        (
            format!(
                "{} not found in {kind} repo {} at revision {} ({msg})",
                f.file, f.repo, f.revision
            ),
            format!("{check}, {fix}"),
        )
    } else if m.contains("status code 401") || m.contains("status code 403") {
        (
            format!("access denied to {} ({msg})", f.repo),
            format!("the repo may be gated or private: set HF_TOKEN to a token with access, {fix}"),
        )
    } else if m.contains("connect") || m.contains("dns") || m.contains("resolve") {
        (
            format!("cannot reach {endpoint} ({msg})"),
            format!("check the network, a proxy (HTTPS_PROXY) or HF_ENDPOINT, {fix}"),
        )
    } else {
        (
            format!("download failed ({msg})"),
            format!("retry, check the network or HF_ENDPOINT, {fix}"),
        )
    }
}

fn download(
    cache: &Path,
    f: &HubFile,
    endpoint: &str,
    timeout: Duration,
    label: &str,
    fix: &str,
) -> Result<PathBuf, DataError> {
    let (url_kind, repo_type) = match f.kind {
        RepoKind::Dataset => ("datasets/", RepoType::Dataset),
        RepoKind::Model => ("", RepoType::Model),
    };
    let url = format!(
        "{endpoint}/{url_kind}{}/resolve/{}/{}",
        f.repo, f.revision, f.file
    );
    let what = format!("could not download the {label} from the Hugging Face hub");
    let err = |problem: String, fix: String| DataError::Hub {
        what: what.clone(),
        problem,
        tried: url.clone(),
        cache: cache.to_path_buf(),
        fix,
    };
    eprintln!(
        "downloading {label}: {url}\n  into the hub cache {}",
        cache.display()
    );
    let start = Instant::now();
    let last_ms = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(&f.file);
    let watch = Watch {
        bar: bar.clone(),
        last_ms: last_ms.clone(),
        start,
    };
    let mut builder = ApiBuilder::from_cache(Cache::new(cache.to_path_buf()))
        .with_endpoint(endpoint.to_string())
        .with_progress(false)
        .with_retries(0)
        .with_user_agent("easel", env!("CARGO_PKG_VERSION"));
    if let Some(token) = std::env::var("HF_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        builder = builder.with_token(Some(token.trim().to_string()));
    }
    let repo = Repo::with_revision(f.repo.clone(), repo_type, f.revision.clone());
    let file = f.file.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("easel-hub-download".to_string())
        .spawn(move || {
            let result = builder
                .build()
                .and_then(|api| api.repo(repo).download_with_progress(&file, watch))
                .map_err(|e| e.to_string());
            let _ = tx.send(result);
        })
        .map_err(|e| {
            err(
                format!("cannot start the download thread ({e})"),
                fix.to_string(),
            )
        })?;
    let limit = timeout.as_millis() as u64;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(path)) => {
                bar.finish_and_clear();
                return Ok(path);
            }
            Ok(Err(msg)) => {
                bar.abandon();
                let (problem, fix) = diagnose(&msg, f, endpoint, fix);
                return Err(err(problem, fix));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = start.elapsed().as_millis() as u64;
                if now.saturating_sub(last_ms.load(Ordering::Relaxed)) > limit {
                    bar.abandon();
                    return Err(err(
                        format!(
                            "no data from the server for {} s (the hub timeout{})",
                            timeout.as_secs(),
                            if f.kind == RepoKind::Dataset { ", data.hub.timeout_secs" } else { "" }
                        ),
                        format!(
                            "check the network or HF_ENDPOINT, raise the timeout on a slow link, {fix}"
                        ),
                    ));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bar.abandon();
                return Err(err(
                    "the download thread stopped without a result (it panicked)".to_string(),
                    format!("retry; {fix}"),
                ));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds `cache/datasets--ORG--NAME/{refs/main, snapshots/COMMIT/FILE}`
    /// the way the hub clients leave it (pointer as a symlink to the blob).
    pub(crate) fn fake_cache(cache: &Path, repo: &str, file: &str, bytes: &[u8]) -> PathBuf {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let base = repo_folder(cache, RepoKind::Dataset, repo);
        std::fs::create_dir_all(base.join("refs")).unwrap();
        std::fs::write(base.join("refs").join("main"), commit).unwrap();
        std::fs::create_dir_all(base.join("blobs")).unwrap();
        let blob = base.join("blobs").join("abc123etag");
        std::fs::write(&blob, bytes).unwrap();
        let pointer = base.join("snapshots").join(commit).join(file);
        std::fs::create_dir_all(pointer.parent().unwrap()).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&blob, &pointer).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&blob, &pointer).unwrap();
        pointer
    }

    #[test]
    fn defaults_and_overrides() {
        let mut hub = HubConfig::default();
        let f = hub_file(Source::Cifar10, Split::Test, &hub);
        assert_eq!(f.repo, "uoft-cs/cifar10");
        assert_eq!(f.file, "plain_text/test-00000-of-00001.parquet");
        assert_eq!(
            hub_file(Source::FashionMnist, Split::Train, &hub).file,
            "fashion_mnist/train-00000-of-00001.parquet"
        );
        hub.repo = Some("me/digits".into());
        hub.train_file = Some("d/train.parquet".into());
        let f = hub_file(Source::Mnist, Split::Train, &hub);
        assert_eq!(
            (f.repo.as_str(), f.file.as_str()),
            ("me/digits", "d/train.parquet")
        );
        hub.cache_dir = Some("/x/y".into());
        assert_eq!(cache_dir(&hub).unwrap(), PathBuf::from("/x/y"));
    }

    #[test]
    fn cache_lookup_follows_refs_and_commits() {
        let d = tempfile::tempdir().unwrap();
        let p = fake_cache(
            d.path(),
            "ylecun/mnist",
            "mnist/train-00000-of-00001.parquet",
            b"x",
        );
        let mut f = hub_file(Source::Mnist, Split::Train, &HubConfig::default());
        assert_eq!(cached(d.path(), &f), Some(p.clone()));
        f.revision = "0123456789abcdef0123456789abcdef01234567".into();
        assert_eq!(cached(d.path(), &f), Some(p));
        f.revision = "v2".into();
        assert_eq!(cached(d.path(), &f), None);
        f.revision = "main".into();
        f.file = "mnist/test-00000-of-00001.parquet".into();
        assert_eq!(cached(d.path(), &f), None);
    }

    #[test]
    fn model_files_use_the_models_folder_and_fail_clearly_offline() {
        let d = tempfile::tempdir().unwrap();
        let hub = HubConfig {
            cache_dir: Some(d.path().to_path_buf()),
            offline: true,
            ..HubConfig::default()
        };
        let fix = "or pass --vgg PATH";
        let e = fetch_model_file("timm/vgg19.tv_in1k", "model.safetensors", &hub, fix)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.safetensors of model timm/vgg19.tv_in1k")
                && e.contains("models--timm--vgg19.tv_in1k")
                && e.contains("--vgg PATH"),
            "{e}"
        );
        // A cache hit never touches the network, offline or not.
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let base = d.path().join("models--timm--vgg19.tv_in1k");
        std::fs::create_dir_all(base.join("refs")).unwrap();
        std::fs::write(base.join("refs").join("main"), commit).unwrap();
        let p = base
            .join("snapshots")
            .join(commit)
            .join("model.safetensors");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"x").unwrap();
        assert_eq!(
            fetch_model_file("timm/vgg19.tv_in1k", "model.safetensors", &hub, fix).unwrap(),
            p
        );
    }
}
