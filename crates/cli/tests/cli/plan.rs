//! End-to-end tests of the `combiner` binary.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::common::*;

#[test]
fn every_subcommand_has_help_with_an_example() {
    let cases: [(&[&str], &str); 10] = [
        (&[], "verify, draw and run factorization plans"),
        (&["plan"], "Verify, draw and run factorization plans"),
        (&["plan", "verify"], "full support"),
        (&["plan", "show"], "effective attention"),
        (&["plan", "apply"], "safetensors"),
        (&["table"], "results.md"),
        (&["bench"], "Figure 3"),
        (&["bench", "attention"], "--reference"),
        (&["bench", "report"], "attention.png"),
        (&["bench", "kernel"], "fused joint-softmax kernel"),
    ];
    for (cmd, purpose) in cases {
        let args: Vec<&str> = cmd.iter().copied().chain(["--help"]).collect();
        let help = ok(&args);
        assert!(
            help.contains(purpose),
            "{args:?} --help lacks {purpose:?}:\n{help}"
        );
        assert!(
            help.contains("Example"),
            "{args:?} --help has no example:\n{help}"
        );
        assert!(
            help.contains("--backend"),
            "{args:?} --help lacks --backend"
        );
    }
}

#[test]
fn kernel_check_fails_where_no_fused_kernel_runs() {
    // ndarray has no fused kernel: the check must say so, not pass vacuously
    let out = combiner(&[
        "bench",
        "kernel",
        "--dtype",
        "f32",
        "--plans",
        "fixed",
        "--lengths",
        "19",
        "--head-dim",
        "8",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no fused kernel ran in any of the 2 check(s)"),
        "{err}"
    );
    assert!(stdout(&out).contains("none"), "{}", stdout(&out));
}

#[test]
fn verify_all_plans_pass() {
    let out = ok(&["plan", "verify", "--all", "--growth", "64,256,1024"]);
    // every swept plan in LM and MLM mode
    let n = 2 * combiner::Plan::all().len();
    assert!(
        out.contains(&format!("{n} of {n} plan/mode checks passed")),
        "{out}"
    );
    assert!(
        out.contains("OVERLAPPING"),
        "the joint mixture is reported overlapping:\n{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn verify_rejects_a_config_with_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "kind = \"fixed\"\nblok = 8\n").unwrap();
    let err = fails(&["plan", "verify", "--config", path.to_str().unwrap()]);
    assert!(err.contains("broken.toml"), "{err}");
    assert!(err.contains("blok"), "{err}");
}

#[test]
fn verify_fails_a_broken_plan_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small-grid.toml");
    // A 2x2 grid cannot hold L >= 5: every longer length must be reported.
    std::fs::write(
        &path,
        "kind = \"axial_vertical\"\ngrid = { rows = 2, cols = 2 }\n",
    )
    .unwrap();
    let out = combiner(&[
        "plan",
        "verify",
        "--config",
        path.to_str().unwrap(),
        "--mode",
        "lm",
        "--lengths",
        "3,12",
        "--growth",
        "64,256",
    ]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("FAIL axial-vertical [lm]"));
    assert!(stderr(&out).contains("1 of 1 plan/mode checks failed: axial-vertical [lm]"));
}

fn png_size(path: &Path) -> (u32, u32) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    (info.width, info.height)
}

#[test]
fn show_draws_support_and_attention() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&[
        "plan",
        "show",
        "--plan",
        "fixed",
        "--len",
        "16",
        "--query",
        "9",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    // Blocks of 4: blocks 0 and 1 are spans, the query's block up to 9 is direct.
    assert!(out.contains("aaaabbbb#@......"), "{out}");
    let mut pngs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pngs.sort();
    assert_eq!(pngs.len(), 2, "{pngs:?}");
    for png in &pngs {
        assert!(
            out.contains(&png.display().to_string()),
            "path not printed: {out}"
        );
        // 16 positions at 32 px each
        assert_eq!(png_size(png), (512, 512));
    }
}

#[test]
fn show_lays_axial_plans_on_their_grid() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&[
        "plan",
        "show",
        "--plan",
        "axial-vertical",
        "--len",
        "9",
        "--query",
        "4",
        "--mode",
        "mlm",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    // 3x3 grid, query in the centre: own row and column direct, other columns spans.
    assert!(out.contains("0 | a # b"), "{out}");
    assert!(out.contains("1 | # @ #"), "{out}");
    assert!(out.contains("2 | a # b"), "{out}");
}

