//! Tests of `open` (all sources, hub cache) and of the `Loader`.

use super::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::hub::tests::fake_cache;
use crate::mnist::tests::{gz, idx_images, idx_labels};
use crate::parquet_images::tests::{png_bytes, write_hub_parquet};

fn cfg(source: Source) -> DataConfig {
    DataConfig {
        source,
        ..DataConfig::default()
    }
}

// ---------------------------------------------------------------- config

#[test]
fn recipe_table_defaults_and_unknown_keys() {
    let c: DataConfig = toml::from_str(r#"source = "shapes""#).unwrap();
    assert_eq!(c, DataConfig::default());
    assert_eq!((c.image_size, c.channels, c.workers), (32, 3, 2));
    assert_eq!((c.shapes.count, c.hub.timeout_secs), (20_000, 60));
    let c: DataConfig = toml::from_str(
        "source = \"fashion-mnist\"\nsplit = \"test\"\ncrop = \"random\"\non_corrupt = \"error\"\n[hub]\noffline = true\n",
    )
    .unwrap();
    assert_eq!(c.source, Source::FashionMnist);
    assert_eq!(c.split, Split::Test);
    assert!(c.hub.offline && c.hub.revision == "main");
    let e = toml::from_str::<DataConfig>("source = \"shapes\"\nimg_size = 3").unwrap_err();
    assert!(e.to_string().contains("img_size"), "{e}");
    let e = toml::from_str::<DataConfig>("[shapes]\ncuont = 3").unwrap_err();
    assert!(e.to_string().contains("cuont"), "{e}");
    let e = toml::from_str::<DataConfig>("[hub]\ntimeout = 3").unwrap_err();
    assert!(e.to_string().contains("timeout"), "{e}");
    let e = toml::from_str::<DataConfig>("source = \"cifar100\"").unwrap_err();
    assert!(e.to_string().contains("cifar10"), "{e}");
    // Round trip.
    let s = toml::to_string(&c).unwrap();
    assert_eq!(toml::from_str::<DataConfig>(&s).unwrap(), c);
}

#[test]
fn validation_names_key_and_fix() {
    let mut c = cfg(Source::Shapes);
    c.channels = 2;
    let e = open(&c, 0).err().unwrap().to_string();
    assert_eq!(
        e,
        "data.channels: 2 is not supported — use 1 (grey) or 3 (RGB)"
    );
    let mut c = cfg(Source::Shapes);
    c.image_size = 8;
    assert!(open(&c, 0)
        .err()
        .unwrap()
        .to_string()
        .contains("data.image_size"));
    let e = open(&cfg(Source::Folder), 0).err().unwrap().to_string();
    assert!(
        e.starts_with("data.dir: is required for source = \"folder\""),
        "{e}"
    );
}

// ---------------------------------------------------------------- sources

#[test]
fn shapes_through_open() {
    let ds = open(&cfg(Source::Shapes), 3).unwrap();
    assert_eq!(ds.len(), 20_000);
    assert_eq!(ds.shape(), [3, 32, 32]);
    assert_eq!(ds.class_names()[0], "circle");
    assert!(ds
        .describe()
        .starts_with("shapes train, 20000 generated images 3×32×32"));
    let again = open(&cfg(Source::Shapes), 3).unwrap();
    assert_eq!(ds.get(123, 0).unwrap(), again.get(123, 0).unwrap());
}

fn write_mnist(dir: &Path, n: usize) {
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gz(&idx_images(n, 28, 28)),
    )
    .unwrap();
    let labels: Vec<u8> = (0..n as u8).map(|i| i % 10).collect();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_labels(&labels)).unwrap();
}

