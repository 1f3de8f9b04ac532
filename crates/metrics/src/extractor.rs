//! Feature extractors: the networks (or identity) whose features the distribution metrics compare.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};
use easel_models::{classifier, inception, vgg};
use easel_nn::{BnMode, ParamStore};

/// Maps images to feature vectors (and optionally class logits).
///
/// Images are easel's convention, `[B, C, H, W]` in [−1, 1]. [`FeatureExtractor::hash`] names the
/// extractor and its exact weights, so cached reference statistics are only reused with the same
/// network.
///
/// Outputs are detached from candle's graph: the networks' weights are variables, so an attached
/// output would keep every intermediate activation of its forward pass alive for as long as the
/// caller keeps the features (about 1 MB per 28×28 image for the MNIST classifier).
pub trait FeatureExtractor {
    /// A short human-readable name (`"inception-v3-fid"`, `"classifier"`, `"pixels"`).
    fn name(&self) -> &str;
    /// Feature dimension `D`.
    fn dim(&self) -> usize;
    /// Features `[B, D]` of `images`.
    fn features(&self, images: &Tensor) -> Result<Tensor>;
    /// Number of classes of [`FeatureExtractor::logits`], if it has any.
    fn num_classes(&self) -> Option<usize> {
        None
    }
    /// Class logits `[B, K]` for the Inception-style score and mode coverage, if the extractor is
    /// a classifier.
    fn logits(&self, _images: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// Features and logits in one pass (the default runs both methods).
    fn extract(&self, images: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        Ok((self.features(images)?, self.logits(images)?))
    }
    /// A stable identifier of the extractor and its weights, e.g.
    /// `"inception-v3-fid:3f1c…"`, for caching reference statistics.
    fn hash(&self) -> String;
}

/// 64-bit FNV-1a, a stable hash (std's `DefaultHasher` may change between Rust releases).
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// A stable hash of named tensors (names sorted; each name, shape and the values as little-endian
/// f32 bytes), as 16 hex digits.
pub fn weights_hash(tensors: &HashMap<String, Tensor>) -> Result<String> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut h = Fnv64::default();
    for name in names {
        let t = &tensors[name];
        h.write(name.as_bytes());
        for d in t.dims() {
            h.write(&(*d as u64).to_le_bytes());
        }
        let v = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut bytes = Vec::with_capacity(v.len() * 4);
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        h.write(&bytes);
    }
    Ok(format!("{:016x}", h.finish()))
}

/// Grey images are repeated over three channels (what users of Inception FID do for MNIST).
fn to_rgb(images: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = images.dims4()?;
    match c {
        3 => Ok(images.clone()),
        1 => images.broadcast_as((b, 3, h, w))?.contiguous(),
        _ => candle_core::bail!(
            "Inception and VGG features need grey or RGB images [B, 1|3, H, W], got {:?}",
            images.dims()
        ),
    }
}

/// pytorch-fid's Inception-v3 (`pt_inception-2015-12-05`): 2048-d pool3 features, 1008 logits
/// (without the `fc` bias). See [`easel_models::inception`] for the weights file.
#[derive(Debug, Clone)]
pub struct InceptionExtractor {
    net: inception::InceptionV3,
    hash: String,
}

impl InceptionExtractor {
    /// Loads the converted safetensors weights from `path` (names as pytorch-fid's `state_dict`;
    /// errors name the path and any missing or mis-shaped tensor).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let store = ParamStore::new(device, 0);
        let net =
            inception::InceptionV3::new(&inception::Config::pytorch_fid(), store.var_builder())?;
        store.load(path)?;
        Self::from_store(net, &store)
    }

    /// Wraps a network whose weights are in `store` (e.g. generated for a test).
    pub fn from_store(net: inception::InceptionV3, store: &ParamStore) -> Result<Self> {
        let hash = format!("inception-v3-fid:{}", weights_hash(&store.tensors())?);
        Ok(Self { net, hash })
    }
}