/// Deterministic values in [-2, 2).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn write_qkv(path: &Path, shape: [usize; 4], names: &[&str], dtype: Dtype) {
    let n: usize = shape.iter().product();
    let raw: Vec<(String, Vec<u8>)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let v = values(n, i as u64 + 7);
            let bytes = match dtype {
                Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::F64 => v.iter().flat_map(|&x| (x as f64).to_le_bytes()).collect(),
                _ => unreachable!(),
            };
            (name.to_string(), bytes)
        })
        .collect();
    let views: Vec<_> = raw
        .iter()
        .map(|(name, b)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(dtype, shape.to_vec(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn read_f32(file: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = file.tensor(name).unwrap();
    assert_eq!(t.dtype(), Dtype::F32);
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

#[test]
fn apply_matches_the_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("qkv.safetensors");
    let shape = [2, 2, 21, 8];
    write_qkv(&input, shape, &["q", "k", "v"], Dtype::F32);
    for (plan, mode) in [
        ("fixed", "lm"),
        ("logsparse", "mlm"),
        ("mixture", "lm"),
        ("mixture-joint", "lm"),
        ("mixture-joint", "mlm"),
        ("learnable", "mlm"),
    ] {
        let output = dir.path().join(format!("{plan}-{mode}.safetensors"));
        ok(&[
            "plan",
            "apply",
            "--plan",
            plan,
            "--mode",
            mode,
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--oracle",
        ]);
        let bytes = std::fs::read(&output).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let (s_out, out) = read_f32(&file, "out");
        let (s_ref, reference) = read_f32(&file, "oracle");
        assert_eq!(s_out, shape.to_vec());
        assert_eq!(s_ref, shape.to_vec());
        let diff = out
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "{plan} [{mode}]: max |out - oracle| = {diff}");
        assert!(out.iter().all(|x| x.is_finite()));
    }
}

#[test]
fn apply_names_the_file_and_tensor_of_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.safetensors");
    let run = |input: &Path| {
        fails(&[
            "plan",
            "apply",
            "--plan",
            "fixed",
            "--mode",
            "lm",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
    };
    let missing = dir.path().join("missing-v.safetensors");
    write_qkv(&missing, [1, 1, 4, 2], &["q", "k"], Dtype::F32);
    let err = run(&missing);
    assert!(
        err.contains("missing-v.safetensors") && err.contains("no tensor `v`"),
        "{err}"
    );

    let f64s = dir.path().join("f64.safetensors");
    write_qkv(&f64s, [1, 1, 4, 2], &["q", "k", "v"], Dtype::F64);
    let err = run(&f64s);
    assert!(
        err.contains("f64.safetensors") && err.contains("`q` has dtype F64"),
        "{err}"
    );

    let mixed = dir.path().join("mixed.safetensors");
    let n = 4 * 2;
    let raw: Vec<(&str, Vec<usize>, Vec<u8>)> = [
        ("q", vec![1, 1, 4, 2]),
        ("k", vec![1, 1, 2, 4]),
        ("v", vec![1, 1, 4, 2]),
    ]
    .into_iter()
    .map(|(name, s)| {
        (
            name,
            s,
            values(n, 1).iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    })
    .collect();
    let views: Vec<_> = raw
        .iter()
        .map(|(name, s, b)| {
            (
                name.to_string(),
                safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &mixed).unwrap();
    let err = run(&mixed);
    assert!(
        err.contains("mixed.safetensors") && err.contains("`k` has shape [1, 1, 2, 4]"),
        "{err}"
    );

    let err = run(&dir.path().join("absent.safetensors"));
    assert!(err.contains("absent.safetensors"), "{err}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_backend_not_compiled_in_names_its_feature() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&[
        "--backend",
        "cuda",
        "plan",
        "show",
        "--plan",
        "fixed",
        "--len",
        "4",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(err.contains("backend `cuda` is not compiled in"), "{err}");
    assert!(err.contains("--features cuda"), "{err}");
}

/// Writes f32 tensors of the given names and shapes (deterministic values).
fn write_named(path: &Path, tensors: &[(&str, Vec<usize>)]) {
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product();
            let bytes = values(n, i as u64 + 11)
                .iter()
                .flat_map(|x| (x * 0.5).to_le_bytes())
                .collect();
            (name.to_string(), shape.clone(), bytes)
        })
        .collect();
    let views: Vec<_> = raw
        .iter()
        .map(|(name, shape, b)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn learned_inputs(
    b: usize,
    h: usize,
    len: usize,
    d: usize,
    dm: usize,
) -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("q", vec![b, h, len, d]),
        ("k", vec![b, h, len, d]),
        ("v", vec![b, h, len, d]),
        ("x", vec![b, len, dm]),
        ("w0", vec![h, d, dm]),
        ("ln_scale", vec![dm]),
        ("ln_bias", vec![dm]),
        ("w1", vec![dm, h, d]),
    ]
}

#[test]
fn apply_runs_the_learned_row_summary_from_file_weights_and_matches_the_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("qkvxw.safetensors");
    write_named(&input, &learned_inputs(2, 2, 22, 4, 6));
    for mode in ["lm", "mlm"] {
        let output = dir.path().join(format!("learned-{mode}.safetensors"));
        let out = ok(&[
            "plan",
            "apply",
            "--plan",
            "axial-rowmajor-learned",
            "--grid",
            "5x5",
            "--mode",
            mode,
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--oracle",
        ]);
        assert!(out.contains("axial-rowmajor-learned"), "{out}");
        let bytes = std::fs::read(&output).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let (shape, out) = read_f32(&file, "out");
        let (_, reference) = read_f32(&file, "oracle");
        assert_eq!(shape, vec![2, 2, 22, 4]);
        let diff = out
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-5, "[{mode}]: max |out - oracle| = {diff}");
        // the weights are used: the pooled plan on the same q, k, v differs
        let pooled = dir.path().join(format!("pooled-{mode}.safetensors"));
        ok(&[
            "plan",
            "apply",
            "--plan",
            "axial-rowmajor",
            "--grid",
            "5x5",
            "--mode",
            mode,
            "--input",
            input.to_str().unwrap(),
            "--output",
            pooled.to_str().unwrap(),
        ]);
        let bytes = std::fs::read(&pooled).unwrap();
        let (_, p) = read_f32(&SafeTensors::deserialize(&bytes).unwrap(), "out");
        assert!(p.iter().zip(&out).any(|(a, b)| (a - b).abs() > 1e-3));
    }
}

#[test]
fn apply_names_missing_or_misshapen_summary_weights_and_bad_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.safetensors");
    let run = |input: &Path, extra: &[&str]| {
        let mut args = vec![
            "plan",
            "apply",
            "--plan",
            "axial-rowmajor-learned",
            "--mode",
            "lm",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        fails(&args)
    };
    let mut tensors = learned_inputs(1, 2, 9, 3, 4);
    tensors.retain(|(name, _)| *name != "w1");
    let no_w1 = dir.path().join("no-w1.safetensors");
    write_named(&no_w1, &tensors);
    let err = run(&no_w1, &[]);
    assert!(
        err.contains("no-w1.safetensors")
            && err.contains("no tensor `w1`")
            && err.contains("[d_model, heads, d_head]"),
        "{err}"
    );

    let mut tensors = learned_inputs(1, 2, 9, 3, 4);
    tensors[4].1 = vec![2, 4, 3]; // w0 transposed
    let bad_w0 = dir.path().join("bad-w0.safetensors");
    write_named(&bad_w0, &tensors);
    let err = run(&bad_w0, &[]);
    assert!(
        err.contains("bad-w0.safetensors")
            && err.contains("`w0` has shape [2, 4, 3]")
            && err.contains("[2, 3, 4]"),
        "{err}"
    );

    let mut tensors = learned_inputs(1, 2, 9, 3, 4);
    tensors[3].1 = vec![1, 8, 4]; // x one position short
    let bad_x = dir.path().join("bad-x.safetensors");
    write_named(&bad_x, &tensors);
    let err = run(&bad_x, &[]);
    assert!(err.contains("`x` has shape [1, 8, 4]"), "{err}");

    let good = dir.path().join("good.safetensors");
    write_named(&good, &learned_inputs(1, 2, 9, 3, 4));
    let err = run(&good, &["--grid", "2x4"]);
    assert!(
        err.contains("grid 2x4 holds 8 positions but the sequence has 9"),
        "{err}"
    );
    let err = run(&good, &["--grid", "3by3"]);
    assert!(err.contains("ROWSxCOLS"), "{err}");
    let err = run(&good, &["--block-size", "3"]);
    assert!(
        err.contains("--block-size applies to the fixed plan"),
        "{err}"
    );
}
