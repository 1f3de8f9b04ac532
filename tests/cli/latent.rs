//! `easel sample --sheet` and `easel latent`: numbered contact sheets backed by the run's z bank,
//! and interpolation, arithmetic, directions, class sweeps and the classifier check on its ids.

use std::path::{Path, PathBuf};

use candle_core::Device;
use easel_latent::bank::ZBank;
use easel_latent::canvas::Canvas;
use easel_latent::render::Renderer;

use crate::common::{easel, easel_err, easel_ok, s};

fn train(d: &Path, name: &str, recipe: &str, extra: &[&str]) -> PathBuf {
    let run = d.join(name);
    let mut args = vec![
        "train",
        recipe,
        "--device",
        "cpu",
        "--run-dir",
        s(&run),
        "-q",
    ];
    for e in extra {
        args.extend(["--set", e]);
    }
    easel_ok(&args);
    run
}

fn png(path: &Path) -> Canvas {
    let img = image::open(path).unwrap().to_rgb8();
    Canvas {
        width: img.width() as usize,
        height: img.height() as usize,
        pixels: img.into_raw(),
    }
}

/// Renders bank ids (or raw vectors) with the run's final generator.
fn render(run: &Path, zs: &[Vec<f32>], labels: Option<&[u32]>) -> Vec<Canvas> {
    let (_, g, mode) =
        easel_train::session::load_generator(&run.join("final"), &Device::Cpu).unwrap();
    Renderer::new(g.as_ref(), mode, &Device::Cpu)
        .tiles(zs, labels)
        .unwrap()
}

fn bank_z(run: &Path, ids: &[u64]) -> Vec<Vec<f32>> {
    ZBank::open(run)
        .unwrap()
        .get(ids)
        .unwrap()
        .into_iter()
        .map(|e| e.z)
        .collect()
}

/// Whether `tile` appears pixel for pixel somewhere in `c`.
fn contains(c: &Canvas, tile: &Canvas) -> bool {
    (0..=c.height - tile.height)
        .any(|y| (0..=c.width - tile.width).any(|x| c.crop(x, y, tile.width, tile.height) == *tile))
}

fn wrote(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("wrote "))
        .unwrap_or_else(|| panic!("no `wrote` line in {stdout}"));
    PathBuf::from(line[6..].split(" (").next().unwrap())
}