#[test]
fn mnist_from_dir_resized_and_normalised() {
    let d = tempfile::tempdir().unwrap();
    write_mnist(d.path(), 6);
    let mut c = cfg(Source::Mnist);
    c.dir = Some(d.path().to_path_buf());
    let ds = open(&c, 0).unwrap();
    assert_eq!(
        (ds.len(), ds.shape(), ds.num_classes()),
        (6, [3, 32, 32], Some(10))
    );
    assert_eq!(
        ds.describe(),
        format!("MNIST train, 6 images 3×32×32 from {}", d.path().display())
    );
    // Image 5 is constant 50: any resize keeps it, every plane equal.
    let s = ds.get(5, 0).unwrap();
    assert_eq!(s.label, 5);
    assert_eq!(s.pixels.len(), 3 * 32 * 32);
    assert!(s.pixels.iter().all(|&v| (v - normalize(50.0)).abs() < 1e-5));
    // Image 0 is all zeros → -1.
    assert!(ds.get(0, 0).unwrap().pixels.iter().all(|&v| v == -1.0));
    // Grey output at 64.
    c.channels = 1;
    c.image_size = 64;
    assert_eq!(open(&c, 0).unwrap().shape(), [1, 64, 64]);
    // The test split is missing: the message from the brief.
    c.split = Split::Test;
    let e = open(&c, 0).err().unwrap().to_string();
    assert!(e.starts_with("MNIST file not found: "), "{e}");
    assert!(e.contains("t10k-images-idx3-ubyte(.gz) — set data.dir to a folder holding the four MNIST idx files (gzipped or not), or remove data.dir to download from the Hugging Face hub"), "{e}");
}

#[test]
fn mnist_padded_keeps_native_pixels_inside_a_black_frame() {
    // torchvision: Compose([Pad(2), ToTensor(), Normalize(0.5, 0.5)]) of a 28×28 digit: the
    // 28×28 pixels unchanged at [2..30, 2..30], −1 around them.
    let d = tempfile::tempdir().unwrap();
    write_mnist(d.path(), 6);
    let mut c = cfg(Source::Mnist);
    c.dir = Some(d.path().to_path_buf());
    c.channels = 1;
    c.image_size = 28;
    let native = open(&c, 0).unwrap();
    c.image_size = 32;
    c.pad = 2;
    let padded = open(&c, 0).unwrap();
    assert_eq!(padded.shape(), [1, 32, 32]);
    assert_eq!((padded.len(), padded.num_classes()), (6, Some(10)));
    assert!(
        padded.describe().ends_with("zero-padded by 2 to 32×32"),
        "{}",
        padded.describe()
    );
    for i in 0..6 {
        let (a, b) = (native.get(i, 0).unwrap(), padded.get(i, 0).unwrap());
        assert_eq!(a.label, b.label);
        for y in 0..32 {
            for x in 0..32 {
                let v = b.pixels[y * 32 + x];
                if (2..30).contains(&y) && (2..30).contains(&x) {
                    assert_eq!(v, a.pixels[(y - 2) * 28 + x - 2], "image {i} ({x}, {y})");
                } else {
                    assert_eq!(v, -1.0, "image {i} border ({x}, {y})");
                }
            }
        }
    }
    // A pad that leaves too little image names the key and the largest pad that fits.
    c.pad = 13;
    let e = open(&c, 0).err().unwrap().to_string();
    assert_eq!(
        e,
        "data.pad: 13 leaves 6 pixels of the 32-pixel image for the mnist images — use a pad of at most 12 at image_size = 32 (or a larger image_size)"
    );
}

#[test]
fn missing_dir_is_named() {
    let mut c = cfg(Source::FashionMnist);
    c.dir = Some(PathBuf::from("/definitely/not/here"));
    let e = open(&c, 0).err().unwrap().to_string();
    assert!(
        e.starts_with("data.dir folder not found: /definitely/not/here — "),
        "{e}"
    );
}

#[test]
fn mnist_and_cifar_from_parquet_in_dir() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("mnist")).unwrap();
    let imgs: Vec<Vec<u8>> = (0..3).map(|i| png_bytes(28, 28, false, i * 80)).collect();
    write_hub_parquet(
        &d.path().join("mnist").join("test-00000-of-00001.parquet"),
        "image",
        &imgs,
        &[7, 8, 9],
    );
    let mut c = cfg(Source::Mnist);
    c.dir = Some(d.path().to_path_buf());
    c.split = Split::Test;
    c.channels = 1;
    let ds = open(&c, 0).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.get(2, 0).unwrap().label, 9);
    assert!(ds.describe().contains("test-00000-of-00001.parquet"));

    let imgs: Vec<Vec<u8>> = (0..2).map(|i| png_bytes(32, 32, true, i * 50)).collect();
    let e = tempfile::tempdir().unwrap();
    write_hub_parquet(&e.path().join("train.parquet"), "img", &imgs, &[1, 2]);
    let mut c = cfg(Source::Cifar10);
    c.dir = Some(e.path().to_path_buf());
    let ds = open(&c, 0).unwrap();
    assert_eq!((ds.len(), ds.shape()), (2, [3, 32, 32]));
    assert_eq!(ds.class_names()[1], "automobile");
}

