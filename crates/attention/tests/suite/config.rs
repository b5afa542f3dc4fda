//! Every attention is constructible from a TOML table; unknown fields are
//! rejected; configs round-trip.

use burn::prelude::*;
use burn::tensor::Distribution;
use combiner::Mode;
use combiner_attention::*;

use crate::common::*;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Model {
    attention: AttentionConfig,
}

const TABLES: &[&str] = &[
    r#"kind = "vanilla""#,
    r#"kind = "combiner"
plan = { kind = "fixed", block = 4 }"#,
    r#"kind = "sparse_fixed"
block = 5
summary = 2"#,
    r#"kind = "sparse_strided""#,
    r#"kind = "logsparse""#,
    r#"kind = "axial"
grid = { rows = 4, cols = 4 }"#,
    r#"kind = "local"
window = 4"#,
    r#"kind = "routing"
clusters = 3"#,
    r#"kind = "reformer"
bucket_size = 4
n_hashes = 3"#,
    r#"kind = "performer"
features = 16
orthogonal = false"#,
    r#"kind = "linear_transformer""#,
    r#"kind = "linformer"
max_len = 16
k = 4"#,
    r#"kind = "bigbird"
block = 4
random_blocks = 1"#,
    r#"kind = "longformer"
window = 2
global = [0, 3]"#,
    r#"kind = "sinkhorn"
block = 4"#,
    r#"kind = "synthesizer"
synthesis = "random"
max_len = 16"#,
];

#[test]
fn every_attention_builds_from_a_toml_table() {
    let dev = Default::default();
    let mut kinds = std::collections::HashSet::new();
    for table in TABLES {
        let model: Model = toml::from_str(&format!("[attention]\n{table}"))
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        let cfg = model.attention;
        kinds.insert(std::mem::discriminant(&cfg));
        // round trip
        let text = toml::to_string(&cfg).unwrap();
        let back: AttentionConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(back, cfg);
        for mode in modes(&cfg) {
            let a = cfg.init::<B>(16, 2, mode, 0.1, &dev);
            let x = Tensor::<B, 3>::random([1, 16, 16], Distribution::Normal(0.0, 1.0), &dev);
            assert_eq!(a.forward(x).dims(), [1, 16, 16], "{}", cfg.name());
        }
    }
    assert_eq!(kinds.len(), 16, "one table per variant");
}

#[test]
fn defaults_fill_omitted_fields() {
    let cfg: AttentionConfig = toml::from_str(r#"kind = "local""#).unwrap();
    assert_eq!(cfg, AttentionConfig::Local(LocalConfig::default()));
    let cfg: AttentionConfig = toml::from_str("kind = \"performer\"\nseed = 3").unwrap();
    assert_eq!(
        cfg,
        AttentionConfig::Performer(PerformerConfig {
            seed: 3,
            ..Default::default()
        })
    );
}

#[test]
fn typos_are_rejected() {
    for table in TABLES {
        let bad = format!("{table}\nwindw = 3");
        let err = toml::from_str::<AttentionConfig>(&bad).expect_err(&bad);
        assert!(err.to_string().contains("windw"), "{bad}: {err}");
    }
    assert!(toml::from_str::<AttentionConfig>(r#"kind = "lokal""#).is_err());
}

#[test]
fn bad_hyperparameters_are_errors_not_panics() {
    let dev = Default::default();
    let bad = [
        AttentionConfig::Local(LocalConfig { window: 0 }),
        AttentionConfig::BigBird(BigBirdConfig {
            window_blocks: 2,
            ..Default::default()
        }),
        AttentionConfig::Reformer(ReformerConfig {
            n_buckets: Some(3),
            ..Default::default()
        }),
        AttentionConfig::Sinkhorn(SinkhornConfig {
            temperature: 0.0,
            ..Default::default()
        }),
        AttentionConfig::Vanilla,
    ];
    for cfg in bad {
        let mode = Mode::Mlm;
        let heads = if cfg == AttentionConfig::Vanilla {
            3
        } else {
            2
        };
        assert!(
            cfg.try_init::<B>(16, heads, mode, 0.0, &dev).is_err(),
            "{}",
            cfg.name()
        );
    }
}

#[test]
fn learned_row_summary_refuses_a_learned_abstraction() {
    let cfg: AttentionConfig = toml::from_str(
        "kind = \"combiner\"\nabstraction = \"deep_sets_max\"\n\
         plan = { kind = \"axial_rowmajor\", summary = \"learned\" }\n",
    )
    .unwrap();
    let err = cfg.validate(Mode::Lm).unwrap_err().to_string();
    assert!(err.contains("learned row summary"), "{err}");
    let ok: AttentionConfig = toml::from_str(
        "kind = \"combiner\"\nplan = { kind = \"axial_rowmajor\", summary = \"learned\" }\n",
    )
    .unwrap();
    assert!(ok.validate(Mode::Mlm).is_ok());
    let err = toml::from_str::<AttentionConfig>(
        "kind = \"combiner\"\nplan = { kind = \"axial_rowmajor\", summary = \"learnt\" }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("learnt"), "{err}");
}
