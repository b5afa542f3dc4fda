//! Combiner-Logsparse (4.2, Appendix B): dyadic spans, `O(L log L)`.

use super::Mode;
use crate::layout::{Layout, SpanSet, Term};

/// Combiner-Logsparse. LM: direct = `{i}` plus `{i - 1}` for odd `i`; for each
/// set bit `l >= 1` of `i` the span `[a, a + 2^l)` with `a` = `i` with bits
/// `0..=l` cleared, a dyadic cover of `[0, i)` complete at every length.
/// MLM adds the mirror image after `i` (Appendix B, Figure 4).
pub fn logsparse_layout(len: usize, mode: Mode) -> Layout {
    let pad = len;
    let mut span_sets = Vec::new();
    // (level, mirrored) -> offset of its span set in the global numbering
    let mut offsets = std::collections::HashMap::new();
    let mut total = 0usize;
    let sides: &[bool] = if mode == Mode::Mlm {
        &[false, true]
    } else {
        &[false]
    };
    for &mirror in sides {
        let mut l = 1;
        while (1usize << l) < len {
            let size = 1usize << l;
            let stride = size << 1;
            // spans start at multiples of 2^(l+1) with a + 2^l <= len - 1
            let count = (len - 1 - size) / stride + 1;
            let mut members = Vec::with_capacity(count * size);
            for k in 0..count {
                for t in 0..size {
                    let p = k * stride + t;
                    members.push(if mirror { len - 1 - p } else { p });
                }
            }
            offsets.insert((l, mirror), total);
            total += count;
            span_sets.push(SpanSet::Blocks {
                count,
                width: size,
                members,
                token_queries: None,
            });
            l += 1;
        }
    }
    let max_bits = usize::BITS as usize - len.max(1).leading_zeros() as usize;
    let span_w = (max_bits * sides.len()).max(1);
    let direct_w = if mode == Mode::Mlm { 3 } else { 2 };
    let mut direct = Term::new(len, 1, direct_w, pad);
    let mut spans = Term::new(len, 1, span_w, pad);
    for i in 0..len {
        direct.queries[i] = i;
        spans.queries[i] = i;
        let mut d = vec![i];
        if i % 2 == 1 {
            d.push(i - 1);
        }
        let ri = len - 1 - i;
        if mode == Mode::Mlm && ri % 2 == 1 {
            d.push(i + 1);
        }
        for (b, j) in d.into_iter().enumerate() {
            direct.items[i * direct_w + b] = j;
            direct.mask[i * direct_w + b] = true;
        }
        let mut b = 0;
        for &mirror in sides {
            let x = if mirror { ri } else { i };
            let mut l = 1;
            while (1usize << l) <= x {
                if x >> l & 1 == 1 {
                    let a = (x >> (l + 1)) << (l + 1);
                    let u = offsets[&(l, mirror)] + a / (2usize << l);
                    spans.items[i * span_w + b] = len + 1 + u;
                    spans.mask[i * span_w + b] = true;
                    b += 1;
                }
                l += 1;
            }
        }
    }
    Layout {
        len,
        span_sets,
        terms: vec![direct, spans],
    }
}