impl FeatureExtractor for InceptionExtractor {
    fn name(&self) -> &str {
        "inception-v3-fid"
    }
    fn dim(&self) -> usize {
        inception::POOL3_DIM
    }
    fn features(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.net.forward(&to_rgb(images)?)?.detach())
    }
    fn num_classes(&self) -> Option<usize> {
        Some(self.net.config().num_classes)
    }
    fn logits(&self, images: &Tensor) -> Result<Option<Tensor>> {
        Ok(self.extract(images)?.1)
    }
    fn extract(&self, images: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let f = self.features(images)?;
        let l = self.net.logits(&f)?.detach();
        Ok((f, Some(l)))
    }
    fn hash(&self) -> String {
        self.hash.clone()
    }
}

/// easel's domain classifier ([`easel_models::classifier`]): penultimate features and class
/// logits, batch norm in inference mode.
#[derive(Debug, Clone)]
pub struct ClassifierExtractor {
    net: classifier::Classifier,
    hash: String,
}

impl ClassifierExtractor {
    /// Builds the classifier for `cfg` and loads its weights from the safetensors file `path`.
    pub fn load(cfg: &classifier::Config, path: &Path, device: &Device) -> Result<Self> {
        let store = ParamStore::new(device, 0);
        let net = classifier::Classifier::new(cfg, store.var_builder())?;
        store.load(path)?;
        Self::from_store(net, &store)
    }

    /// Wraps a network whose weights are in `store`.
    pub fn from_store(net: classifier::Classifier, store: &ParamStore) -> Result<Self> {
        let hash = format!("classifier:{}", weights_hash(&store.tensors())?);
        Ok(Self { net, hash })
    }
}

impl FeatureExtractor for ClassifierExtractor {
    fn name(&self) -> &str {
        "classifier"
    }
    fn dim(&self) -> usize {
        self.net.config().feature_dim
    }
    fn features(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.net.forward_t(images, BnMode::Eval)?.0.detach())
    }
    fn num_classes(&self) -> Option<usize> {
        Some(self.net.config().num_classes)
    }
    fn logits(&self, images: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.net.forward_t(images, BnMode::Eval)?.1.detach()))
    }
    fn extract(&self, images: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let (f, l) = self.net.forward_t(images, BnMode::Eval)?;
        Ok((f.detach(), Some(l.detach())))
    }
    fn hash(&self) -> String {
        self.hash.clone()
    }
}

/// Side images are resized to before [`VggExtractor`]'s network: ImageNet's 224, as for
/// VGG-feature precision/recall (Kynkäänniemi et al. 2019).
pub const VGG_INPUT_SIDE: usize = 224;

/// VGG16 or VGG19 ([`easel_models::vgg`], the perceptual-loss network): the ReLU output of the
/// last convolution (`relu5_3` / `relu5_4`), averaged over positions, giving `widths[4]` (512)
/// features. Images are repeated to RGB if grey and resized to `resize_to` (default
/// [`VGG_INPUT_SIDE`]) with bilinear interpolation (`align_corners=False`,
/// [`inception::resize_bilinear`]). No logits: only the convolutional part is loaded.
///
/// Cost: at 224×224 a VGG19 forward pass is ≈ 20 GFLOP per image, about 100× the MNIST classifier.
#[derive(Debug, Clone)]
pub struct VggExtractor {
    net: vgg::Vgg,
    tap: vgg::Tap,
    resize_to: Option<usize>,
    name: String,
    hash: String,
}