#[test]
fn cifar_from_dir_says_which_files() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("data_batch_2.bin"),
        crate::cifar::tests::batch(4),
    )
    .unwrap();
    let mut c = cfg(Source::Cifar10);
    c.dir = Some(d.path().to_path_buf());
    c.image_size = 64;
    let ds = open(&c, 0).unwrap();
    assert_eq!((ds.len(), ds.shape()), (4, [3, 64, 64]));
    let desc = ds.describe();
    assert!(
        desc.starts_with("CIFAR-10 train, 4 images 3×64×64 from "),
        "{desc}"
    );
    assert!(
        desc.contains("data_batch_2.bin (1 of 5 train batch files)"),
        "{desc}"
    );
    // Record 1: R=1, G=100, B=200 everywhere.
    let s = ds.get(1, 0).unwrap();
    assert!((s.pixels[0] - normalize(1.0)).abs() < 1e-5);
    assert!((s.pixels[64 * 64] - normalize(100.0)).abs() < 1e-5);
    assert!((s.pixels[2 * 64 * 64] - normalize(200.0)).abs() < 1e-5);
    c.split = Split::Test;
    let e = open(&c, 0).err().unwrap().to_string();
    assert!(e.contains("no CIFAR-10 test batch files"), "{e}");
}

#[test]
fn folder_through_open() {
    let d = tempfile::tempdir().unwrap();
    image::RgbImage::from_pixel(40, 30, image::Rgb([255, 255, 255]))
        .save(d.path().join("a.png"))
        .unwrap();
    let mut c = cfg(Source::Folder);
    c.dir = Some(d.path().to_path_buf());
    c.image_size = 16;
    let ds = open(&c, 0).unwrap();
    assert_eq!(ds.shape(), [3, 16, 16]);
    assert!(ds
        .get(0, 0)
        .unwrap()
        .pixels
        .iter()
        .all(|&v| (v - 1.0).abs() < 1e-6));
}

// ---------------------------------------------------------------- hub

/// An address where nothing listens: bind a port, then close it.
fn closed_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn hub_cfg(source: Source, cache: &Path, endpoint: &str) -> DataConfig {
    let mut c = cfg(source);
    c.hub.cache_dir = Some(cache.to_path_buf());
    c.hub.endpoint = Some(endpoint.to_string());
    c.hub.timeout_secs = 1;
    c
}

fn env_offline() -> bool {
    std::env::var_os("HF_HUB_OFFLINE").is_some()
}

#[test]
fn hub_cache_hit_never_touches_the_network() {
    let cache = tempfile::tempdir().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let p = staging.path().join("x.parquet");
    let imgs: Vec<Vec<u8>> = (0..5).map(|i| png_bytes(28, 28, false, i * 40)).collect();
    write_hub_parquet(&p, "image", &imgs, &[0, 1, 2, 3, 4]);
    let bytes = std::fs::read(&p).unwrap();
    fake_cache(
        cache.path(),
        "ylecun/mnist",
        "mnist/train-00000-of-00001.parquet",
        &bytes,
    );
    // Online mode against a dead endpoint: a hit must not try it.
    for offline in [false, true] {
        let mut c = hub_cfg(Source::Mnist, cache.path(), &closed_endpoint());
        c.hub.offline = offline;
        let t = Instant::now();
        let ds = open(&c, 0).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(ds.len(), 5);
        assert_eq!(ds.get(3, 0).unwrap().label, 3);
        assert!(
            ds.describe().contains("from the hub (ylecun/mnist, "),
            "{}",
            ds.describe()
        );
    }
    // CIFAR with a repo override and a grey → RGB conversion of sorts.
    let imgs: Vec<Vec<u8>> = (0..2).map(|i| png_bytes(32, 32, true, i * 9)).collect();
    write_hub_parquet(&p, "img", &imgs, &[4, 5]);
    fake_cache(
        cache.path(),
        "me/cifar",
        "plain_text/test-00000-of-00001.parquet",
        &std::fs::read(&p).unwrap(),
    );
    let mut c = hub_cfg(Source::Cifar10, cache.path(), &closed_endpoint());
    c.hub.repo = Some("me/cifar".into());
    c.split = Split::Test;
    c.channels = 1;
    let ds = open(&c, 0).unwrap();
    assert_eq!((ds.len(), ds.shape()), (2, [1, 32, 32]));
}

