//! Combiner-Learnable (4.4, eq. 11/12): regions from the keys' nearest
//! centroids, compiled per sequence and head. The tensor side (centroids,
//! nearest-centroid assignment, k-means) is in [`crate::attention`].

use super::Mode;
use crate::layout::{Layout, SpanSet, Term};

/// Combiner-Learnable (eq. 11 MLM, eq. 12 LM) for fixed region assignments:
/// `regions[i]` is the region of position `i`.
///
/// MLM: direct = own region, one span per other region. LM: direct = own
/// region up to `i`; for every other region the span of its members before
/// `i` (an inclusive prefix of the region sorted by position).
pub fn routing_layout(regions: &[usize], mode: Mode) -> Layout {
    let len = regions.len();
    let pad = len;
    let n = regions.iter().copied().max().map_or(1, |x| x + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, &r) in regions.iter().enumerate() {
        members[r].push(i);
    }
    let w = members.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut seqs = vec![pad; n * w];
    for (r, ms) in members.iter().enumerate() {
        seqs[r * w..r * w + ms.len()].copy_from_slice(ms);
    }
    let mut direct = Term::new(n, w, w, pad);
    direct.queries.clone_from(&seqs);
    direct.items.clone_from(&seqs);
    for r in 0..n {
        for a in 0..w {
            let i = seqs[r * w + a];
            if i == pad {
                continue;
            }
            for b in 0..w {
                let j = seqs[r * w + b];
                direct.mask[(r * w + a) * w + b] = j != pad && mode.allows(i, j);
            }
        }
    }
    match mode {
        Mode::Mlm => {
            let mut spans = Term::new(n, w, n, pad);
            spans.queries.clone_from(&seqs);
            for r in 0..n {
                for r2 in 0..n {
                    spans.items[r * n + r2] = len + 1 + r2;
                }
                for a in 0..w {
                    if seqs[r * w + a] == pad {
                        continue;
                    }
                    for (r2, ms) in members.iter().enumerate() {
                        spans.mask[(r * w + a) * n + r2] = r2 != r && !ms.is_empty();
                    }
                }
            }
            Layout {
                len,
                span_sets: vec![SpanSet::Blocks {
                    count: n,
                    width: w,
                    members: seqs,
                    token_queries: None,
                }],
                terms: vec![direct, spans],
            }
        }
        Mode::Lm => {
            let mut spans = Term::new(len, 1, n, pad);
            for (i, &own) in regions.iter().enumerate() {
                spans.queries[i] = i;
                for (r2, ms) in members.iter().enumerate() {
                    // members of r2 before i
                    let t = ms.partition_point(|&j| j < i);
                    if r2 != own && t > 0 {
                        spans.items[i * n + r2] = len + 1 + r2 * w + (t - 1);
                        spans.mask[i * n + r2] = true;
                    }
                }
            }
            Layout {
                len,
                span_sets: vec![SpanSet::Prefixes {
                    count: n,
                    width: w,
                    seqs,
                }],
                terms: vec![direct, spans],
            }
        }
    }
}

/// The number of regions of `Plan::Learnable { clusters }` at `len` when
/// the plan runs on its own: `clusters`, or `ceil(sqrt(len))`, at least 1.
///
/// `CombinerAttention` instead sizes its centroids once, at `init`, before
/// any length is seen: there the open count is
/// `CombinerConfig::default_clusters` ([`MODULE_CLUSTERS`]).
pub fn clusters_for(len: usize, clusters: Option<usize>) -> usize {
    clusters.unwrap_or_else(|| super::ceil_sqrt(len)).max(1)
}

/// The default of `CombinerConfig::default_clusters`: the learnable plan's
/// cluster count in a module, whose centroids are parameters sized before
/// the sequence length is known (see [`clusters_for`]).
pub const MODULE_CLUSTERS: usize = 32;

/// Renumbers cluster ids to `0..used` in order of first appearance, so
/// that empty clusters cost nothing.
pub fn compact_regions(ids: &[usize]) -> Vec<usize> {
    let mut map = std::collections::HashMap::new();
    ids.iter()
        .map(|&c| {
            let next = map.len();
            *map.entry(c).or_insert(next)
        })
        .collect()
}

/// Regions of consecutive positions, [`clusters_for`] of them: a fixed
/// stand-in for data-driven clusters, for verifying and drawing the
/// learnable plan without keys.
pub(super) fn consecutive_regions(len: usize, clusters: Option<usize>) -> Vec<usize> {
    let n = clusters_for(len, clusters);
    let size = len.div_ceil(n).max(1);
    (0..len).map(|i| i / size).collect()
}
