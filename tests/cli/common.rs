//! Helpers: run the binary from the workspace root, read metrics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (where `recipes/` lives).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `easel ARGS…` run from the workspace root.
pub fn easel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_easel"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("easel runs")
}

/// Like [`easel`] but asserts success and returns stdout.
pub fn easel_ok(args: &[&str]) -> String {
    let out = easel(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "easel {args:?} failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// Like [`easel`] but asserts failure and returns stderr.
pub fn easel_err(args: &[&str]) -> String {
    let out = easel(args);
    assert!(
        !out.status.success(),
        "easel {args:?} unexpectedly succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `(step, loss_d, loss_g)` per line of metrics.jsonl.
pub fn losses(run: &Path) -> Vec<(u64, f64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap(),
                v["loss_d"].as_f64().unwrap(),
                v["loss_g"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// A path string for args.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
