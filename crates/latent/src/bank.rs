//! The z bank: latent vectors saved with ids, so a person can pick exemplars from a contact sheet
//! and the tools can find their z again.
//!
//! A run's bank lives in `RUN/zbank/`:
//!
//! ```text
//! zbank/index.json              format, run name, latent size, classes, image shape, the draws
//! zbank/draw-00000.safetensors  `z` [n, latent] f32 (+ `labels` [n] u32 for conditional models)
//! zbank/draw-00001.safetensors  …
//! ```
//!
//! Every draw (one `easel sample`, or one pool of `easel latent check`) gets the next free block
//! of ids and records the model folder it was drawn for (relative to the run: `final` or
//! `checkpoints/step-00000500`), that model's step, the seed and the image written. Ids are
//! stable: a draw is only ever appended, and drawing the very same z for the same model again
//! reuses the existing ids instead of adding a copy.
//!
//! Files are written atomically (temporary file, then rename), but appends are not locked: two
//! processes appending to one bank at the same instant can lose one draw's index entry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{file_err, invalid, LatentError, Result};

/// Folder of the bank inside a run directory.
pub const BANK_DIR: &str = "zbank";
/// The JSON index inside [`BANK_DIR`].
pub const INDEX_FILE: &str = "index.json";
/// Value of the index's `format` field.
pub const FORMAT: &str = "easel-zbank-1";

/// One block of ids drawn together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Draw {
    /// The first id; the draw holds ids `first_id .. first_id + count`.
    pub first_id: u64,
    /// Number of vectors.
    pub count: usize,
    /// The safetensors file, relative to the bank folder.
    pub file: String,
    /// The model folder the vectors were drawn for, relative to the run directory when inside
    /// it (`final`, `checkpoints/step-00000500`), else as given.
    pub model: String,
    /// Training step of that model.
    pub step: u64,
    /// Seed of the draw.
    pub seed: u64,
    /// Conditional models: the class every image was drawn with, if one was.
    #[serde(default)]
    pub class: Option<u32>,
    /// The PNG written with the draw (grid or contact sheet), if any.
    #[serde(default)]
    pub image: Option<String>,
    /// What made the draw (`sample`, `sample --sheet`, `latent check pool`).
    pub source: String,
}

/// The JSON index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// [`FORMAT`].
    pub format: String,
    /// Name of the run directory the bank belongs to.
    pub run: String,
    /// Length of every z.
    pub latent_dim: usize,
    /// Classes of the generator (0 = unconditional).
    pub num_classes: usize,
    /// `[C, H, W]` of the images.
    pub image_shape: [usize; 3],
    /// The draws, in id order.
    pub draws: Vec<Draw>,
}

/// What describes a new draw (see [`ZBank::append`]).
#[derive(Debug, Clone)]
pub struct DrawInfo<'a> {
    /// The model folder the vectors are drawn for.
    pub model_dir: &'a Path,
    /// Its training step.
    pub step: u64,
    /// Seed of the draw.
    pub seed: u64,
    /// The single class of the draw, if any.
    pub class: Option<u32>,
    /// The PNG written with it.
    pub image: Option<&'a Path>,
    /// What made it.
    pub source: &'a str,
}

/// One vector of the bank.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its id.
    pub id: u64,
    /// The latent vector.
    pub z: Vec<f32>,
    /// Its class label (conditional models).
    pub label: Option<u32>,
    /// Index of its draw in [`Index::draws`].
    pub draw: usize,
}

/// A run's z bank (see the module docs).
#[derive(Debug, Clone)]
pub struct ZBank {
    run: PathBuf,
    dir: PathBuf,
    index: Index,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> LatentError {
    file_err(path, format!("{what}: {e}"))
}

/// Writes `bytes` to a temporary sibling, then renames it into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, "writing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, "renaming into place", e))
}

impl ZBank {
    /// The bank folder of a run directory (the caller resolves a model folder to its run).
    pub fn dir_of(run: &Path) -> PathBuf {
        run.join(BANK_DIR)
    }

