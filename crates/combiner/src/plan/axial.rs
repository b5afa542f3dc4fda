//! Combiner-Axial (4.3 LM, Appendix C MLM) on a `rows x cols` grid:
//! vertical, horizontal and row-major, and the grid ([`Cells`]) they share
//! with the joint mixture. The learned row summary
//! (`summary = "learned"`) shares the row-major layout; only its span keys
//! differ ([`crate::LearnedRowSummary`]).

use super::{Grid, Mode};
use crate::layout::{Layout, SpanSet, Term};

/// A sequence laid out on a grid, position `i = r * cols + c`; cells past the
/// end hold the padding index `len`.
pub(super) struct Cells {
    /// Sequence length (also the padding index).
    pub len: usize,
    /// Rows `n`.
    pub n: usize,
    /// Columns `m`.
    pub m: usize,
    /// Causal (LM) or bidirectional.
    pub lm: bool,
    /// Positions row by row.
    pub row_seqs: Vec<usize>,
    /// Positions column by column.
    pub col_seqs: Vec<usize>,
}

impl Cells {
    /// The grid `g` for a sequence of `len` in `mode`.
    pub fn new(len: usize, g: Grid, mode: Mode) -> Self {
        let (n, m) = (g.rows, g.cols);
        let at = |r: usize, c: usize| cell(len, m, r, c);
        Cells {
            len,
            n,
            m,
            lm: mode == Mode::Lm,
            row_seqs: (0..n).flat_map(|r| (0..m).map(move |c| at(r, c))).collect(),
            col_seqs: (0..m).flat_map(|c| (0..n).map(move |r| at(r, c))).collect(),
        }
    }

    /// The padding index.
    pub fn pad(&self) -> usize {
        self.len
    }

    /// The position at row `r`, column `c`, or the padding index.
    pub fn at(&self, r: usize, c: usize) -> usize {
        cell(self.len, self.m, r, c)
    }

    /// Whether the cell holds a position.
    pub fn real(&self, r: usize, c: usize) -> bool {
        self.at(r, c) != self.pad()
    }

    /// The item index of span `u` (spans follow the `len + 1` token slots).
    pub fn item(&self, u: usize) -> usize {
        self.len + 1 + u
    }

    /// The own row: groups = rows; LM up to the query, MLM the whole row.
    pub fn row_term(&self) -> Term {
        let (n, m) = (self.n, self.m);
        let mut row = Term::new(n, m, m, self.pad());
        row.queries.clone_from(&self.row_seqs);
        row.items.clone_from(&self.row_seqs);
        for r in 0..n {
            for c in (0..m).filter(|&c| self.real(r, c)) {
                for c2 in 0..m {
                    row.mask[(r * m + c) * m + c2] = self.real(r, c2) && (!self.lm || c2 <= c);
                }
            }
        }
        row
    }

    /// The own column without the own row: groups = columns.
    pub fn col_term(&self) -> Term {
        let (n, m) = (self.n, self.m);
        let mut col = Term::new(m, n, n, self.pad());
        col.queries.clone_from(&self.col_seqs);
        col.items.clone_from(&self.col_seqs);
        for c in 0..m {
            for r in (0..n).filter(|&r| self.real(r, c)) {
                for r2 in 0..n {
                    col.mask[(c * n + r) * n + r2] =
                        self.real(r2, c) && r2 != r && (!self.lm || r2 < r);
                }
            }
        }
        col
    }

    /// Spans `(r2, c)` of the other rows (LM: earlier rows), numbered
    /// `r2 * m + c`, scored by queries grouped by column; `nonempty(r2, c)`
    /// drops spans with no member.
    fn other_rows(&self, nonempty: impl Fn(usize, usize) -> bool) -> Term {
        let (n, m) = (self.n, self.m);
        let mut spans = Term::new(m, n, n, self.pad());
        spans.queries.clone_from(&self.col_seqs);
        for c in 0..m {
            for r2 in 0..n {
                spans.items[c * n + r2] = self.item(r2 * m + c);
            }
            for r in (0..n).filter(|&r| self.real(r, c)) {
                for r2 in 0..n {
                    spans.mask[(c * n + r) * n + r2] =
                        r2 != r && (!self.lm || r2 < r) && nonempty(r2, c);
                }
            }
        }
        spans
    }
}

fn cell(len: usize, m: usize, r: usize, c: usize) -> usize {
    let p = r * m + c;
    if p < len {
        p
    } else {
        len
    }
}

/// Axial-vertical: spans are the other columns. LM: span `(c2, r)` = column
/// `c2`, rows `< r` (inclusive prefix up to `r - 1`); MLM: column `c2`
/// without row `r` (the own row is direct).
pub(super) fn vertical(g: &Cells) -> Layout {
    let (n, m, lm) = (g.n, g.m, g.lm);
    let set = if lm {
        SpanSet::Prefixes {
            count: m,
            width: n,
            seqs: g.col_seqs.clone(),
        }
    } else {
        SpanSet::ExcludeOne {
            count: m,
            width: n,
            seqs: g.col_seqs.clone(),
        }
    };
    let mut spans = Term::new(n, m, m, g.pad());
    spans.queries.clone_from(&g.row_seqs);
    for r in 0..n {
        for c2 in 0..m {
            // prefix index r - 1 (LM) or excluded index r (MLM)
            let t = if lm { r.saturating_sub(1) } else { r };
            spans.items[r * m + c2] = g.item(c2 * n + t);
        }
        for c in (0..m).filter(|&c| g.real(r, c)) {
            for c2 in 0..m {
                let nonempty = if lm {
                    r > 0
                } else {
                    (0..n).any(|r2| r2 != r && g.real(r2, c2))
                };
                spans.mask[(r * m + c) * m + c2] = c2 != c && nonempty;
            }
        }
    }
    Layout {
        len: g.len,
        span_sets: vec![set],
        terms: vec![g.row_term(), g.col_term(), spans],
    }
}

/// Axial-horizontal: span `(r2, c)` = row `r2` without column `c`; queries
/// grouped by column.
pub(super) fn horizontal(g: &Cells) -> Layout {
    let set = SpanSet::ExcludeOne {
        count: g.n,
        width: g.m,
        seqs: g.row_seqs.clone(),
    };
    let spans = g.other_rows(|r2, c| (0..g.m).any(|c2| c2 != c && g.real(r2, c2)));
    Layout {
        len: g.len,
        span_sets: vec![set],
        terms: vec![g.row_term(), g.col_term(), spans],
    }
}

/// Axial-row-major: direct = own row only (LM up to the query, MLM the whole
/// row); span `(r2, c)` = whole row `r2`, its local expectation queried by
/// token `(r2, c)` (the last token of a short final row stands in for cells
/// past the end).
pub(super) fn rowmajor(g: &Cells) -> Layout {
    let (n, m, len) = (g.n, g.m, g.len);
    let tokens: Vec<usize> = (0..n)
        .flat_map(|r2| (0..m).map(move |c| (r2 * m + c).min(len.saturating_sub(1))))
        .collect();
    let set = SpanSet::Blocks {
        count: n,
        width: m,
        members: g.row_seqs.clone(),
        token_queries: Some((m, tokens)),
    };
    let spans = g.other_rows(|r2, _| g.real(r2, 0));
    Layout {
        len,
        span_sets: vec![set],
        terms: vec![g.row_term(), spans],
    }
}