impl VggExtractor {
    /// Loads the convolutions of a torchvision/timm or Keras/Caffe VGG16/VGG19 safetensors file
    /// (layout, depth and widths detected from the names and shapes, classifier tensors ignored);
    /// errors name the file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let fail =
            |e: String| candle_core::Error::Msg(format!("VGG weights {}: {e}", path.display()));
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let file = candle_core::safetensors::BufferedSafetensors::new(bytes)
            .map_err(|e| fail(format!("not a safetensors file ({e})")))?;
        let shapes: Vec<(String, Vec<usize>)> = file
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, v.shape().to_vec()))
            .collect();
        let cfg = vgg::Config::detect(&shapes).map_err(|e| fail(e.to_string()))?;
        let mut tensors = HashMap::new();
        for (b, &n) in cfg.depth.convs_per_block().iter().enumerate() {
            for c in 1..=n {
                let name = cfg.layout.conv_name(cfg.depth, b + 1, c);
                for part in ["weight", "bias"] {
                    let key = format!("{name}.{part}");
                    let t = file
                        .load(&key, &Device::Cpu)
                        .map_err(|e| fail(format!("{key}: {e}")))?
                        .to_dtype(DType::F32)?;
                    tensors.insert(key, t);
                }
            }
        }
        let vb = candle_nn::VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
        let net = vgg::Vgg::new(&cfg, vb).map_err(|e| fail(e.to_string()))?;
        Self::new(net, &tensors, Some(VGG_INPUT_SIDE))
    }

    /// Wraps a network built from `weights` (hashed to identify the features); `resize_to: None`
    /// feeds images at their own size.
    pub fn new(
        net: vgg::Vgg,
        weights: &HashMap<String, Tensor>,
        resize_to: Option<usize>,
    ) -> Result<Self> {
        let depth = net.config().depth;
        let last = *depth.convs_per_block().last().unwrap_or(&1);
        let tap = vgg::Tap::relu(5, last);
        let name = match depth {
            vgg::Depth::Vgg16 => "vgg16",
            vgg::Depth::Vgg19 => "vgg19",
        }
        .to_string();
        let side = resize_to.map_or("native".to_string(), |s| s.to_string());
        let hash = format!("{name}-{tap}-{side}:{}", weights_hash(weights)?);
        Ok(Self {
            net,
            tap,
            resize_to,
            name,
            hash,
        })
    }
}

impl FeatureExtractor for VggExtractor {
    fn name(&self) -> &str {
        &self.name
    }
    fn dim(&self) -> usize {
        self.net.config().widths[4]
    }
    fn features(&self, images: &Tensor) -> Result<Tensor> {
        let mut x = to_rgb(images)?;
        if let Some(s) = self.resize_to {
            x = inception::resize_bilinear(&x, s, s)?;
        }
        let a = self.net.features(&x, &[self.tap])?.remove(0); // [B, C, h, w]
        Ok(a.mean((2, 3))?.detach())
    }
    fn hash(&self) -> String {
        self.hash.clone()
    }
}

/// The flattened pixels as features (for pixel-space nearest neighbours and diversity).
#[derive(Debug, Clone)]
pub struct PixelExtractor {
    shape: [usize; 3],
    name: String,
}

impl PixelExtractor {
    /// For images `[B, C, H, W]` with `shape = [C, H, W]`.
    pub fn new(shape: [usize; 3]) -> Self {
        Self {
            shape,
            name: "pixels".to_string(),
        }
    }
}

