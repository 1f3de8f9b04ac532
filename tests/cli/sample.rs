//! `easel sample`: rebuilds the generator from `final/` alone; the saved z reproduce the grid.

use crate::common::{easel_ok, s};

#[test]
fn sample_from_final_folder_alone_and_z_reproduce_it() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    easel_ok(&[
        "train",
        "recipes/tiny/quickstart.toml",
        "--device",
        "cpu",
        "--run-dir",
        s(&run),
    ]);
    // Copy final/ elsewhere: it must be self-sufficient (recipe beside the weights).
    let moved = d.path().join("moved-final");
    std::fs::create_dir_all(&moved).unwrap();
    for e in std::fs::read_dir(run.join("final")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), moved.join(e.file_name())).unwrap();
    }
    let png = d.path().join("grid.png");
    let out = easel_ok(&[
        "sample",
        s(&moved),
        "--n",
        "10",
        "--seed",
        "7",
        "--device",
        "cpu",
        "--out",
        s(&png),
    ]);
    assert!(out.contains("seed 7"), "{out}");
    let grid = image::open(&png).unwrap().to_rgb8();
    // 10 tiles of 16×16 in 4 columns (ceil √10), 3 rows, padding 2.
    assert_eq!((grid.width(), grid.height()), (4 * 18 + 2, 3 * 18 + 2));
    // Same seed from the run directory: same picture.
    let png2 = d.path().join("grid2.png");
    easel_ok(&[
        "sample",
        s(&run),
        "--n",
        "10",
        "--seed",
        "7",
        "--device",
        "cpu",
        "--out",
        s(&png2),
    ]);
    assert_eq!(
        image::open(&png2).unwrap().to_rgb8().into_raw(),
        grid.clone().into_raw()
    );

    // The z file holds [10, nz] and regenerating tile 5 from its z alone gives that tile exactly.
    let z = candle_core::safetensors::load(
        png.with_extension("z.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let z = &z["z"];
    assert_eq!(z.dims(), [10, 16]);
    let (_, g, mode) =
        easel_train::session::load_generator(&moved, &candle_core::Device::Cpu).unwrap();
    let one = g.generate(&z.narrow(0, 5, 1).unwrap(), None, mode).unwrap();
    let tile = easel_train::grid::make_grid(&one, 1, 0, 0).unwrap();
    let (col, row) = (5 % 4, 5 / 4);
    for y in 0..16u32 {
        for x in 0..16u32 {
            let p = grid.get_pixel(2 + col * 18 + x, 2 + row * 18 + y).0;
            let i = ((y * 16 + x) * 3) as usize;
            assert_eq!(
                p,
                [tile.pixels[i], tile.pixels[i + 1], tile.pixels[i + 2]],
                "pixel ({x},{y})"
            );
        }
    }
}
