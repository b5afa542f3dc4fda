//! BERT-style masking for masked-language-model training.

use rand::Rng;

/// Masking settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MlmConfig {
    /// Fraction of eligible positions chosen for prediction (BERT: 0.15).
    pub mask_prob: f64,
    /// Id written at 80% of the chosen positions.
    pub mask_id: u32,
    /// Ids below this are special (padding, separators) and never chosen nor
    /// used as random replacements.
    pub first_regular: u32,
    /// Vocabulary size; random replacements are drawn from `first_regular..vocab`.
    pub vocab: u32,
}

impl MlmConfig {
    /// BERT's settings for the byte-level tokenizer.
    pub fn bytes() -> Self {
        use super::ByteTokenizer as T;
        Self {
            mask_prob: 0.15,
            mask_id: T::MASK,
            first_regular: T::OFFSET,
            vocab: T::VOCAB as u32,
        }
    }
}

/// A masked sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    /// Model input: the sequence with chosen positions replaced.
    pub inputs: Vec<u32>,
    /// The original sequence.
    pub targets: Vec<u32>,
    /// True where the loss is taken.
    pub chosen: Vec<bool>,
}

/// Chooses each regular position with probability `mask_prob`; a chosen
/// position becomes `[MASK]` with probability 0.8, a random regular token with
/// 0.1, and stays unchanged with 0.1 (BERT's 80/10/10 rule).
pub fn mask_tokens(tokens: &[u32], cfg: &MlmConfig, rng: &mut impl Rng) -> Masked {
    let mut inputs = tokens.to_vec();
    let mut chosen = vec![false; tokens.len()];
    for (i, &t) in tokens.iter().enumerate() {
        if t < cfg.first_regular || !rng.random_bool(cfg.mask_prob) {
            continue;
        }
        chosen[i] = true;
        let r: f64 = rng.random();
        inputs[i] = if r < 0.8 {
            cfg.mask_id
        } else if r < 0.9 {
            rng.random_range(cfg.first_regular..cfg.vocab)
        } else {
            t
        };
    }
    Masked {
        inputs,
        targets: tokens.to_vec(),
        chosen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn masking_follows_15_percent_and_80_10_10() {
        let cfg = MlmConfig::bytes();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        // Every 10th token is padding and must never be chosen.
        let tokens: Vec<u32> = (0..200_000u32)
            .map(|i| if i % 10 == 0 { 0 } else { 4 + i % 256 })
            .collect();
        let m = mask_tokens(&tokens, &cfg, &mut rng);
        let regular = tokens.iter().filter(|&&t| t >= 4).count() as f64;
        let chosen: Vec<usize> = (0..tokens.len()).filter(|&i| m.chosen[i]).collect();
        assert!(chosen.iter().all(|&i| tokens[i] != 0));
        let n = chosen.len() as f64;
        assert!(
            (n / regular - 0.15).abs() < 0.005,
            "chosen fraction {}",
            n / regular
        );
        let masked = chosen.iter().filter(|&&i| m.inputs[i] == 3).count() as f64;
        let kept = chosen.iter().filter(|&&i| m.inputs[i] == tokens[i]).count() as f64;
        let random = n - masked - kept;
        assert!((masked / n - 0.8).abs() < 0.01, "mask {}", masked / n);
        // A random replacement equals the original 1 time in 256.
        assert!((kept / n - 0.1).abs() < 0.01, "kept {}", kept / n);
        assert!((random / n - 0.1).abs() < 0.01, "random {}", random / n);
        assert!(chosen
            .iter()
            .all(|&i| m.inputs[i] >= 3 && m.inputs[i] < 260));
        let untouched = (0..tokens.len()).filter(|&i| !m.chosen[i]);
        assert!(untouched.into_iter().all(|i| m.inputs[i] == tokens[i]));
        assert_eq!(m.targets, tokens);
    }
}
