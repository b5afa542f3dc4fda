//! LRA ListOps, generated in code.
//!
//! Follows `lra_benchmarks/data/listops.py`: a tree whose inner nodes are
//! `[MAX`, `[MIN`, `[MED` or `[SM` (sum modulo 10) applied to 2..=`max_args`
//! arguments and whose leaves are digits 0-9. A node below `max_depth` is an
//! operator with probability 0.25, otherwise a digit; trees are drawn until
//! `min_length < tokens < max_length` (LRA: 500 and 2000, depth 10, 10
//! arguments), duplicates are dropped, and the label (10 classes) is the
//! value of the expression. Sequences are padded to 2000 tokens.

use std::collections::HashSet;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};

/// Padding id.
pub const PAD: u32 = 0;
/// Id of digit `d` is `DIGIT0 + d`.
pub const DIGIT0: u32 = 1;
/// `[MIN` operator id.
pub const MIN: u32 = 11;
/// `[MAX` operator id.
pub const MAX: u32 = 12;
/// `[MED` operator id (median, rounded down as `int(np.median(..))`).
pub const MED: u32 = 13;
/// `[SM` operator id (sum modulo 10).
pub const SUM_MOD: u32 = 14;
/// `]`, closing an operator.
pub const END: u32 = 15;
/// Vocabulary size.
pub const VOCAB: usize = 16;

const OPERATORS: [u32; 4] = [MIN, MAX, MED, SUM_MOD];
/// Probability that a node above the depth limit is an operator (LRA's VALUE_P).
const OP_P: f64 = 0.25;

/// Generator settings (defaults are LRA's).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListOpsConfig {
    /// Deepest operator nesting.
    pub max_depth: usize,
    /// Most arguments of one operator.
    pub max_args: usize,
    /// Sequences must be longer than this (tokens).
    pub min_length: usize,
    /// Sequences must be shorter than this (tokens).
    pub max_length: usize,
    /// Padded length given to models.
    pub seq_len: usize,
}

impl Default for ListOpsConfig {
    fn default() -> Self {
        Self {
            max_depth: 10,
            max_args: 10,
            min_length: 500,
            max_length: 2000,
            seq_len: 2000,
        }
    }
}

impl ListOpsConfig {
    fn check(&self) -> Result<()> {
        if self.max_args < 2 || self.max_depth < 2 || self.min_length + 1 >= self.max_length {
            return Err(DataError::Config(format!(
                "ListOps needs max_args >= 2, max_depth >= 2 and min_length + 1 < max_length, got {self:?}"
            )));
        }
        // Longest possible tree: every node above the depth limit an operator with max_args arguments.
        let mut longest = 1usize;
        for _ in 1..self.max_depth {
            longest = longest.saturating_mul(self.max_args).saturating_add(2);
        }
        if longest <= self.min_length + 1 {
            return Err(DataError::Config(format!(
                "ListOps trees with max_depth {} and max_args {} have at most {longest} tokens, fewer than min_length {} + 2",
                self.max_depth, self.max_args, self.min_length
            )));
        }
        if self.seq_len + 1 < self.max_length {
            return Err(DataError::Config(format!(
                "ListOps seq_len {} cannot hold sequences of up to {} tokens",
                self.seq_len,
                self.max_length - 1
            )));
        }
        Ok(())
    }
}

/// One ListOps expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListOpsExample {
    /// Tokens without padding.
    pub tokens: Vec<u32>,
    /// Value of the expression, 0..=9.
    pub label: u8,
}

impl ListOpsExample {
    /// Tokens padded with [`PAD`] (or truncated) to `len`.
    pub fn padded(&self, len: usize) -> Vec<u32> {
        let mut t = self.tokens[..self.tokens.len().min(len)].to_vec();
        t.resize(len, PAD);
        t
    }