#[test]
fn sheet_ids_reproduce_tiles_and_drive_the_latent_tools() {
    let d = tempfile::tempdir().unwrap();
    let run = train(d.path(), "run", "recipes/tiny/quickstart.toml", &[]);
    let out = easel_ok(&[
        "sample",
        s(&run),
        "--n",
        "12",
        "--seed",
        "3",
        "--sheet",
        "--device",
        "cpu",
    ]);
    assert!(out.contains("z bank ids 0..12"), "{out}");
    let sheet_path = run.join("samples/sheet-s3-n12.png");
    assert!(out.contains(s(&sheet_path)), "{out}");
    let sheet = png(&sheet_path);
    // 12 tiles of 16×16 in 4 columns; under each a 12-pixel band for its id (scale 2).
    assert_eq!(
        (sheet.width, sheet.height),
        (4 * 18 + 2, 3 * (16 + 12 + 2) + 2)
    );
    let origin = |i: usize| (2 + (i % 4) * 18, 2 + (i / 4) * 30);

    // The generator fed the saved z of id 7 alone reproduces tile 7 exactly; ids are printed in
    // the band, never over a tile.
    let z = bank_z(&run, &[0, 4, 7, 11]);
    let tiles = render(&run, &z, None);
    let (x, y) = origin(7);
    assert_eq!(sheet.crop(x, y, 16, 16), tiles[2]);
    assert_ne!(tiles[1], tiles[2]);
    let band = sheet.crop(x, y + 16, 16, 12);
    assert!(
        band.pixels.iter().any(|&p| p > 200),
        "the id is drawn under the tile"
    );
    // The z file beside the sheet holds the same vectors.
    let zf =
        candle_core::safetensors::load(sheet_path.with_extension("z.safetensors"), &Device::Cpu)
            .unwrap();
    let row7: Vec<f32> = zf["z"].get(7).unwrap().to_vec1().unwrap();
    assert_eq!(row7, z[2]);

    // The same draw again keeps its ids; another seed gets new ones.
    let again = easel_ok(&[
        "sample",
        s(&run),
        "--n",
        "12",
        "--seed",
        "3",
        "--sheet",
        "--device",
        "cpu",
    ]);
    assert!(again.contains("z bank ids 0..12"), "{again}");
    let other = easel_ok(&[
        "sample",
        s(&run),
        "--n",
        "12",
        "--seed",
        "4",
        "--device",
        "cpu",
    ]);
    assert!(other.contains("z bank ids 12..24"), "{other}");

    // Interpolation: 5 steps from id 0 to id 11, both ends exactly the sheet's tiles.
    let o = easel_ok(&[
        "latent",
        "interpolate",
        s(&run),
        "--from",
        "0",
        "--to",
        "11",
        "--steps",
        "5",
        "--device",
        "cpu",
    ]);
    let lerp = png(&wrote(&o));
    assert_eq!(lerp.width, 5 * 18 + 2);
    assert_eq!(lerp.crop(2, 2, 16, 16), tiles[0]);
    assert_eq!(lerp.crop(2 + 4 * 18, 2, 16, 16), tiles[3]);
    let o = easel_ok(&[
        "latent",
        "interpolate",
        s(&run),
        "--from",
        "0",
        "--to",
        "11",
        "--steps",
        "5",
        "--slerp",
        "--device",
        "cpu",
    ]);
    let slerp = png(&wrote(&o));
    assert!(o.contains("slerp"), "{o}");
    assert_eq!(slerp.crop(2, 2, 16, 16), tiles[0]);
    assert_ne!(
        slerp.crop(2 + 2 * 18, 2, 16, 16),
        lerp.crop(2 + 2 * 18, 2, 16, 16)
    );

    // Arithmetic: Y = mean(0,1,2) − mean(3,4,5) + mean(6,7,8) is drawn (centre of the 3×3 block).
    let o = easel_ok(&[
        "latent",
        "arith",
        s(&run),
        "--plus",
        "0,1,2",
        "--minus",
        "3,4,5",
        "--plus",
        "6,7,8",
        "--device",
        "cpu",
    ]);
    let fig = png(&wrote(&o));
    let zs = bank_z(&run, &(0..9).collect::<Vec<_>>());
    // Concept means (f64 sums, rounded to f32), then the signed sum (f64, rounded), as the
    // library documents.
    let mean = |r: std::ops::Range<usize>| -> Vec<f32> {
        (0..16)
            .map(|k| (r.clone().map(|i| zs[i][k] as f64).sum::<f64>() / 3.0) as f32)
            .collect()
    };
    let (a, b, c) = (mean(0..3), mean(3..6), mean(6..9));
    let yv: Vec<f32> = (0..16)
        .map(|k| (a[k] as f64 - b[k] as f64 + c[k] as f64) as f32)
        .collect();
    let y_tile = render(&run, &[yv], None).remove(0);
    assert!(contains(&fig, &y_tile), "Y is in the arithmetic figure");
    assert!(contains(&fig, &tiles[0]), "exemplar id 0 is beside it");
    // Jitter 0: Y alone, a narrower figure.
    let o = easel_ok(&[
        "latent",
        "arith",
        s(&run),
        "--plus",
        "0,1,2",
        "--minus",
        "3,4,5",
        "--plus",
        "6,7,8",
        "--jitter",
        "0",
        "--device",
        "cpu",
        "--out",
        s(&d.path().join("y.png")),
    ]);
    assert!(png(&wrote(&o)).width < fig.width);

    // Direction: the walk starts exactly at the applied id.
    let o = easel_ok(&[
        "latent",
        "direction",
        s(&run),
        "--pos",
        "0,1",
        "--neg",
        "2,3",
        "--apply",
        "4",
        "--steps",
        "5",
        "--device",
        "cpu",
    ]);
    let dir = png(&wrote(&o));
    assert!(contains(&dir, &tiles[1]), "walk starts at id 4");

    // Clear errors.
    let e = easel_err(&[
        "latent",
        "arith",
        s(&run),
        "--plus",
        "0,1,99",
        "--device",
        "cpu",
    ]);
    assert!(
        e.contains("id 99") && e.contains("0..24") && e.contains("sheet-s3-n12.png"),
        "{e}"
    );
    let e = easel_err(&[
        "latent",
        "arith",
        s(&run),
        "--plus",
        "1,x",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("`x` is not an id"), "{e}");
    let e = easel_err(&[
        "latent",
        "interpolate",
        s(&run),
        "--from",
        "0",
        "--to",
        "1",
        "--steps",
        "1",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("at least 2"), "{e}");
    let e = easel_err(&[
        "latent",
        "interpolate",
        s(&run),
        "--from",
        "0,1",
        "--to",
        "2,3,4",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("--from has 2 ids but --to has 3"), "{e}");
    let e = easel_err(&[
        "latent",
        "interpolate",
        s(&run),
        "--from",
        "0",
        "--to",
        "1",
        "--class",
        "2",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("unconditional"), "{e}");
    let e = easel_err(&[
        "latent",
        "classes",
        s(&run),
        "--ids",
        "0",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("unconditional"), "{e}");
    let e = easel_err(&[
        "latent",
        "direction",
        s(&run),
        "--pos",
        "0",
        "--neg",
        "1",
        "--apply",
        "2",
        "--span",
        "1",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("LO,HI"), "{e}");

    // A run without a z bank, and z of the wrong size for a generator.
    let bare = train(
        d.path(),
        "bare",
        "recipes/tiny/quickstart.toml",
        &["model.nz=8"],
    );
    let e = easel_err(&[
        "latent",
        "interpolate",
        s(&bare),
        "--from",
        "0",
        "--to",
        "1",
        "--device",
        "cpu",
    ]);
    assert!(
        e.contains("no z bank") && e.contains("easel sample") && e.contains("--sheet"),
        "{e}"
    );
    let e = easel_err(&[
        "latent",
        "interpolate",
        s(&run),
        "--from",
        "0",
        "--to",
        "1",
        "--model",
        s(&bare),
        "--device",
        "cpu",
    ]);
    assert!(
        e.contains("wrong z size") && e.contains("size 16") && e.contains("size 8"),
        "{e}"
    );
}

#[test]
fn conditional_class_sweeps_and_class_checks() {
    let d = tempfile::tempdir().unwrap();
    let run = train(d.path(), "cgan", "recipes/tiny/cgan-shapes.toml", &[]);
    // A class grid: 6 classes × 2 columns, each row one class with the same z per column.
    let out = easel_ok(&[
        "sample",
        s(&run),
        "--n",
        "12",
        "--seed",
        "1",
        "--sheet",
        "--device",
        "cpu",
    ]);
    assert!(out.contains("z bank ids 0..12"), "{out}");
    let bank = ZBank::open(&run).unwrap();
    let e = bank.get(&[0, 1, 2, 3]).unwrap();
    assert_eq!(
        e.iter().map(|x| x.label).collect::<Vec<_>>(),
        vec![Some(0), Some(0), Some(1), Some(1)]
    );
    assert_eq!(e[0].z, e[2].z, "same z in a column across classes");

    let o = easel_ok(&[
        "latent",
        "classes",
        s(&run),
        "--ids",
        "0,1",
        "--classes",
        "0,3,5",
        "--device",
        "cpu",
    ]);
    let fig = png(&wrote(&o));
    let z0 = e[0].z.clone();
    let want = render(
        &run,
        &[z0.clone(), z0.clone(), e[1].z.clone()],
        Some(&[3, 0, 5]),
    );
    assert!(contains(&fig, &want[0]), "id 0's z as class 3");
    assert!(contains(&fig, &want[2]), "id 1's z as class 5");
    // Class 0 of id 0 is the sheet's first tile.
    let sheet = png(&run.join("samples/sheet-s1-n12.png"));
    assert_eq!(sheet.crop(2, 2, 16, 16), want[1]);
    assert_ne!(want[0], want[1], "the class changes the image");

    // Ids drawn with different classes need --class.
    let e = easel_err(&[
        "latent",
        "interpolate",
        s(&run),
        "--from",
        "0",
        "--to",
        "3",
        "--device",
        "cpu",
    ]);
    assert!(
        e.contains("id 0 (class 0)") && e.contains("id 3 (class 1)") && e.contains("--class"),
        "{e}"
    );
    easel_ok(&[
        "latent",
        "interpolate",
        s(&run),
        "--from",
        "0",
        "--to",
        "3",
        "--class",
        "4",
        "--steps",
        "3",
        "--device",
        "cpu",
    ]);
    let e = easel_err(&[
        "latent",
        "classes",
        s(&run),
        "--ids",
        "0",
        "--classes",
        "6",
        "--device",
        "cpu",
    ]);
    assert!(e.contains("class 6 is out of range"), "{e}");
}

#[test]
fn classifier_check_reports_rates_against_chance() {
    let d = tempfile::tempdir().unwrap();
    let run = train(d.path(), "gan", "recipes/tiny/quickstart.toml", &[]);
    let cls = train(d.path(), "cls", "recipes/tiny/classifier-shapes.toml", &[]);
    let base = |plus: &str, expect: &str, out: &Path| -> Vec<String> {
        [
            "latent",
            "check",
            s(&run),
            "--classifier",
            s(&cls),
            "--plus",
            plus,
            "--expect",
            expect,
            "--pool",
            "48",
            "--trials",
            "3",
            "--per-concept",
            "1",
            "--min-confidence",
            "0",
            "--device",
            "cpu",
            "--out",
            s(out),
        ]
        .map(String::from)
        .to_vec()
    };
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let out = d.path().join("check.png");
    // Unknown class names list the classifier's classes.
    let e = easel_err(&refs(&base("purple-blob", "red-circle", &out)));
    assert!(
        e.contains("`purple-blob`") && e.contains("blue-circle"),
        "{e}"
    );
    // Find a class the (barely trained) classifier gives the pool: an error names the common
    // ones when the asked-for class has too few exemplars.
    let first = easel(&refs(&base("red-circle", "red-circle", &out)));
    let name = if first.status.success() {
        "red-circle".to_string()
    } else {
        let e = String::from_utf8_lossy(&first.stderr).into_owned();
        let tail = e
            .split("most frequent classes: ")
            .nth(1)
            .unwrap_or_else(|| panic!("{e}"));
        tail.split(" (").next().unwrap().to_string()
    };
    // "+ one exemplar of C" is that exemplar itself, so Y must be classified C every time.
    let o = easel_ok(&refs(&base(&name, &name, &out)));
    assert!(
        o.contains(&format!("classified {name} in 3/3 trials")),
        "{o}"
    );
    assert!(o.contains("uniform 1/48"), "{o}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(report["hits"], 3);
    assert_eq!(report["rate"], 1.0);
    assert_eq!(report["trial_list"].as_array().unwrap().len(), 3);
    let pool = report["pool_ids"].as_array().unwrap();
    let (lo, hi) = (pool[0].as_u64().unwrap(), pool[1].as_u64().unwrap());
    assert_eq!(hi - lo, 48);
    for t in report["trial_list"].as_array().unwrap() {
        assert_eq!(t["predicted"], name.as_str());
        let id = t["exemplars"][0][0].as_u64().unwrap();
        assert!((lo..hi).contains(&id));
    }
    assert!(png(&out).height > 3 * 16);
    // The pool went into the bank, so its ids work with the other tools.
    easel_ok(&[
        "latent",
        "interpolate",
        s(&run),
        "--from",
        &lo.to_string(),
        "--to",
        &(hi - 1).to_string(),
        "--steps",
        "3",
        "--device",
        "cpu",
    ]);
}

#[test]
fn lapgan_sheets_caption_the_final_level_and_its_z_drive_the_tools() {
    let d = tempfile::tempdir().unwrap();
    let mnist = d.path().join("mnist");
    crate::errors::write_mnist(&mnist, 48);
    let data = format!("data.dir=\"{}\"", s(&mnist));
    let run = train(d.path(), "lap", "recipes/tiny/lapgan-mnist.toml", &[&data]);
    let out = easel_ok(&[
        "sample",
        s(&run),
        "--n",
        "4",
        "--seed",
        "2",
        "--sheet",
        "--device",
        "cpu",
    ]);
    assert!(out.contains("z bank ids 0..4"), "{out}");
    // One row per image: its 8, 16 and 32 pixel levels (shown at 32×32); the id under the last.
    let sheet = png(&run.join("samples/sheet-s2-n4.png"));
    assert_eq!(
        (sheet.width, sheet.height),
        (3 * 34 + 2, 4 * (32 + 12 + 2) + 2)
    );
    let z = bank_z(&run, &[2]);
    let final_image = render(&run, &z, None).remove(0);
    let (x, y) = (2 + 2 * 34, 2 + 2 * 46);
    assert_eq!(sheet.crop(x, y, 32, 32), final_image);
    assert!(sheet
        .crop(x, y + 32, 32, 12)
        .pixels
        .iter()
        .any(|&p| p > 200));
    assert!(
        sheet.crop(2, y + 32, 32, 12).pixels.iter().all(|&p| p == 0),
        "no id under level 0"
    );
    let o = easel_ok(&[
        "latent",
        "interpolate",
        s(&run),
        "--from",
        "0",
        "--to",
        "3",
        "--steps",
        "4",
        "--slerp",
        "--device",
        "cpu",
    ]);
    let fig = png(&wrote(&o));
    assert_eq!(
        fig.crop(2 + 3 * 34, 2, 32, 32),
        render(&run, &bank_z(&run, &[3]), None)[0]
    );
}