#[test]
fn hub_offline_miss_is_explained() {
    let cache = tempfile::tempdir().unwrap();
    let mut c = hub_cfg(Source::FashionMnist, cache.path(), &closed_endpoint());
    c.hub.offline = true;
    let e = open(&c, 0).err().unwrap().to_string();
    assert!(e.contains("Fashion-MNIST train split (fashion_mnist/train-00000-of-00001.parquet) is not in the hub cache"), "{e}");
    assert!(e.contains("offline (data.hub.offline = true)"), "{e}");
    assert!(
        e.contains("datasets--zalando-datasets--fashion_mnist/snapshots/"),
        "{e}"
    );
    assert!(
        e.contains(&format!("cache: {}", cache.path().display())),
        "{e}"
    );
    assert!(
        e.contains("or pass --set data.dir=DIR with the files (see data/README.md)"),
        "{e}"
    );
}

#[test]
fn hub_miss_on_a_closed_port_fails_fast_and_clearly() {
    if env_offline() {
        return; // the environment forces offline mode: covered above
    }
    let cache = tempfile::tempdir().unwrap();
    let endpoint = closed_endpoint();
    let c = hub_cfg(Source::Mnist, cache.path(), &endpoint);
    let t = Instant::now();
    let e = open(&c, 0).err().unwrap().to_string();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(
        e.starts_with("could not download the MNIST train split from the Hugging Face hub"),
        "{e}"
    );
    assert!(e.contains(&format!("cannot reach {endpoint}")), "{e}");
    assert!(
        e.contains(&format!(
        "tried: {endpoint}/datasets/ylecun/mnist/resolve/main/mnist/train-00000-of-00001.parquet"
    )),
        "{e}"
    );
    assert!(
        e.contains(&format!("cache: {}", cache.path().display())),
        "{e}"
    );
    assert!(e.contains("--set data.dir=DIR"), "{e}");
}

#[test]
fn hub_miss_on_a_silent_server_times_out() {
    if env_offline() {
        return;
    }
    // Accepts connections (the kernel does) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let cache = tempfile::tempdir().unwrap();
    let c = hub_cfg(Source::Cifar10, cache.path(), &endpoint);
    let t = Instant::now();
    let e = open(&c, 0).err().unwrap().to_string();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(
        e.contains("no data from the server for 1 s") && e.contains("data.hub.timeout_secs"),
        "{e}"
    );
    assert!(
        e.contains("uoft-cs/cifar10/resolve/main/plain_text/train-00000-of-00001.parquet"),
        "{e}"
    );
    drop(silent);
}

/// A one-shot stand-in for the hub on loopback: answers `requests` requests
/// the way huggingface.co answers `resolve/` (commit and etag headers,
/// `Range` support), then stops. Returns the request lines it saw.
fn fake_hub(
    listener: std::net::TcpListener,
    body: Vec<u8>,
    requests: usize,
) -> std::thread::JoinHandle<Vec<String>> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for stream in listener.incoming().take(requests) {
            let Ok(mut s) = stream else { break };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let probe = head.to_ascii_lowercase().contains("range: bytes=0-0");
            let payload: &[u8] = if probe { &body[..1] } else { &body };
            let (status, range) = if probe {
                ("206 Partial Content", format!("bytes 0-0/{}", body.len()))
            } else {
                (
                    "200 OK",
                    format!("bytes 0-{}/{}", body.len() - 1, body.len()),
                )
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\ncontent-range: {range}\r\n\
                 x-repo-commit: 89abcdef0123456789abcdef0123456789abcdef\r\n\
                 etag: \"feedbeef\"\r\nconnection: close\r\n\r\n",
                payload.len()
            );
            let _ = s.write_all(payload);
            seen.push(head.lines().next().unwrap_or("").to_string());
        }
        seen
    })
}

