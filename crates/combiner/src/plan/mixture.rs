//! Combiner-Mixture. The paper's form (3.3) averages the outputs of its
//! component plans and has no layout of its own ([`super::Plan::components`]);
//! the authors' joint form (`AxialMixtureAtt`) puts the terms of
//! axial-vertical and axial-horizontal into one softmax, compiled here.

use super::axial::Cells;
use crate::layout::{Layout, SpanSet, Term};

/// The joint mixture on a grid. Span sets, all inclusive prefixes (pooled
/// keys and queries by running max/mean): columns top-down, rows
/// left-to-right, rows right-to-left (reversed), and in MLM columns bottom-up.
pub(super) fn joint_layout(g: &Cells) -> Layout {
    let (n, m) = (g.n, g.m);
    let rev_rows: Vec<usize> = (0..n)
        .flat_map(|r| (0..m).rev().map(move |c| g.at(r, c)))
        .collect();
    let rev_cols: Vec<usize> = (0..m)
        .flat_map(|c| (0..n).rev().map(move |r| g.at(r, c)))
        .collect();
    let mut span_sets = vec![
        SpanSet::Prefixes {
            count: m,
            width: n,
            seqs: g.col_seqs.clone(),
        },
        SpanSet::Prefixes {
            count: n,
            width: m,
            seqs: g.row_seqs.clone(),
        },
        SpanSet::Prefixes {
            count: n,
            width: m,
            seqs: rev_rows,
        },
    ];
    if !g.lm {
        span_sets.push(SpanSet::Prefixes {
            count: m,
            width: n,
            seqs: rev_cols,
        });
    }
    Layout {
        len: g.len,
        span_sets,
        terms: vec![g.row_term(), g.col_term(), other_columns(g), other_rows(g)],
    }
}

/// Other columns, queries grouped by row: column `c2` above row `r` (prefix
/// `r - 1`) and, in MLM, below it (reversed prefix `n - 2 - r`).
fn other_columns(g: &Cells) -> Term {
    let (n, m, lm) = (g.n, g.m, g.lm);
    // offsets of the top-down and bottom-up sets in `joint_layout`'s order
    let (down, up) = (0, 3 * n * m);
    let cw = if lm { m } else { 2 * m };
    let mut cols = Term::new(n, m, cw, g.pad());
    cols.queries.clone_from(&g.row_seqs);
    for r in 0..n {
        for c2 in 0..m {
            if r > 0 {
                cols.items[r * cw + c2] = g.item(down + c2 * n + r - 1);
            }
            if !lm && r + 1 < n {
                cols.items[r * cw + m + c2] = g.item(up + c2 * n + n - 2 - r);
            }
        }
        for c in (0..m).filter(|&c| g.real(r, c)) {
            for c2 in (0..m).filter(|&c2| c2 != c) {
                cols.mask[(r * m + c) * cw + c2] = r > 0;
                if !lm {
                    cols.mask[(r * m + c) * cw + m + c2] = r + 1 < n && g.real(r + 1, c2);
                }
            }
        }
    }
    cols
}

/// Other rows, queries grouped by column: row `s` left of column `c`
/// (prefix `c - 1`) and right of it (reversed prefix `m - 2 - c`).
fn other_rows(g: &Cells) -> Term {
    let (n, m, lm) = (g.n, g.m, g.lm);
    // offsets of the left-to-right and right-to-left sets
    let (l2r, r2l) = (n * m, 2 * n * m);
    let mut rows = Term::new(m, n, 2 * n, g.pad());
    rows.queries.clone_from(&g.col_seqs);
    for c in 0..m {
        for s in 0..n {
            if c > 0 {
                rows.items[c * 2 * n + s] = g.item(l2r + s * m + c - 1);
            }
            if c + 1 < m {
                rows.items[c * 2 * n + n + s] = g.item(r2l + s * m + m - 2 - c);
            }
        }
        for r in (0..n).filter(|&r| g.real(r, c)) {
            for s in (0..n).filter(|&s| s != r && (!lm || s < r)) {
                let q = (c * n + r) * 2 * n;
                rows.mask[q + s] = c > 0 && g.real(s, 0);
                rows.mask[q + n + s] = c + 1 < m && g.real(s, c + 1);
            }
        }
    }
    rows
}
