//! Opens a dataset and writes an 8×8 grid of its first shuffled batch.
//!
//! ```text
//! cargo run -p easel-data --example preview -- SOURCE [DIR|-] [IMAGE_SIZE] [OUT.png] [SPLIT]
//! cargo run -p easel-data --example preview -- shapes - 32 /tmp/shapes32.png
//! cargo run -p easel-data --example preview -- mnist ../shared/data/mnist 32 /tmp/mnist.png test
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use easel_data::{open, DataConfig, Loader, Source, Split};

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    let source: Source = parse_source(arg(0).unwrap_or("shapes"))?;
    let mut cfg = DataConfig {
        source,
        ..DataConfig::default()
    };
    if let Some(d) = arg(1).filter(|d| *d != "-") {
        cfg.dir = Some(PathBuf::from(d));
    }
    if let Some(s) = arg(2) {
        cfg.image_size = s.parse()?;
    }
    let out = PathBuf::from(arg(3).unwrap_or("preview.png"));
    if arg(4) == Some("test") {
        cfg.split = Split::Test;
    }
    let t = std::time::Instant::now();
    let ds = open(&cfg, 0)?;
    println!("{} (opened in {:.2?})", ds.describe(), t.elapsed());
    println!("classes: {:?}", ds.class_names());
    let mut loader = Loader::new(ds.clone(), 64, 0, true, 0, 2)?;
    let t = std::time::Instant::now();
    let b = loader.next_batch()?;
    println!("first batch {:?} in {:.2?}", b.shape, t.elapsed());
    let [n, c, h, w] = b.shape;
    let (cols, pad) = (8usize, 2usize);
    let rows = n.div_ceil(cols);
    let (gw, gh) = (cols * (w + pad) + pad, rows * (h + pad) + pad);
    let mut grid = image::RgbImage::from_pixel(gw as u32, gh as u32, image::Rgb([128, 128, 128]));
    for i in 0..n {
        let (ox, oy) = (pad + (i % cols) * (w + pad), pad + (i / cols) * (h + pad));
        for y in 0..h {
            for x in 0..w {
                let v = |ch: usize| {
                    let ch = ch.min(c - 1);
                    let f = b.pixels[((i * c + ch) * h + y) * w + x];
                    ((f + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
                };
                grid.put_pixel(
                    (ox + x) as u32,
                    (oy + y) as u32,
                    image::Rgb([v(0), v(1), v(2)]),
                );
            }
        }
    }
    grid.save(&out)?;
    println!("labels: {:?}", b.labels);
    println!("wrote {}", out.display());
    Ok(())
}

/// Parses a source name the way a recipe spells it.
fn parse_source(s: &str) -> Result<Source, String> {
    Ok(match s {
        "shapes" => Source::Shapes,
        "mnist" => Source::Mnist,
        "fashion-mnist" => Source::FashionMnist,
        "cifar10" => Source::Cifar10,
        "folder" => Source::Folder,
        other => {
            return Err(format!(
                "unknown source {other:?}: use shapes, mnist, fashion-mnist, cifar10 or folder"
            ))
        }
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
