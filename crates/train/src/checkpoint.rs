//! Checkpoints: a directory per save, written atomically.
//!
//! A checkpoint directory holds `<network>.safetensors` per network (PyTorch `state_dict` names),
//! `optimizer.safetensors`, `state.json` (step, data position, RNG) and `recipe.toml` (the resolved
//! recipe). It is first written under a hidden temporary name and fsynced, then renamed into place,
//! so a crash or a failed write never leaves a half-written checkpoint under a real name and
//! never damages an earlier one. Readers ignore hidden (`.`-prefixed) directories.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, TrainError};
use crate::rng::StepRng;

/// File names inside a checkpoint directory.
pub const STATE_FILE: &str = "state.json";
/// The resolved recipe inside a checkpoint or `final/`.
pub const RECIPE_FILE: &str = "recipe.toml";
/// Optimiser (and other step) state.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// What `state.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// Completed training steps.
    pub step: u64,
    /// Batches drawn from the loader so far (resume restarts the data stream here).
    pub batches: u64,
    /// The step RNG's state after `step` steps.
    pub rng: StepRng,
    /// Wall-clock seconds spent training so far, over all sessions.
    pub train_seconds: f64,
    /// The model kind (`dcgan`, …).
    pub kind: String,
    /// Network names saved beside this file.
    pub networks: Vec<String>,
    /// easel's version that wrote it.
    pub easel_version: String,
}

/// A path next to `path` for a temporary file (hidden, with the process id).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically: temporary sibling, fsync, rename.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_sibling(path);
    let mut f = fs::File::create(&tmp).ctx("creating", &tmp)?;
    f.write_all(bytes).ctx("writing", &tmp)?;
    f.sync_all().ctx("syncing", &tmp)?;
    drop(f);
    fs::rename(&tmp, path).ctx("renaming into", path)
}

/// Creates directory `target` atomically: `fill` writes the contents into a hidden temporary
/// directory, which is fsynced and renamed to `target` only if `fill` succeeded. An existing
/// `target` is replaced (moved aside, then removed) only after the new one is complete.
pub fn write_dir_atomically(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_sibling(target);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).ctx("removing stale", &tmp)?;
    }
    fs::create_dir_all(&tmp).ctx("creating", &tmp)?;
    let filled = fill(&tmp).and_then(|()| sync_dir_contents(&tmp));
    if let Err(e) = filled {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if target.exists() {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let old = target.with_file_name(format!(".{name}.old-{}", std::process::id()));
        fs::rename(target, &old).ctx("moving aside", target)?;
        fs::rename(&tmp, target).ctx("renaming into", target)?;
        fs::remove_dir_all(&old).ctx("removing", &old)?;
    } else {
        fs::rename(&tmp, target).ctx("renaming into", target)?;
    }
    if let Some(parent) = target.parent() {
        // Make the rename durable; not every platform can open a directory, so ignore failure.
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn sync_dir_contents(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).ctx("listing", dir)? {
        let entry = entry.ctx("listing", dir)?;
        if entry.file_type().ctx("inspecting", entry.path())?.is_file() {
            fs::File::open(entry.path())
                .and_then(|f| f.sync_all())
                .ctx("syncing", entry.path())?;
        }
    }
    Ok(())
}

/// Saves named tensors as safetensors at `path` (inside a directory being written atomically).
pub fn save_tensors(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    candle_core::safetensors::save(&map, path)
        .map_err(|e| TrainError::Run(format!("writing {}: {e}", path.display())))
}

/// Loads `<dir>/<network>.safetensors` into `store` (every name and shape checked; errors name
/// the file). The one way `sample`, `stylize`, `upscale` and `eval` rebuild a trained network.
pub fn load_network(
    dir: &Path,
    network: &str,
    store: &easel_nn::ParamStore,
    device: &Device,
) -> Result<()> {
    let path = dir.join(format!("{network}.safetensors"));
    let tensors = load_tensors(&path, device)?;
    store
        .load_tensors(&tensors)
        .map_err(|e| TrainError::Run(format!("loading {}: {e}", path.display())))
}

/// [`load_network`], then the store's tensors detached from their variables, for building a
/// network that only runs inference (it then records no autograd graph).
pub fn load_for_inference(
    dir: &Path,
    network: &str,
    store: &easel_nn::ParamStore,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    load_network(dir, network, store, device)?;
    Ok(store
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.detach()))
        .collect())
}

/// Loads a safetensors file onto `device`, naming the file in errors.
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(TrainError::Run(format!(
            "checkpoint file missing: {}",
            path.display()
        )));
    }
    candle_core::safetensors::load(path, device)
        .map_err(|e| TrainError::Run(format!("reading {}: {e}", path.display())))
}