    /// The expression as text, e.g. `[MAX 2 9 [MIN 4 7 ] 0 ]`.
    pub fn to_text(&self) -> String {
        self.tokens
            .iter()
            .map(|&t| token_text(t))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn token_text(t: u32) -> String {
    match t {
        MIN => "[MIN".into(),
        MAX => "[MAX".into(),
        MED => "[MED".into(),
        SUM_MOD => "[SM".into(),
        END => "]".into(),
        d if (DIGIT0..DIGIT0 + 10).contains(&d) => (d - DIGIT0).to_string(),
        _ => "<pad>".into(),
    }
}

/// Draws one tree into `out` and returns its value, or `None` once `out`
/// reaches `limit` tokens (the tree would be rejected anyway, so stop early).
fn draw(
    rng: &mut ChaCha8Rng,
    depth: usize,
    cfg: &ListOpsConfig,
    out: &mut Vec<u32>,
    limit: usize,
) -> Option<u8> {
    if out.len() >= limit {
        return None;
    }
    let r: f64 = if depth < cfg.max_depth {
        rng.random()
    } else {
        1.0
    };
    if r > OP_P {
        let v = rng.random_range(0..10u8);
        out.push(DIGIT0 + v as u32);
        return Some(v);
    }
    let n = rng.random_range(2..=cfg.max_args);
    let op = OPERATORS[rng.random_range(0..OPERATORS.len())];
    out.push(op);
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        values.push(draw(rng, depth + 1, cfg, out, limit)?);
    }
    out.push(END);
    Some(apply(op, &mut values))
}

fn apply(op: u32, values: &mut [u8]) -> u8 {
    match op {
        MIN => *values.iter().min().expect("operators have >= 2 arguments"),
        MAX => *values.iter().max().expect("operators have >= 2 arguments"),
        MED => {
            values.sort_unstable();
            let n = values.len();
            if n % 2 == 1 {
                values[n / 2]
            } else {
                ((values[n / 2 - 1] as u32 + values[n / 2] as u32) / 2) as u8
            }
        }
        _ => (values.iter().map(|&v| v as u32).sum::<u32>() % 10) as u8,
    }
}

/// A generated (or read) ListOps set.
#[derive(Debug, Clone)]
pub struct ListOps {
    /// The examples, in generation order.
    pub examples: Vec<ListOpsExample>,
}

impl ListOps {
    /// Generates `n` distinct examples; the same `cfg` and `seed` give the same set in the same order.
    pub fn generate(cfg: &ListOpsConfig, seed: u64, n: usize) -> Result<Self> {
        cfg.check()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut seen = HashSet::with_capacity(n);
        let mut examples = Vec::with_capacity(n);
        let mut tokens = Vec::new();
        let budget = 10_000 * n as u64 + 1_000_000;
        let mut attempts = 0u64;
        while examples.len() < n {
            attempts += 1;
            if attempts > budget {
                return Err(DataError::Config(format!(
                    "ListOps: {} distinct examples found after {budget} draws, {n} asked; widen the length range",
                    examples.len()
                )));
            }
            tokens.clear();
            let Some(label) = draw(&mut rng, 1, cfg, &mut tokens, cfg.max_length) else {
                continue;
            };
            if tokens.len() > cfg.min_length
                && tokens.len() < cfg.max_length
                && seen.insert(tokens.clone())
            {
                examples.push(ListOpsExample {
                    tokens: tokens.clone(),
                    label,
                });
            }
        }
        Ok(Self { examples })
    }

    /// Reads an LRA task file (`basic_train.tsv` ..: a `Source<TAB>Target`
    /// header, then one expression per line with parentheses that are ignored).
    pub fn read_tsv(path: &Path) -> Result<Self> {
        let text = crate::text::readers::read_text(path)?;
        let mut examples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if i == 0 && line.starts_with("Source") || line.trim().is_empty() {
                continue;
            }
            let record = || format!("line {}", i + 1);
            let (source, target) = line
                .split_once('\t')
                .ok_or_else(|| DataError::format(path, record(), "`<expression><TAB><label>`"))?;
            let label: u8 = target
                .trim()
                .parse()
                .ok()
                .filter(|&l: &u8| l < 10)
                .ok_or_else(|| {
                    DataError::format(path, record(), format!("a label 0..9, found {target:?}"))
                })?;
            let tokens = source
                .split_whitespace()
                .filter(|w| *w != "(" && *w != ")")
                .map(|w| match w {
                    "[MIN" => Ok(MIN),
                    "[MAX" => Ok(MAX),
                    "[MED" => Ok(MED),
                    "[SM" => Ok(SUM_MOD),
                    "]" => Ok(END),
                    d if d.len() == 1 && d.as_bytes()[0].is_ascii_digit() => {
                        Ok(DIGIT0 + (d.as_bytes()[0] - b'0') as u32)
                    }
                    other => Err(DataError::format(
                        path,
                        record(),
                        format!("a ListOps token, found {other:?}"),
                    )),
                })
                .collect::<Result<Vec<_>>>()?;
            examples.push(ListOpsExample { tokens, label });
        }
        if examples.is_empty() {
            return Err(DataError::Empty {
                what: path.display().to_string(),
                hint: "no examples".into(),
            });
        }
        Ok(Self { examples })
    }
}

