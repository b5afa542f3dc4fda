//! Forward + backward time of Combiner-Fixed, Combiner-Axial (row-major and
//! vertical) and dense attention on the CPU backend at L = 1k, 4k, 16k.
//!
//! `cargo bench -p combiner --bench attention` (set `COMBINER_BENCH_LENGTHS=1024,4096`
//! to choose lengths, `COMBINER_BENCH_REPEATS=n` for repeats). One head of
//! width 64, batch 1, so that dense attention at 16k fits in memory.

use std::time::Instant;

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn_ndarray::NdArray;
use combiner::{dense_attention, plan_attention, AbstractionKind, Mode, Plan};

type B = Autodiff<NdArray<f32>>;

fn main() {
    let lengths: Vec<usize> = std::env::var("COMBINER_BENCH_LENGTHS")
        .ok()
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().parse().expect("length"))
                .collect()
        })
        .unwrap_or_else(|| vec![1024, 4096, 16384]);
    let repeats: usize = std::env::var("COMBINER_BENCH_REPEATS")
        .ok()
        .map(|s| s.parse().expect("repeats"))
        .unwrap_or(3);
    let dev = Default::default();
    B::seed(&dev, 0);
    let d = 64;
    let abs = AbstractionKind::Max.init::<B>(d, &dev);
    let plans = [
        ("combiner-fixed", Some(Plan::Fixed { block: None })),
        (
            "combiner-axial-rowmajor",
            Some(Plan::from_name("axial-rowmajor").expect("known plan")),
        ),
        (
            "combiner-axial-vertical",
            Some(Plan::AxialVertical { grid: None }),
        ),
        ("dense", None),
    ];
    println!("# forward+backward, CPU (burn-ndarray), batch 1, 1 head, d_head {d}, LM mode; median of {repeats}");
    println!(
        "{:>7} {:<26} {:>12} {:>10}",
        "L", "attention", "ms", "vs dense"
    );
    for &len in &lengths {
        let mut rows = Vec::new();
        for (name, plan) in &plans {
            let mut times = Vec::new();
            for rep in 0..=repeats {
                let r = || {
                    Tensor::<B, 4>::random([1, 1, len, d], Distribution::Normal(0.0, 1.0), &dev)
                        .require_grad()
                };
                let (q, k, v) = (r(), r(), r());
                let start = Instant::now();
                let out = match plan {
                    Some(p) => {
                        plan_attention(q.clone(), k.clone(), v.clone(), p, Mode::Lm, &abs, None)
                            .unwrap()
                    }
                    None => dense_attention(q.clone(), k.clone(), v.clone(), Mode::Lm),
                };
                let grads = out.sum().backward();
                let g = q.grad(&grads).unwrap();
                let _: f32 = g.sum().into_scalar().elem();
                if rep > 0 {
                    // the first run warms caches and allocators
                    times.push(start.elapsed().as_secs_f64() * 1e3);
                }
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            rows.push((*name, times[times.len() / 2]));
        }
        let dense = rows.last().unwrap().1;
        for (name, ms) in rows {
            println!("{len:>7} {name:<26} {ms:>12.1} {:>9.2}x", dense / ms);
        }
    }
}
