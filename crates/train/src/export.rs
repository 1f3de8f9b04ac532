//! `easel data`: a recipe's training images, after its transforms (resize, crop, pad), written as a
//! folder of PNGs — one subfolder per class when the data is labelled (torchvision's
//! `ImageFolder` layout, which easel's own `folder` source reads back with the same labels).
//!
//! Uses: look at what a recipe trains on, or train another tool (a PyTorch reference trainer,
//! `bench/quality/`) on exactly easel's data, including the generated `shapes` set.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{IoContext, Result, TrainError};
use crate::recipe::Recipe;

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    /// The folder (created by the export).
    pub dir: PathBuf,
    /// Images written.
    pub images: usize,
    /// Class subfolders in label order (empty for unlabelled data: the PNGs sit in `dir`).
    pub classes: Vec<String>,
    /// The dataset as its reader describes it.
    pub describe: String,
}

/// Folder name of class `k`: its index zero-padded (so a sorted listing — what `ImageFolder` and
/// easel's folder reader do — gives label order back) and its name, e.g. `03-triangle`; just the
/// index when the name is the index (MNIST's `"3"` → `03`).
pub fn class_folder(k: usize, name: &str, classes: usize) -> String {
    let width = classes.saturating_sub(1).to_string().len().max(2);
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean == k.to_string() {
        format!("{k:0width$}")
    } else {
        format!("{k:0width$}-{clean}")
    }
}

/// Writes the first `limit` images (all when `None`) of the recipe's dataset (`recipe.data`, keyed
/// by `recipe.seed` like training) to `out` as 8-bit PNGs, rounded as the preview grids are.
/// `out` must not exist or be empty; the images go to a temporary sibling first, renamed into place
/// when complete, so an interrupted export leaves no half-written folder.
pub fn export(recipe: &Recipe, out: &Path, limit: Option<usize>, quiet: bool) -> Result<Exported> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out).ctx("reading", out)?;
        if entries.next().is_some() {
            return Err(TrainError::Run(format!(
                "{} already exists and is not empty: choose a new --out folder (nothing was written)",
                out.display()
            )));
        }
        std::fs::remove_dir(out).ctx("removing empty", out)?;
    }
    let data = easel_data::open(&recipe.data, recipe.seed)?;
    let n = limit.map_or(data.len(), |l| l.min(data.len()));
    let [c, h, w] = data.shape();
    let names = data.class_names();
    let classes: Vec<String> = match data.num_classes() {
        Some(k) => (0..k)
            .map(|i| {
                let name = names.get(i).map(String::as_str).unwrap_or("");
                class_folder(i, name, k)
            })
            .collect(),
        None => Vec::new(),
    };
    let tmp = crate::checkpoint::temp_sibling(out);
    std::fs::create_dir_all(&tmp).ctx("creating", &tmp)?;
    for d in &classes {
        std::fs::create_dir_all(tmp.join(d)).ctx("creating", tmp.join(d))?;
    }
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(n as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images  {elapsed} < {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let digits = n.saturating_sub(1).to_string().len().max(5);
    let written = (|| -> Result<()> {
        for i in 0..n {
            // aug_seed = the index: random crops (if the recipe has them) are fixed per image.
            let s = data.get(i, i as u64)?;
            let t = Tensor::from_vec(s.pixels, (1, c, h, w), &Device::Cpu)?;
            let g = crate::grid::make_grid(&t, 1, 0, 0)?;
            let folder = match classes.get(s.label as usize) {
                Some(d) => tmp.join(d),
                None if classes.is_empty() => tmp.clone(),
                None => {
                    return Err(TrainError::Run(format!(
                        "image {i} has label {} but the dataset has {} classes",
                        s.label,
                        classes.len()
                    )))
                }
            };
            g.save_png(&folder.join(format!("{i:0digits$}.png")))?;
            bar.inc(1);
        }
        Ok(())
    })();
    bar.finish_and_clear();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).ctx("renaming into", out)?;
    Ok(Exported {
        dir: out.to_path_buf(),
        images: n,
        classes,
        describe: data.describe(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_folders_sort_in_label_order() {
        let names: Vec<String> = (0..12)
            .map(|k| class_folder(k, &format!("c {k}"), 12))
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names[3], "03-c_3");
        assert_eq!(class_folder(7, "", 10), "07");
        assert_eq!(class_folder(7, "7", 10), "07");
        assert_eq!(class_folder(7, "seven/7", 1000), "007-seven_7");
    }
}