#[test]
fn hub_miss_downloads_into_the_cache_layout() {
    if env_offline() {
        return;
    }
    let staging = tempfile::tempdir().unwrap();
    let p = staging.path().join("x.parquet");
    let imgs: Vec<Vec<u8>> = (0..4).map(|i| png_bytes(28, 28, false, i * 50)).collect();
    write_hub_parquet(&p, "image", &imgs, &[9, 8, 7, 6]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = fake_hub(listener, std::fs::read(&p).unwrap(), 2);
    let cache = tempfile::tempdir().unwrap();
    let mut c = hub_cfg(Source::Mnist, cache.path(), &endpoint);
    c.hub.timeout_secs = 10;
    let ds = open(&c, 0).unwrap();
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.get(0, 0).unwrap().label, 9);
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 2);
    for line in &seen {
        assert!(
            line.starts_with(
                "GET /datasets/ylecun/mnist/resolve/main/mnist/train-00000-of-00001.parquet "
            ),
            "{line}"
        );
    }
    // The standard layout is there, so the next open is a cache hit, offline.
    let base = cache.path().join("datasets--ylecun--mnist");
    assert_eq!(
        std::fs::read_to_string(base.join("refs/main"))
            .unwrap()
            .trim(),
        "89abcdef0123456789abcdef0123456789abcdef"
    );
    assert!(base.join("blobs/feedbeef").is_file());
    assert!(base
        .join(
            "snapshots/89abcdef0123456789abcdef0123456789abcdef/mnist/train-00000-of-00001.parquet"
        )
        .is_file());
    c.hub.offline = true;
    assert_eq!(open(&c, 0).unwrap().len(), 4);
}

// ---------------------------------------------------------------- loader

/// Sample i is `[i, aug_seed % 1000]` with label i; can fail or panic.
struct Counting {
    n: usize,
    fail_at: Option<usize>,
    panic_at: Option<usize>,
    delay: Duration,
}

impl Counting {
    fn new(n: usize) -> Counting {
        Counting {
            n,
            fail_at: None,
            panic_at: None,
            delay: Duration::ZERO,
        }
    }
}

impl Dataset for Counting {
    fn len(&self) -> usize {
        self.n
    }
    fn shape(&self) -> [usize; 3] {
        [1, 1, 2]
    }
    fn num_classes(&self) -> Option<usize> {
        None
    }
    fn class_names(&self) -> Vec<String> {
        Vec::new()
    }
    fn get(&self, i: usize, aug: u64) -> Result<Sample, DataError> {
        std::thread::sleep(self.delay);
        if self.fail_at == Some(i) {
            return Err(DataError::corrupt(
                format!("item{i}.png"),
                "cannot decode",
                "replace it",
            ));
        }
        if self.panic_at == Some(i) {
            panic!("boom at {i}");
        }
        Ok(Sample {
            pixels: vec![i as f32, (aug % 1000) as f32],
            label: i as u32,
        })
    }
    fn describe(&self) -> String {
        format!("counting {}", self.n)
    }
}

fn take(l: &mut Loader, n: usize) -> Vec<HostBatch> {
    (0..n).map(|_| l.next_batch().unwrap()).collect()
}

#[test]
fn loader_is_deterministic_whatever_the_workers() {
    let ds: Arc<dyn Dataset> = Arc::new(Counting::new(23));
    let reference = take(&mut Loader::new(ds.clone(), 4, 9, true, 0, 0).unwrap(), 13);
    for workers in [1, 2, 4] {
        let got = take(
            &mut Loader::new(ds.clone(), 4, 9, true, 0, workers).unwrap(),
            13,
        );
        assert_eq!(got, reference, "workers = {workers}");
    }
    for (k, b) in reference.iter().enumerate() {
        assert_eq!(b.index, k as u64);
        assert_eq!(b.shape, [4, 1, 1, 2]);
        assert_eq!(b.pixels.len(), 8);
    }
    let other = take(&mut Loader::new(ds, 4, 10, true, 0, 2).unwrap(), 13);
    assert_ne!(other, reference);
}

#[test]
fn loader_resumes_exactly() {
    let ds: Arc<dyn Dataset> = Arc::new(Counting::new(30));
    let fresh = take(&mut Loader::new(ds.clone(), 7, 5, true, 0, 2).unwrap(), 20);
    for start in [1u64, 4, 5, 13] {
        let mut l = Loader::new(ds.clone(), 7, 5, true, start, 3).unwrap();
        assert_eq!(l.position(), start);
        let resumed = take(&mut l, 20 - start as usize);
        assert_eq!(resumed, fresh[start as usize..], "start = {start}");
        assert_eq!(l.position(), 20);
    }
}