/// Reads and parses `state.json` in `dir`.
pub fn read_state(dir: &Path) -> Result<TrainState> {
    let p = dir.join(STATE_FILE);
    let text = fs::read_to_string(&p).ctx("reading", &p)?;
    serde_json::from_str(&text).map_err(|e| {
        TrainError::Run(format!(
            "{}: not a valid checkpoint state: {e}",
            p.display()
        ))
    })
}

/// Directory name for the checkpoint after `step` steps.
pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Complete checkpoints under `dir` (`step-NNNNNNNN` with a readable `state.json`), oldest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(out);
    };
    for entry in entries {
        let entry = entry.ctx("listing", dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(num) = name.strip_prefix("step-") else {
            continue;
        };
        let Ok(step) = num.parse::<u64>() else {
            continue;
        };
        let path = entry.path();
        if read_state(&path).map(|s| s.step == step).unwrap_or(false) {
            out.push((step, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Removes all but the newest `keep` checkpoints under `dir`.
pub fn prune(dir: &Path, keep: usize) -> Result<()> {
    let all = list(dir)?;
    if all.len() > keep {
        for (_, path) in &all[..all.len() - keep] {
            fs::remove_dir_all(path).ctx("removing old checkpoint", path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> TrainState {
        TrainState {
            step,
            batches: step,
            rng: StepRng::new(0, "t"),
            train_seconds: 0.0,
            kind: "test".into(),
            networks: vec![],
            easel_version: "0".into(),
        }
    }

    fn write_ckpt(dir: &Path, step: u64, payload: &str) -> Result<()> {
        write_dir_atomically(&dir.join(step_dir_name(step)), |tmp| {
            fs::write(tmp.join("payload"), payload).ctx("writing", tmp)?;
            fs::write(
                tmp.join(STATE_FILE),
                serde_json::to_string(&state(step)).unwrap(),
            )
            .ctx("writing", tmp)
        })
    }

    #[test]
    fn failed_write_never_replaces_a_good_checkpoint() {
        let d = tempfile::tempdir().unwrap();
        write_ckpt(d.path(), 5, "good").unwrap();
        // A write that dies half-way (a truncated file, then an error) must leave step 5 intact
        // and must not create a visible step-6.
        let target = d.path().join(step_dir_name(5));
        let r = write_dir_atomically(&target, |tmp| {
            fs::write(tmp.join("payload"), "trunc").unwrap();
            Err(TrainError::Run("disk full".into()))
        });
        assert!(r.is_err());
        assert_eq!(fs::read_to_string(target.join("payload")).unwrap(), "good");
        let r = write_dir_atomically(&d.path().join(step_dir_name(6)), |tmp| {
            fs::write(tmp.join("payload"), "tr").unwrap();
            Err(TrainError::Run("killed".into()))
        });
        assert!(r.is_err());
        assert_eq!(
            list(d.path())
                .unwrap()
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>(),
            [5]
        );
        // No temporary directories are left behind.
        let names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["step-00000005"]);
    }

    #[test]
    fn a_leftover_temp_dir_from_a_crash_is_ignored_and_replacement_works() {
        let d = tempfile::tempdir().unwrap();
        write_ckpt(d.path(), 1, "a").unwrap();
        // Simulate a crash mid-write: a hidden temp dir with a truncated state file.
        let crashed = d.path().join(".step-00000002.tmp-999");
        fs::create_dir_all(&crashed).unwrap();
        fs::write(crashed.join(STATE_FILE), "{\"step\": 2, \"batc").unwrap();
        // And a visible dir whose state.json is truncated (e.g. written by another tool) is not complete.
        let broken = d.path().join(step_dir_name(3));
        fs::create_dir_all(&broken).unwrap();
        fs::write(broken.join(STATE_FILE), "{").unwrap();
        assert_eq!(
            list(d.path())
                .unwrap()
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>(),
            [1]
        );
        // Replacing an existing directory swaps in the new content.
        write_ckpt(d.path(), 1, "b").unwrap();
        assert_eq!(
            fs::read_to_string(d.path().join(step_dir_name(1)).join("payload")).unwrap(),
            "b"
        );
    }

    #[test]
    fn prune_keeps_the_newest() {
        let d = tempfile::tempdir().unwrap();
        for s in [10, 20, 30, 40] {
            write_ckpt(d.path(), s, "x").unwrap();
        }
        prune(d.path(), 2).unwrap();
        assert_eq!(
            list(d.path())
                .unwrap()
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>(),
            [30, 40]
        );
    }

    #[test]
    fn atomic_file_write() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.txt");
        write_file_atomically(&p, b"one").unwrap();
        write_file_atomically(&p, b"two").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
