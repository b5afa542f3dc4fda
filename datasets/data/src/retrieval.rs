//! LRA Retrieval: document-pair matching.
//!
//! The real task (ACL Anthology Network citation pairs) ships as TSV files
//! `new_aan_pairs.{train,eval,test}.tsv` with lines
//! `<label>\t<id1>\t<id2>\t<text1>\t<text2>`; [`read_aan_tsv`] reads them.
//! AAN is not available here, so [`wikipedia_pairs`] builds a stand-in from
//! pairs of Wikipedia articles: the first half of an article is paired with
//! its own second half (label 1) or with the second half of another article
//! (label 0). It asks the same skill (does this text continue that one?) and
//! is documented as a stand-in, not as AAN.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};
use crate::text::{ByteTokenizer, WikiDoc};

/// Two byte-level documents and whether they match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievalPair {
    /// First document, token ids padded to the task length.
    pub a: Vec<u32>,
    /// Second document, token ids padded to the task length.
    pub b: Vec<u32>,
    /// 1 when the documents match.
    pub label: u32,
}

/// Reads an LRA/AAN retrieval TSV file, byte-tokenizing each text to `len`
/// (LRA: 4,000).
pub fn read_aan_tsv(path: &Path, len: usize) -> Result<Vec<RetrievalPair>> {
    let text = crate::text::readers::read_text(path)?;
    let t = ByteTokenizer;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.splitn(5, '\t').collect();
        let bad = |what: &str| DataError::format(path, format!("line {}", i + 1), what.to_string());
        if f.len() != 5 {
            return Err(bad("5 tab-separated fields: label, id1, id2, text1, text2"));
        }
        let label = match f[0].trim() {
            "0" | "0.0" => 0,
            "1" | "1.0" => 1,
            _ => return Err(bad("label 0 or 1")),
        };
        out.push(RetrievalPair {
            a: t.encode_fixed(f[3].as_bytes(), len),
            b: t.encode_fixed(f[4].as_bytes(), len),
            label,
        });
    }
    if out.is_empty() {
        return Err(DataError::Empty {
            what: path.display().to_string(),
            hint: "no pairs".into(),
        });
    }
    Ok(out)
}

/// Splits at a char boundary near the middle.
fn halves(text: &str) -> (&str, &str) {
    let mut mid = text.len() / 2;
    while !text.is_char_boundary(mid) {
        mid += 1;
    }
    text.split_at(mid)
}

/// The Wikipedia stand-in: one pair per article of at least `min_bytes`,
/// labels balanced at random; deterministic from `seed`.
pub fn wikipedia_pairs(
    docs: &[WikiDoc],
    len: usize,
    min_bytes: usize,
    seed: u64,
) -> Result<Vec<RetrievalPair>> {
    let usable: Vec<&WikiDoc> = docs.iter().filter(|d| d.text.len() >= min_bytes).collect();
    if usable.len() < 2 {
        return Err(DataError::Empty {
            what: "Wikipedia retrieval stand-in".into(),
            hint: format!(
                "needs two articles of at least {min_bytes} bytes, found {}",
                usable.len()
            ),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let t = ByteTokenizer;
    let mut pairs: Vec<RetrievalPair> = usable
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (first, own) = halves(&d.text);
            let label = u32::from(rng.random_bool(0.5));
            let second = if label == 1 {
                own
            } else {
                let j = (i + rng.random_range(1..usable.len())) % usable.len();
                halves(&usable[j].text).1
            };
            RetrievalPair {
                a: t.encode_fixed(first.as_bytes(), len),
                b: t.encode_fixed(second.as_bytes(), len),
                label,
            }
        })
        .collect();
    pairs.shuffle(&mut rng);
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: u64, text: &str) -> WikiDoc {
        WikiDoc {
            id,
            title: format!("T{id}"),
            text: text.into(),
        }
    }

    #[test]
    fn positive_pairs_are_halves_of_one_article() {
        let docs: Vec<WikiDoc> = (0..40)
            .map(|i| doc(i, &format!("{i:04}").repeat(10)))
            .collect();
        let pairs = wikipedia_pairs(&docs, 64, 10, 1).unwrap();
        assert_eq!(pairs.len(), 40);
        let t = ByteTokenizer;
        for p in &pairs {
            let (a, b) = (t.decode(&p.a), t.decode(&p.b));
            assert_eq!(a[..4] == b[..4], p.label == 1);
        }
        let pos = pairs.iter().filter(|p| p.label == 1).count();
        assert!((8..32).contains(&pos), "{pos}");
        assert_eq!(pairs, wikipedia_pairs(&docs, 64, 10, 1).unwrap());
    }

    #[test]
    fn aan_tsv_reads_pairs_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new_aan_pairs.eval.tsv");
        std::fs::write(&path, "1\tP1\tP2\tabc\tdef\n0.0\tP3\tP4\tx\ty\n").unwrap();
        let pairs = read_aan_tsv(&path, 4).unwrap();
        assert_eq!(pairs[0].a, vec![101, 102, 103, 0]);
        assert_eq!(
            pairs.iter().map(|p| p.label).collect::<Vec<_>>(),
            vec![1, 0]
        );
        std::fs::write(&path, "1\tP1\tP2\tabc\n").unwrap();
        let err = read_aan_tsv(&path, 4).unwrap_err().to_string();
        assert!(
            err.contains("new_aan_pairs.eval.tsv") && err.contains("line 1"),
            "{err}"
        );
    }
}