#[test]
fn epochs_cover_everything_once_and_reshuffle() {
    let ds: Arc<dyn Dataset> = Arc::new(Counting::new(22));
    let mut l = Loader::new(ds.clone(), 5, 1, true, 0, 2).unwrap();
    assert_eq!(l.batches_per_epoch(), 4); // 22 / 5, 2 dropped per epoch
    let epochs: Vec<Vec<u32>> = (0..3)
        .map(|_| take(&mut l, 4).into_iter().flat_map(|b| b.labels).collect())
        .collect();
    for e in &epochs {
        let mut s = e.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 20, "no repeats within an epoch");
    }
    assert_ne!(epochs[0], epochs[1]);
    assert_ne!(epochs[1], epochs[2]);
    // Without shuffling every epoch is 0..20 in order.
    let mut l = Loader::new(ds, 5, 1, false, 0, 1).unwrap();
    let e0: Vec<u32> = take(&mut l, 4).into_iter().flat_map(|b| b.labels).collect();
    assert_eq!(e0, (0..20).collect::<Vec<u32>>());
    assert_eq!(l.next_batch().unwrap().labels, vec![0, 1, 2, 3, 4]);
    assert_eq!(l.batch_indices(5), vec![5, 6, 7, 8, 9]);
}

#[test]
fn worker_errors_and_panics_travel_to_the_caller() {
    let mut ds = Counting::new(20);
    ds.fail_at = Some(7);
    let ds: Arc<dyn Dataset> = Arc::new(ds);
    for workers in [0, 2] {
        let mut l = Loader::new(ds.clone(), 5, 0, false, 0, workers).unwrap();
        assert!(l.next_batch().is_ok());
        let e = l.next_batch().unwrap_err().to_string();
        assert!(e.contains("item7.png: cannot decode — replace it"), "{e}");
        assert_eq!(l.next_batch().unwrap().index, 2, "the loader moves on");
    }
    let mut ds = Counting::new(20);
    ds.panic_at = Some(3);
    let ds: Arc<dyn Dataset> = Arc::new(ds);
    for workers in [0, 2] {
        let mut l = Loader::new(ds.clone(), 5, 0, false, 0, workers).unwrap();
        let e = l.next_batch().unwrap_err().to_string();
        assert!(
            e.contains("panicked while building batch 0: boom at 3"),
            "{e}"
        );
        assert_eq!(l.next_batch().unwrap().index, 1);
    }
}

#[test]
fn dropping_a_busy_loader_returns_promptly() {
    let mut ds = Counting::new(1000);
    ds.delay = Duration::from_millis(2);
    let ds: Arc<dyn Dataset> = Arc::new(ds);
    let mut l = Loader::new(ds, 50, 0, true, 0, 3).unwrap();
    l.next_batch().unwrap();
    let t = Instant::now();
    drop(l);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn loader_rejects_impossible_batches() {
    let ds: Arc<dyn Dataset> = Arc::new(Counting::new(3));
    let e = Loader::new(ds.clone(), 4, 0, true, 0, 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the dataset has 3 samples, fewer than one batch of 4 (counting 3)"),
        "{e}"
    );
    assert!(e.contains("lower the batch size"), "{e}");
    assert!(Loader::new(ds, 0, 0, true, 0, 1).is_err());
}

#[test]
fn loader_over_shapes_makes_image_batches() {
    let ds = open(&cfg(Source::Shapes), 0).unwrap();
    let mut l = Loader::new(ds.clone(), 16, 0, true, 0, 2).unwrap();
    assert_eq!(l.batches_per_epoch(), 20_000 / 16);
    let b = l.next_batch().unwrap();
    assert_eq!(b.shape, [16, 3, 32, 32]);
    assert_eq!(b.pixels.len(), 16 * 3 * 32 * 32);
    assert!(b.pixels.iter().all(|v| (-1.0..=1.0).contains(v)));
    assert!(b.labels.iter().all(|&c| c < 6));
    // The batch holds exactly the samples batch_indices names.
    let idx = l.batch_indices(0);
    let first = ds.get(idx[0], 0).unwrap();
    assert_eq!(&b.pixels[..3 * 32 * 32], &first.pixels[..]);
}