impl burn::data::dataset::Dataset<ListOpsExample> for ListOps {
    fn get(&self, index: usize) -> Option<ListOpsExample> {
        self.examples.get(index).cloned()
    }

    fn len(&self) -> usize {
        self.examples.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent evaluator: a stack machine over the text form, written
    /// without the generator's helpers.
    fn evaluate(text: &str) -> i64 {
        let mut stack: Vec<(String, Vec<i64>)> = vec![("top".into(), vec![])];
        for w in text.split_whitespace() {
            if let Some(op) = w.strip_prefix('[') {
                stack.push((op.to_string(), vec![]));
            } else if w == "]" {
                let (op, mut args) = stack.pop().unwrap();
                args.sort();
                let v = match op.as_str() {
                    "MIN" => args[0],
                    "MAX" => *args.last().unwrap(),
                    "MED" => {
                        let m = args.len() / 2;
                        if args.len() % 2 == 1 {
                            args[m]
                        } else {
                            (args[m - 1] + args[m]) / 2
                        }
                    }
                    "SM" => args.iter().sum::<i64>() % 10,
                    _ => panic!("unknown operator {op}"),
                };
                stack.last_mut().unwrap().1.push(v);
            } else {
                stack.last_mut().unwrap().1.push(w.parse().unwrap());
            }
        }
        assert_eq!(stack.len(), 1, "unbalanced expression");
        assert_eq!(stack[0].1.len(), 1, "one expression");
        stack[0].1[0]
    }

    fn small() -> ListOpsConfig {
        ListOpsConfig {
            max_depth: 6,
            max_args: 5,
            min_length: 20,
            max_length: 200,
            seq_len: 200,
        }
    }

    #[test]
    fn labels_equal_an_independent_evaluation() {
        let set = ListOps::generate(&small(), 7, 500).unwrap();
        let mut classes = [0usize; 10];
        for ex in &set.examples {
            assert_eq!(evaluate(&ex.to_text()), ex.label as i64, "{}", ex.to_text());
            assert!(ex.tokens.len() > 20 && ex.tokens.len() < 200);
            classes[ex.label as usize] += 1;
        }
        assert!(
            classes.iter().all(|&c| c > 0),
            "all 10 classes occur: {classes:?}"
        );
    }

    #[test]
    fn lra_defaults_give_long_padded_sequences() {
        let cfg = ListOpsConfig::default();
        let set = ListOps::generate(&cfg, 1, 5).unwrap();
        for ex in &set.examples {
            assert!(ex.tokens.len() > 500 && ex.tokens.len() < 2000);
            assert_eq!(evaluate(&ex.to_text()), ex.label as i64);
            let p = ex.padded(cfg.seq_len);
            assert_eq!(p.len(), 2000);
            assert!(p[ex.tokens.len()..].iter().all(|&t| t == PAD));
            assert!(p.iter().all(|&t| (t as usize) < VOCAB));
        }
    }

    #[test]
    fn same_seed_same_set_and_examples_are_distinct() {
        let a = ListOps::generate(&small(), 3, 50).unwrap().examples;
        assert_eq!(a, ListOps::generate(&small(), 3, 50).unwrap().examples);
        assert_ne!(a, ListOps::generate(&small(), 4, 50).unwrap().examples);
        let distinct: HashSet<_> = a.iter().map(|e| &e.tokens).collect();
        assert_eq!(distinct.len(), a.len());
    }

    #[test]
    fn lra_tsv_files_are_read_and_bad_lines_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("basic_val.tsv");
        std::fs::write(
            &path,
            "Source\tTarget\n( ( ( [MAX 2 ) 9 ) ] )\t9\n( [SM 5 7 ] )\t2\n",
        )
        .unwrap();
        let set = ListOps::read_tsv(&path).unwrap();
        assert_eq!(set.examples[0].to_text(), "[MAX 2 9 ]");
        for ex in &set.examples {
            assert_eq!(evaluate(&ex.to_text()), ex.label as i64);
        }
        std::fs::write(&path, "Source\tTarget\n( [SM 5 7 ] )\t12\n").unwrap();
        let err = ListOps::read_tsv(&path).unwrap_err().to_string();
        assert!(
            err.contains("basic_val.tsv") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn impossible_config_is_an_error() {
        let cfg = ListOpsConfig {
            min_length: 100,
            max_length: 50,
            ..small()
        };
        assert!(matches!(
            ListOps::generate(&cfg, 0, 1),
            Err(DataError::Config(_))
        ));
    }
}