    /// Opens the bank of `run`; a clear error when the run has none.
    pub fn open(run: &Path) -> Result<ZBank> {
        let root = run.to_path_buf();
        let dir = root.join(BANK_DIR);
        let path = dir.join(INDEX_FILE);
        if !path.exists() {
            let hint = format!(
                "no z bank here yet; draw one with `easel sample {} --n 64 --sheet` and pick ids from the contact sheet",
                root.display()
            );
            return Err(file_err(&path, hint));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, "reading", e))?;
        let index: Index = serde_json::from_str(&text)
            .map_err(|e| file_err(&path, format!("not a z bank index: {e}")))?;
        if index.format != FORMAT {
            return Err(file_err(
                &path,
                format!(
                    "format `{}` is not `{FORMAT}` (written by another easel version?)",
                    index.format
                ),
            ));
        }
        Ok(ZBank {
            run: root,
            dir,
            index,
        })
    }

    /// Opens the bank of `run`, creating an empty one for a generator of this latent size,
    /// class count and image shape; an existing bank must match them.
    pub fn open_or_create(
        run: &Path,
        latent_dim: usize,
        num_classes: usize,
        image_shape: [usize; 3],
    ) -> Result<ZBank> {
        let root = run.to_path_buf();
        let dir = root.join(BANK_DIR);
        if dir.join(INDEX_FILE).exists() {
            let bank = Self::open(&root)?;
            let i = &bank.index;
            if i.latent_dim != latent_dim || i.num_classes != num_classes {
                return Err(file_err(
                    bank.index_path(),
                    format!(
                        "the bank holds z of size {} for {} classes, but this generator takes z of size {latent_dim} and {num_classes} classes; move the zbank folder away to start a new bank",
                        i.latent_dim, i.num_classes
                    ),
                ));
            }
            return Ok(bank);
        }
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, "creating", e))?;
        let run_name = std::fs::canonicalize(&root)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| root.display().to_string());
        let bank = ZBank {
            run: root,
            dir,
            index: Index {
                format: FORMAT.into(),
                run: run_name,
                latent_dim,
                num_classes,
                image_shape,
                draws: Vec::new(),
            },
        };
        bank.save_index()?;
        Ok(bank)
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }

    fn save_index(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.index)
            .map_err(|e| file_err(self.index_path(), format!("serialising: {e}")))?;
        write_atomically(&self.index_path(), text.as_bytes())
    }

    /// The index (latent size, classes, draws).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The bank folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run directory the bank belongs to.
    pub fn run(&self) -> &Path {
        &self.run
    }

    /// Number of ids (`0 .. len`).
    pub fn len(&self) -> u64 {
        self.index
            .draws
            .last()
            .map(|d| d.first_id + d.count as u64)
            .unwrap_or(0)
    }

    /// Whether the bank holds no vectors.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `model` of a draw as a path: relative ones are inside the run directory.
    pub fn model_path(&self, draw: &Draw) -> PathBuf {
        let p = Path::new(&draw.model);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.run.join(p)
        }
    }

    fn relative_model(&self, model_dir: &Path) -> String {
        if let Ok(rel) = model_dir.strip_prefix(&self.run) {
            return rel.display().to_string();
        }
        if let (Ok(m), Ok(r)) = (
            std::fs::canonicalize(model_dir),
            std::fs::canonicalize(&self.run),
        ) {
            if let Ok(rel) = m.strip_prefix(&r) {
                return rel.display().to_string();
            }
            return m.display().to_string();
        }
        model_dir.display().to_string()
    }

    /// Adds `z` (`n × latent_dim` values, row-major) and, for conditional models, one label per
    /// vector; returns the ids given to them. Drawing the same vectors for the same model and
    /// seed again returns the ids they already have.
    pub fn append(
        &mut self,
        z: &[f32],
        labels: Option<&[u32]>,
        info: &DrawInfo,
    ) -> Result<std::ops::Range<u64>> {
        let nz = self.index.latent_dim;
        if z.is_empty() || z.len().checked_rem(nz) != Some(0) {
            return invalid(format!(
                "z bank {}: {} values are not whole vectors of size {nz}",
                self.dir.display(),
                z.len()
            ));
        }
        let n = z.len() / nz;
        match (self.index.num_classes, labels) {
            (0, Some(_)) => {
                return invalid("labels given for an unconditional generator's z bank".to_string())
            }
            (k, None) if k > 0 => {
                return invalid(format!(
                    "the generator is conditional ({k} classes): every z needs its label"
                ))
            }
            (k, Some(l)) => {
                if l.len() != n {
                    return invalid(format!("{} labels for {n} vectors", l.len()));
                }
                if let Some(bad) = l.iter().find(|&&c| c as usize >= k) {
                    return invalid(format!("label {bad} out of range 0..{k}"));
                }
            }
            _ => {}
        }
        let model = self.relative_model(info.model_dir);
        for (i, d) in self.index.draws.iter().enumerate() {
            if d.model == model && d.step == info.step && d.seed == info.seed && d.count == n {
                let (dz, dl) = self.load_draw(i)?;
                if dz == z && dl.as_deref() == labels {
                    return Ok(d.first_id..d.first_id + n as u64);
                }
            }
        }
        let first_id = self.len();
        let file = format!("draw-{:05}.safetensors", self.index.draws.len());
        let zbytes: Vec<u8> = z.iter().flat_map(|v| v.to_le_bytes()).collect();
        let lbytes: Option<Vec<u8>> =
            labels.map(|l| l.iter().flat_map(|v| v.to_le_bytes()).collect());
        let path = self.dir.join(&file);
        let err = |e: safetensors::SafeTensorError| file_err(&path, format!("{e}"));
        let mut views = vec![(
            "z",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n, nz], &zbytes)
                .map_err(err)?,
        )];
        if let Some(lb) = &lbytes {
            views.push((
                "labels",
                safetensors::tensor::TensorView::new(safetensors::Dtype::U32, vec![n], lb)
                    .map_err(err)?,
            ));
        }
        let meta: HashMap<String, String> = [
            ("first_id".to_string(), first_id.to_string()),
            ("model".to_string(), model.clone()),
            ("step".to_string(), info.step.to_string()),
            ("seed".to_string(), info.seed.to_string()),
        ]
        .into_iter()
        .collect();
        let bytes = safetensors::serialize(views, Some(meta)).map_err(err)?;
        write_atomically(&path, &bytes)?;
        self.index.draws.push(Draw {
            first_id,
            count: n,
            file,
            model,
            step: info.step,
            seed: info.seed,
            class: info.class,
            image: info.image.map(|p| p.display().to_string()),
            source: info.source.to_string(),
        });
        self.save_index()?;
        Ok(first_id..first_id + n as u64)
    }

    /// All vectors and labels of draw `i`, checked against the index.
    pub fn load_draw(&self, i: usize) -> Result<(Vec<f32>, Option<Vec<u32>>)> {
        let d = &self.index.draws[i];
        let path = self.dir.join(&d.file);
        let bytes = std::fs::read(&path).map_err(|e| io_err(&path, "reading", e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| file_err(&path, format!("not a safetensors file: {e}")))?;
        let nz = self.index.latent_dim;
        let z = st
            .tensor("z")
            .map_err(|e| file_err(&path, format!("no `z` tensor: {e}")))?;
        if z.dtype() != safetensors::Dtype::F32 || z.shape() != [d.count, nz] {
            return Err(file_err(
                &path,
                format!(
                    "`z` is {:?} {:?}, the index says F32 [{}, {nz}] (wrong z size: was this file written for another generator?)",
                    z.dtype(),
                    z.shape(),
                    d.count
                ),
            ));
        }
        let zs: Vec<f32> = z
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let labels = if self.index.num_classes > 0 {
            let l = st.tensor("labels").map_err(|e| {
                file_err(
                    &path,
                    format!("no `labels` tensor for a conditional bank: {e}"),
                )
            })?;
            if l.dtype() != safetensors::Dtype::U32 || l.shape() != [d.count] {
                return Err(file_err(
                    &path,
                    format!(
                        "`labels` is {:?} {:?}, expected U32 [{}]",
                        l.dtype(),
                        l.shape(),
                        d.count
                    ),
                ));
            }
            Some(
                l.data()
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )
        } else {
            None
        };
        Ok((zs, labels))
    }

    fn draw_of(&self, id: u64) -> Result<usize> {
        let i = self
            .index
            .draws
            .partition_point(|d| d.first_id + d.count as u64 <= id);
        match self.index.draws.get(i) {
            Some(d) if d.first_id <= id => Ok(i),
            _ => {
                let sheet = self
                    .index
                    .draws
                    .iter()
                    .rev()
                    .filter(|d| d.source.ends_with("--sheet"))
                    .find_map(|d| d.image.as_deref());
                let hint = match sheet {
                    Some(s) => format!("; ids are printed on the contact sheet {s}"),
                    None => format!(
                        "; draw a numbered contact sheet with `easel sample {} --sheet`",
                        self.run.display()
                    ),
                };
                invalid(format!(
                    "id {id} is not in the z bank {} (it holds ids 0..{}){hint}",
                    self.dir.display(),
                    self.len()
                ))
            }
        }
    }

    /// The vectors with these ids, in the order given.
    pub fn get(&self, ids: &[u64]) -> Result<Vec<Entry>> {
        let mut cache: HashMap<usize, (Vec<f32>, Option<Vec<u32>>)> = HashMap::new();
        let nz = self.index.latent_dim;
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let di = self.draw_of(id)?;
            if let std::collections::hash_map::Entry::Vacant(e) = cache.entry(di) {
                e.insert(self.load_draw(di)?);
            }
            let (z, labels) = &cache[&di];
            let k = (id - self.index.draws[di].first_id) as usize;
            out.push(Entry {
                id,
                z: z[k * nz..(k + 1) * nz].to_vec(),
                label: labels.as_ref().map(|l| l[k]),
                draw: di,
            });
        }
        Ok(out)
    }

    /// The one model folder all `entries` were drawn for; an error naming the ids when they come
    /// from different checkpoints.
    pub fn model_of(&self, entries: &[Entry]) -> Result<PathBuf> {
        let Some(first) = entries.first() else {
            return invalid("no ids given");
        };
        let d0 = &self.index.draws[first.draw];
        if let Some(other) = entries
            .iter()
            .find(|e| self.index.draws[e.draw].model != d0.model)
        {
            let d1 = &self.index.draws[other.draw];
            return invalid(format!(
                "id {} was drawn for {} (step {}) but id {} for {} (step {}); pick ids of one checkpoint, or pass --model DIR to render them all with one model",
                first.id, d0.model, d0.step, other.id, d1.model, d1.step
            ));
        }
        Ok(self.model_path(d0))
    }
}

