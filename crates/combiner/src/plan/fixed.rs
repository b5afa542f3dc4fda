//! Combiner-Fixed (4.1): the own block directly, one span per other block.

use super::Mode;
use crate::layout::{Layout, SpanSet, Term};

/// Combiner-Fixed with block size `s` (eq. 10; LM form restricted to `j <= i`).
pub fn fixed_layout(len: usize, s: usize, mode: Mode) -> Layout {
    let pad = len;
    let nb = len.div_ceil(s).max(1);
    let pos = |b: usize, t: usize| {
        let p = b * s + t;
        if p < len {
            p
        } else {
            pad
        }
    };
    let members: Vec<usize> = (0..nb)
        .flat_map(|b| (0..s).map(move |t| pos(b, t)))
        .collect();
    let mut direct = Term::new(nb, s, s, pad);
    let mut spans = Term::new(nb, s, nb, pad);
    for b in 0..nb {
        for t in 0..s {
            let i = pos(b, t);
            direct.queries[b * s + t] = i;
            spans.queries[b * s + t] = i;
            direct.items[b * s + t] = i;
            if i == pad {
                continue;
            }
            for t2 in 0..s {
                let j = pos(b, t2);
                direct.mask[(b * s + t) * s + t2] = j != pad && mode.allows(i, j);
            }
            for b2 in 0..nb {
                spans.mask[(b * s + t) * nb + b2] = b2 != b && (mode == Mode::Mlm || b2 < b);
            }
        }
        for b2 in 0..nb {
            spans.items[b * nb + b2] = len + 1 + b2;
        }
    }
    Layout {
        len,
        span_sets: vec![SpanSet::Blocks {
            count: nb,
            width: s,
            members,
            token_queries: None,
        }],
        terms: vec![direct, spans],
    }
}
