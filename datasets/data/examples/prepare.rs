//! Prepares a shipped dataset and prints its statistics.
//!
//! ```text
//! cargo run --release -p combiner-data --example prepare -- cifar10 ../shared/data/cifar10-jpeg.tar.xz [DATA_DIR]
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use combiner_data::{data_dir, prepare, show_stats, verify, DatasetName};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, from, rest @ ..] = args.as_slice() else {
        eprintln!(
            "usage: prepare <dataset> <archive> [data dir]; datasets: {}",
            DatasetName::ALL.map(|d| d.as_str()).join(", ")
        );
        std::process::exit(2);
    };
    let name: DatasetName = name.parse()?;
    let data = data_dir(rest.first().map(PathBuf::from).as_deref());
    let start = Instant::now();
    let mut last = 0;
    let dir = prepare(name, from.as_ref(), &data, |done, total| {
        let pct = done * 100 / total.max(1);
        if pct != last {
            last = pct;
            eprint!("\r{name}: {pct:3}%");
            let _ = std::io::stderr().flush();
        }
    })?;
    eprintln!(
        "\r{name}: prepared in {:.1} s -> {}",
        start.elapsed().as_secs_f64(),
        dir.display()
    );
    print!(
        "{}",
        show_stats(name, &data, Some(&data.join(format!("{name}-grid.png"))))?
    );
    print!("{}", verify(&data)?);
    Ok(())
}