/// Parses a comma-separated list of ids (`3,17,22`), naming the bad item.
pub fn parse_ids(s: &str) -> std::result::Result<Vec<u64>, String> {
    let ids: std::result::Result<Vec<u64>, String> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u64>().map_err(|_| {
                format!("`{t}` is not an id (ids are whole numbers ≥ 0 from the contact sheet, e.g. 3,17,22)")
            })
        })
        .collect();
    let ids = ids?;
    if ids.is_empty() {
        return Err("no ids given (e.g. 3,17,22)".into());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(model: &'a Path, seed: u64) -> DrawInfo<'a> {
        DrawInfo {
            model_dir: model,
            step: 10,
            seed,
            class: None,
            image: None,
            source: "test",
        }
    }

    #[test]
    fn append_get_reopen_and_dedupe() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        std::fs::create_dir_all(run.join("final")).unwrap();
        let mut bank = ZBank::open_or_create(&run, 4, 0, [3, 16, 16]).unwrap();
        assert!(bank.is_empty());
        let z1: Vec<f32> = (0..12).map(|v| v as f32).collect(); // 3 vectors
        let z2: Vec<f32> = (0..8).map(|v| -(v as f32)).collect(); // 2 vectors
        let fin = run.join("final");
        assert_eq!(bank.append(&z1, None, &info(&fin, 1)).unwrap(), 0..3);
        assert_eq!(bank.append(&z2, None, &info(&fin, 2)).unwrap(), 3..5);
        // The same draw again keeps its ids.
        assert_eq!(bank.append(&z1, None, &info(&fin, 1)).unwrap(), 0..3);
        assert_eq!(bank.len(), 5);

        // Reopened from the run (easel-train's `run_dir::open_bank` resolves final/ or a
        // checkpoint folder to it).
        let b = ZBank::open(&run).unwrap();
        let e = b.get(&[4, 1]).unwrap();
        assert_eq!(e[0].z, vec![-4.0, -5.0, -6.0, -7.0]);
        assert_eq!(e[1].z, vec![4.0, 5.0, 6.0, 7.0]);
        assert_eq!(e[0].label, None);
        assert_eq!(b.model_of(&e).unwrap(), run.join("final"));
        let idx = bank.index();
        assert_eq!(idx.draws[0].model, "final");
        assert_eq!(idx.run, "run");
        let err = bank.get(&[5]).unwrap_err().to_string();
        assert!(err.contains("id 5") && err.contains("0..5"), "{err}");

        // Different checkpoints: model_of names both.
        let ck = run.join("checkpoints").join("step-00000005");
        let r = bank.append(&z2, None, &info(&ck, 9)).unwrap();
        let e = bank.get(&[0, r.start]).unwrap();
        let err = bank.model_of(&e).unwrap_err().to_string();
        assert!(
            err.contains("checkpoints/step-00000005") && err.contains("--model"),
            "{err}"
        );

        // A mismatched generator cannot reuse the bank.
        let err = ZBank::open_or_create(&run, 8, 0, [3, 16, 16])
            .unwrap_err()
            .to_string();
        assert!(err.contains("size 4") && err.contains("size 8"), "{err}");
        // Bad inputs.
        assert!(bank.append(&z1[..5], None, &info(&fin, 3)).is_err());
        assert!(bank.append(&z1, Some(&[0, 1, 2]), &info(&fin, 3)).is_err());
    }

    #[test]
    fn conditional_labels_round_trip_and_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let mut bank = ZBank::open_or_create(d.path(), 2, 3, [1, 16, 16]).unwrap();
        let z = [0.5f32, 1.5, 2.5, 3.5];
        assert!(bank.append(&z, None, &info(d.path(), 1)).is_err());
        assert!(bank.append(&z, Some(&[0, 3]), &info(d.path(), 1)).is_err());
        bank.append(&z, Some(&[2, 1]), &info(d.path(), 1)).unwrap();
        let e = ZBank::open(d.path()).unwrap().get(&[1, 0]).unwrap();
        assert_eq!((e[0].label, e[1].label), (Some(1), Some(2)));
        assert_eq!(e[0].z, vec![2.5, 3.5]);
    }

    #[test]
    fn missing_bank_and_corrupt_files_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("recipe.toml"), "").unwrap();
        let err = ZBank::open(d.path()).unwrap_err().to_string();
        assert!(
            err.contains("no z bank") && err.contains("--sheet"),
            "{err}"
        );
        let mut bank = ZBank::open_or_create(d.path(), 2, 0, [1, 16, 16]).unwrap();
        bank.append(&[1.0, 2.0], None, &info(d.path(), 1)).unwrap();
        // Overwrite the draw with z of another size.
        let other = ZBank::open_or_create(&d.path().join("x"), 3, 0, [1, 16, 16]);
        let mut other = other.unwrap();
        other
            .append(&[1.0, 2.0, 3.0], None, &info(d.path(), 1))
            .unwrap();
        std::fs::copy(
            d.path().join("x/zbank/draw-00000.safetensors"),
            d.path().join("zbank/draw-00000.safetensors"),
        )
        .unwrap();
        let err = ZBank::open(d.path())
            .unwrap()
            .get(&[0])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("draw-00000.safetensors") && err.contains("wrong z size"),
            "{err}"
        );
        std::fs::write(d.path().join("zbank/index.json"), "{").unwrap();
        let err = ZBank::open(d.path()).unwrap_err().to_string();
        assert!(
            err.contains("index.json") && err.contains("not a z bank index"),
            "{err}"
        );
    }

    #[test]
    fn id_lists() {
        assert_eq!(parse_ids("3, 17,22").unwrap(), vec![3, 17, 22]);
        assert!(parse_ids("3,x").unwrap_err().contains("`x`"));
        assert!(parse_ids("-1").is_err());
        assert!(parse_ids(",").is_err());
    }
}
