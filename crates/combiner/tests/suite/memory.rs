//! The efficient path never builds an `L x L` tensor: Combiner-Fixed at
//! L = 16384, forward and backward, peaks below the size of ONE dense f32
//! score matrix (1 GiB), which dense attention must hold several times over.
//!
//! The run happens in a child process so that the peak resident set
//! (`VmHWM`) measures it alone.

use std::process::Command;

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn_ndarray::NdArray;
use combiner::{AbstractionKind, Mode, Plan};

const LEN: usize = 16384;
const PROBE: &str = "COMBINER_MEMORY_PROBE";

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
#[ignore = "child process of fixed_attention_at_16k_peaks_below_one_dense_score_matrix"]
fn memory_probe() {
    if std::env::var(PROBE).is_err() {
        return;
    }
    type B = Autodiff<NdArray<f32>>;
    let dev = Default::default();
    let abs = AbstractionKind::Max.init::<B>(32, &dev);
    let r = || {
        Tensor::<B, 4>::random([1, 1, LEN, 32], Distribution::Normal(0.0, 1.0), &dev).require_grad()
    };
    let (q, k, v) = (r(), r(), r());
    let out = combiner::plan_attention(
        q.clone(),
        k,
        v,
        &Plan::Fixed { block: None },
        Mode::Lm,
        &abs,
        None,
    )
    .unwrap();
    let grads = out.sum().backward();
    let g = q.grad(&grads).unwrap();
    assert_eq!(g.dims(), [1, 1, LEN, 32]);
    println!("PEAK_RSS_BYTES={}", peak_rss_bytes());
}

#[test]
fn fixed_attention_at_16k_peaks_below_one_dense_score_matrix() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args([
            "--exact",
            "memory::memory_probe",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE, "1")
        .output()
        .expect("spawn the probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak: u64 = stdout
        .lines()
        .find_map(|l| l.split_once("PEAK_RSS_BYTES=").map(|(_, n)| n))
        .unwrap_or_else(|| panic!("probe printed no peak:\n{stdout}"))
        .trim()
        .parse()
        .unwrap();
    let dense_scores = (LEN * LEN * 4) as u64;
    eprintln!(
        "Combiner-Fixed L={LEN} fwd+bwd peak RSS {} MiB; one dense score matrix {} MiB",
        peak >> 20,
        dense_scores >> 20
    );
    assert!(
        peak < dense_scores,
        "peak {peak} B >= dense score matrix {dense_scores} B"
    );
}