impl FeatureExtractor for PixelExtractor {
    fn name(&self) -> &str {
        &self.name
    }
    fn dim(&self) -> usize {
        self.shape.iter().product()
    }
    fn features(&self, images: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = images.dims4()?;
        if [c, h, w] != self.shape {
            candle_core::bail!(
                "pixel features expect images [B, {}, {}, {}], got {:?}",
                self.shape[0],
                self.shape[1],
                self.shape[2],
                images.dims()
            )
        }
        images.reshape((b, c * h * w))
    }
    fn hash(&self) -> String {
        format!(
            "pixels:{}x{}x{}",
            self.shape[0], self.shape[1], self.shape[2]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_sensitive() {
        let dev = Device::Cpu;
        let mut t = HashMap::new();
        t.insert("a".to_string(), Tensor::new(&[1f32, 2., 3.], &dev).unwrap());
        t.insert("b".to_string(), Tensor::new(&[[0.5f32]], &dev).unwrap());
        let h = weights_hash(&t).unwrap();
        // Fixed value: the hash must not change between builds or Rust releases.
        assert_eq!(h, weights_hash(&t).unwrap());
        assert_eq!(h.len(), 16);
        let mut fnv = Fnv64::default();
        fnv.write(b"a");
        assert_eq!(fnv.finish(), 0xaf63_dc4c_8601_ec8c); // FNV-1a test vector for "a"
        t.insert("b".to_string(), Tensor::new(&[[0.5001f32]], &dev).unwrap());
        assert_ne!(h, weights_hash(&t).unwrap());
    }

    #[test]
    fn inception_extractor_takes_grey_images_and_reports_bad_files() {
        let dev = Device::Cpu;
        let store = ParamStore::new(&dev, 0);
        let net =
            inception::InceptionV3::new(&inception::Config::pytorch_fid(), store.var_builder())
                .unwrap();
        let ex = InceptionExtractor::from_store(net, &store).unwrap();
        assert!(ex.hash().starts_with("inception-v3-fid:"));
        let grey = Tensor::rand(-1f32, 1., (1, 1, 20, 20), &dev).unwrap();
        let (f, l) = ex.extract(&grey).unwrap();
        assert!(!f.track_op() && !l.as_ref().unwrap().track_op());
        assert_eq!(
            (f.dims(), l.unwrap().dims()),
            ([1, 2048].as_slice(), [1, 1008].as_slice())
        );
        let rgb = Tensor::cat(&[&grey, &grey, &grey], 1).unwrap();
        let diff = (ex.features(&rgb).unwrap() - &f).unwrap().abs().unwrap();
        assert_eq!(diff.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        // A file with the wrong tensors: the error names the file and what is missing.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-inception.safetensors");
        let mut t = HashMap::new();
        t.insert(
            "fc.weight".to_string(),
            Tensor::zeros((1008, 2048), DType::F32, &dev).unwrap(),
        );
        candle_core::safetensors::save(&t, &path).unwrap();
        let err = InceptionExtractor::load(&path, &dev)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not-inception.safetensors") && err.contains("Conv2d_1a_3x3.conv.weight"),
            "{err}"
        );
        let err = InceptionExtractor::load(&dir.path().join("absent.safetensors"), &dev)
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent.safetensors"), "{err}");
    }

    #[test]
    fn classifier_round_trips_through_a_file() {
        let dev = Device::Cpu;
        let cfg = classifier::Config {
            width: 4,
            feature_dim: 8,
            ..classifier::Config::mnist()
        };
        let store = ParamStore::new(&dev, 5);
        let net = classifier::Classifier::new(&cfg, store.var_builder()).unwrap();
        let a = ClassifierExtractor::from_store(net, &store).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clf.safetensors");
        store.save(&path).unwrap();
        let b = ClassifierExtractor::load(&cfg, &path, &dev).unwrap();
        assert_eq!(a.hash(), b.hash());
        let x = Tensor::rand(-1f32, 1., (2, 1, 28, 28), &dev).unwrap();
        let d = (a.features(&x).unwrap() - b.features(&x).unwrap())
            .unwrap()
            .abs()
            .unwrap();
        assert_eq!(d.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        // Outputs carry no graph (which would hold every activation of the forward pass).
        let (f, l) = b.extract(&x).unwrap();
        assert!(!f.track_op() && !l.unwrap().track_op());
        assert!(!b.features(&x).unwrap().track_op());
        assert!(!b.logits(&x).unwrap().unwrap().track_op());
    }

    /// Seeded weights of a narrow VGG19 in torchvision's names.
    fn tiny_vgg19(widths: [usize; 5], seed: u64) -> HashMap<String, Tensor> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let depth = vgg::Depth::Vgg19;
        let mut t = HashMap::new();
        let mut c_in = 3;
        for (b, &n) in depth.convs_per_block().iter().enumerate() {
            for c in 1..=n {
                let name = vgg::Layout::Torchvision.conv_name(depth, b + 1, c);
                let o = widths[b];
                let w: Vec<f32> = (0..o * c_in * 9)
                    .map(|_| rng.random_range(-0.5..0.5))
                    .collect();
                let bias: Vec<f32> = (0..o).map(|_| rng.random_range(0.0..0.1)).collect();
                t.insert(
                    format!("{name}.weight"),
                    Tensor::from_vec(w, (o, c_in, 3, 3), &Device::Cpu).unwrap(),
                );
                t.insert(
                    format!("{name}.bias"),
                    Tensor::from_vec(bias, o, &Device::Cpu).unwrap(),
                );
                c_in = o;
            }
        }
        t
    }

    #[test]
    fn vgg_features_are_the_mean_of_the_last_relu_after_the_resize() {
        let dev = Device::Cpu;
        let widths = [2, 3, 4, 4, 6];
        let tensors = tiny_vgg19(widths, 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vgg19.safetensors");
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let ex = VggExtractor::load(&path, &dev).unwrap();
        assert_eq!((ex.name(), ex.dim()), ("vgg19", 6));
        assert!(ex.hash().starts_with("vgg19-relu5_4-224:"), "{}", ex.hash());
        assert!(ex.num_classes().is_none());
        // Oracle: the network's own relu5_4 at 224×224, averaged by hand.
        let cfg = vgg::Config {
            widths,
            ..vgg::Config::new(vgg::Depth::Vgg19, vgg::Layout::Torchvision)
        };
        let net = vgg::Vgg::new(
            &cfg,
            candle_nn::VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev),
        )
        .unwrap();
        let grey = Tensor::rand(-1f32, 1., (2, 1, 28, 28), &dev).unwrap();
        let rgb = Tensor::cat(&[&grey, &grey, &grey], 1).unwrap();
        let x = inception::resize_bilinear(&rgb, 224, 224).unwrap();
        let a = net.features(&x, &[vgg::Tap::relu(5, 4)]).unwrap().remove(0);
        let (b, c, h, w) = a.dims4().unwrap();
        let v = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let f = ex.features(&grey).unwrap();
        assert!(!f.track_op());
        assert_eq!(f.dims(), [b, c]);
        let got = f.to_vec2::<f32>().unwrap();
        for i in 0..b {
            for k in 0..c {
                let plane = &v[(i * c + k) * h * w..(i * c + k + 1) * h * w];
                let want = plane.iter().map(|&x| x as f64).sum::<f64>() / (h * w) as f64;
                assert!((got[i][k] as f64 - want).abs() < 1e-5 * want.abs().max(1.0));
            }
        }
        // Grey equals RGB repeated; other weights are another hash.
        let d = (ex.features(&rgb).unwrap() - &f).unwrap().abs().unwrap();
        assert_eq!(d.max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        let other = tiny_vgg19(widths, 2);
        let net2 = vgg::Vgg::new(
            &cfg,
            candle_nn::VarBuilder::from_tensors(other.clone(), DType::F32, &dev),
        )
        .unwrap();
        assert_ne!(
            VggExtractor::new(net2, &other, Some(224)).unwrap().hash(),
            ex.hash()
        );
        // Files that are not VGG weights: the error names the file.
        let err = VggExtractor::load(&dir.path().join("absent.safetensors"), &dev)
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent.safetensors"), "{err}");
        let bad = dir.path().join("clf.safetensors");
        let mut t = HashMap::new();
        t.insert(
            "fc.weight".to_string(),
            Tensor::zeros((2, 2), DType::F32, &dev).unwrap(),
        );
        candle_core::safetensors::save(&t, &bad).unwrap();
        let err = VggExtractor::load(&bad, &dev).unwrap_err().to_string();
        assert!(err.contains("clf.safetensors"), "{err}");
    }

    #[test]
    fn classifier_and_pixels() {
        let dev = Device::Cpu;
        let store = ParamStore::new(&dev, 0);
        let cfg = classifier::Config {
            width: 4,
            feature_dim: 8,
            ..classifier::Config::mnist()
        };
        let net = classifier::Classifier::new(&cfg, store.var_builder()).unwrap();
        let ex = ClassifierExtractor::from_store(net, &store).unwrap();
        let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &dev).unwrap();
        let (f, l) = ex.extract(&x).unwrap();
        assert_eq!(
            (f.dims(), l.unwrap().dims()),
            ([2, 8].as_slice(), [2, 10].as_slice())
        );
        assert!(ex.hash().starts_with("classifier:"));
        let px = PixelExtractor::new([1, 28, 28]);
        assert_eq!(px.features(&x).unwrap().dims(), [2, 784]);
        // The trait is object-safe: extractors can be chosen at run time.
        let any: Vec<Box<dyn FeatureExtractor>> = vec![Box::new(ex), Box::new(px.clone())];
        assert_eq!(any.iter().map(|e| e.dim()).collect::<Vec<_>>(), [8, 784]);
        assert!(px.logits(&x).unwrap().is_none());
        assert!(px
            .features(&Tensor::zeros((2, 3, 28, 28), DType::F32, &dev).unwrap())
            .is_err());
    }
}
