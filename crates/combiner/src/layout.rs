//! The compiled form of a factorization plan at one sequence length.
//!
//! A [`Layout`] is what the efficient attention executes and what the verifier
//! and the dense oracle read (through [`Layout::partition`]). It is plain data:
//! index lists and masks, built once per `(plan, length, mode)` on the host.
//!
//! # Index spaces
//!
//! * Positions `0..len` are tokens; `len` itself is the padding slot (`PAD`), a
//!   zero row appended to `q`, `k` and `v`.
//! * Items are what a query attends to in the joint softmax: `0..len` are
//!   tokens, `len` is the padding slot, and `len + 1 + u` is span `u`.
//! * Spans are numbered by concatenating the span sets in order.

use serde::{Deserialize, Serialize};

/// A set of spans whose summaries are computed together with one batched op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpanSet {
    /// One span per block; block `b` holds `members[b * width..(b + 1) * width]`
    /// (padding slots equal to `len`). With `token_queries = Some((g, tokens))`,
    /// each block yields `g` spans: span `(b, t)` has the same members and key
    /// summary as the block, but its local expectation uses the query of token
    /// `tokens[b * g + t]` instead of the pooled query (Combiner-Axial
    /// row-major, paper section 4.3).
    Blocks {
        /// Number of blocks.
        count: usize,
        /// Members per block, padded.
        width: usize,
        /// `count * width` positions.
        members: Vec<usize>,
        /// Optional per-span token queries.
        token_queries: Option<(usize, Vec<usize>)>,
    },
    /// Inclusive prefixes of sequences: span `(s, t)` = `seqs[s][0..=t]`.
    /// Summaries use running max / running mean (cummax, cumsum), so a whole
    /// family of nested spans costs one pass over the sequence.
    Prefixes {
        /// Number of sequences.
        count: usize,
        /// Length of each sequence, padded at the end.
        width: usize,
        /// `count * width` positions.
        seqs: Vec<usize>,
    },
    /// Leave-one-out: span `(s, t)` = `seqs[s]` without its element `t`.
    /// Summaries combine an exclusive prefix and an exclusive suffix pass.
    ExcludeOne {
        /// Number of sequences.
        count: usize,
        /// Length of each sequence, padded anywhere.
        width: usize,
        /// `count * width` positions.
        seqs: Vec<usize>,
    },
}

impl SpanSet {
    /// Number of spans this set defines.
    pub fn num_spans(&self) -> usize {
        match self {
            SpanSet::Blocks {
                count,
                token_queries,
                ..
            } => count * token_queries.as_ref().map_or(1, |(g, _)| *g),
            SpanSet::Prefixes { count, width, .. } | SpanSet::ExcludeOne { count, width, .. } => {
                count * width
            }
        }
    }

    /// Members (real positions only) and query of local span `u` of this set.
    pub fn span(&self, u: usize, len: usize) -> (Vec<usize>, SpanQuery) {
        let real = |xs: &[usize]| xs.iter().copied().filter(|&p| p < len).collect::<Vec<_>>();
        match self {
            SpanSet::Blocks {
                width,
                members,
                token_queries,
                ..
            } => match token_queries {
                None => (
                    real(&members[u * width..(u + 1) * width]),
                    SpanQuery::Pooled,
                ),
                Some((g, tokens)) => {
                    let b = u / g;
                    (
                        real(&members[b * width..(b + 1) * width]),
                        SpanQuery::Token(tokens[u]),
                    )
                }
            },
            SpanSet::Prefixes { width, seqs, .. } => {
                let (s, t) = (u / width, u % width);
                (real(&seqs[s * width..s * width + t + 1]), SpanQuery::Pooled)
            }
            SpanSet::ExcludeOne { width, seqs, .. } => {
                let (s, t) = (u / width, u % width);
                let row = &seqs[s * width..(s + 1) * width];
                let kept: Vec<usize> = row
                    .iter()
                    .enumerate()
                    .filter(|&(x, &p)| x != t && p < len)
                    .map(|(_, &p)| p)
                    .collect();
                (kept, SpanQuery::Pooled)
            }
        }
    }
}

/// Which query a span's local expectation `p(j | Omega)` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpanQuery {
    /// `q_Omega`: the abstraction (max / mean / DeepSets) of the members' queries.
    Pooled,
    /// The query of one token (Combiner-Axial row-major).
    Token(usize),
}

/// One block-structured group of logits of the joint softmax (eq. 9).
///
/// Queries are arranged in `groups` groups of `group_size`; every query of a
/// group scores the same `width` items, and `mask` says which pairs count.
/// Every real position appears exactly once in `queries`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    /// Number of query groups.
    pub groups: usize,
    /// Queries per group.
    pub group_size: usize,
    /// Items per group.
    pub width: usize,
    /// `groups * group_size` query positions (`len` = padding).
    pub queries: Vec<usize>,
    /// `groups * width` item indices (see the module docs).
    pub items: Vec<usize>,
    /// `groups * group_size * width` flags: whether query scores item.
    pub mask: Vec<bool>,
}

impl Term {
    /// A term with all pairs masked out, to be filled by the plan builder.
    pub fn new(groups: usize, group_size: usize, width: usize, pad: usize) -> Self {
        Term {
            groups,
            group_size,
            width,
            queries: vec![pad; groups * group_size],
            items: vec![pad; groups * width],
            mask: vec![false; groups * group_size * width],
        }
    }

    /// Iterates `(query, item)` pairs that take part in the softmax.
    pub fn pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.groups).flat_map(move |g| {
            (0..self.group_size).flat_map(move |a| {
                let q = self.queries[g * self.group_size + a];
                (0..self.width)
                    .filter(move |b| self.mask[(g * self.group_size + a) * self.width + b])
                    .map(move |b| (q, self.items[g * self.width + b]))
            })
        })
    }
}

/// A plan compiled for one length and mode: span sets plus logit terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Sequence length.
    pub len: usize,
    /// Span sets, in span-numbering order.
    pub span_sets: Vec<SpanSet>,
    /// Logit terms of the joint softmax.
    pub terms: Vec<Term>,
}

/// The parts of one query's support: eq. (7)'s `Omega_i^0` and span ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryParts {
    /// Positions attended directly, sorted.
    pub direct: Vec<usize>,
    /// Span ids whose summaries the query attends, sorted.
    pub spans: Vec<usize>,
}

/// A span's members (sorted real positions) and the query of its local expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanDef {
    /// Positions in the span.
    pub members: Vec<usize>,
    /// Query used by the local expectation.
    pub query: SpanQuery,
}

/// The set view of a layout: for each query its direct part and spans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Sequence length.
    pub len: usize,
    /// All spans of the layout (some may be unused).
    pub spans: Vec<SpanDef>,
    /// One entry per query position.
    pub queries: Vec<QueryParts>,
}

/// A malformed layout: indices out of range or queries missing from a term.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A vector's length does not match the declared shape.
    #[error("{what}: expected {expected} entries, found {found}")]
    Shape {
        /// Which field.
        what: String,
        /// Declared size.
        expected: usize,
        /// Actual size.
        found: usize,
    },
    /// An index points outside its space.
    #[error("{what}: index {index} out of range (limit {limit})")]
    Range {
        /// Which field.
        what: String,
        /// Offending index.
        index: usize,
        /// Exclusive bound.
        limit: usize,
    },
    /// A term does not list every query exactly once.
    #[error("term {term}: query {query} appears {count} times (expected once)")]
    QueryCover {
        /// Term index.
        term: usize,
        /// Position.
        query: usize,
        /// Times seen.
        count: usize,
    },
}

impl Layout {
    /// Total number of spans.
    pub fn num_spans(&self) -> usize {
        self.span_sets.iter().map(SpanSet::num_spans).sum()
    }

    /// Item index of global span `u`.
    pub fn span_item(&self, u: usize) -> usize {
        self.len + 1 + u
    }

    /// Offset of each span set in the global span numbering.
    pub fn span_offsets(&self) -> Vec<usize> {
        let mut acc = 0;
        self.span_sets
            .iter()
            .map(|s| {
                let o = acc;
                acc += s.num_spans();
                o
            })
            .collect()
    }

    /// Checks shapes and index ranges; every executor and verifier calls it first.
    pub fn validate(&self) -> Result<(), LayoutError> {
        let len = self.len;
        let check_len = |what: String, expected: usize, found: usize| {
            if expected == found {
                Ok(())
            } else {
                Err(LayoutError::Shape {
                    what,
                    expected,
                    found,
                })
            }
        };
        let check_range = |what: &str, xs: &[usize], limit: usize| {
            xs.iter().find(|&&x| x >= limit).map_or(Ok(()), |&x| {
                Err(LayoutError::Range {
                    what: what.to_string(),
                    index: x,
                    limit,
                })
            })
        };
        for (s, set) in self.span_sets.iter().enumerate() {
            match set {
                SpanSet::Blocks {
                    count,
                    width,
                    members,
                    token_queries,
                } => {
                    check_len(
                        format!("span set {s} members"),
                        count * width,
                        members.len(),
                    )?;
                    check_range("span members", members, len + 1)?;
                    if let Some((g, tokens)) = token_queries {
                        check_len(
                            format!("span set {s} token queries"),
                            count * g,
                            tokens.len(),
                        )?;
                        check_range("span token queries", tokens, len.max(1))?;
                    }
                }
                SpanSet::Prefixes { count, width, seqs }
                | SpanSet::ExcludeOne { count, width, seqs } => {
                    check_len(format!("span set {s} sequences"), count * width, seqs.len())?;
                    check_range("span sequences", seqs, len + 1)?;
                }
            }
        }
        let items_limit = len + 1 + self.num_spans();
        for (t, term) in self.terms.iter().enumerate() {
            let q = term.groups * term.group_size;
            check_len(format!("term {t} queries"), q, term.queries.len())?;
            check_len(
                format!("term {t} items"),
                term.groups * term.width,
                term.items.len(),
            )?;
            check_len(format!("term {t} mask"), q * term.width, term.mask.len())?;
            check_range("term queries", &term.queries, len + 1)?;
            check_range("term items", &term.items, items_limit)?;
            let mut seen = vec![0usize; len];
            for &p in &term.queries {
                if p < len {
                    seen[p] += 1;
                }
            }
            if let Some((p, &c)) = seen.iter().enumerate().find(|&(_, &c)| c != 1) {
                return Err(LayoutError::QueryCover {
                    term: t,
                    query: p,
                    count: c,
                });
            }
        }
        Ok(())
    }

    /// The set view: every span's members and every query's parts.
    ///
    /// Pairs that point at the padding slot, and padding queries, are
    /// ignored here; the verifier reports them separately through
    /// [`Layout::padding_leaks`].
    pub fn partition(&self) -> Partition {
        let len = self.len;
        let mut spans = Vec::with_capacity(self.num_spans());
        for set in &self.span_sets {
            for u in 0..set.num_spans() {
                let (members, query) = set.span(u, len);
                spans.push(SpanDef { members, query });
            }
        }
        let mut queries = vec![QueryParts::default(); len];
        for term in &self.terms {
            for (q, item) in term.pairs() {
                if q >= len || item == len {
                    continue;
                }
                if item < len {
                    queries[q].direct.push(item);
                } else {
                    queries[q].spans.push(item - len - 1);
                }
            }
        }
        for parts in &mut queries {
            parts.direct.sort_unstable();
            parts.spans.sort_unstable();
        }
        Partition {
            len,
            spans,
            queries,
        }
    }

    /// Unmasked pairs whose item is the padding slot (a plan bug).
    pub fn padding_leaks(&self) -> usize {
        self.terms
            .iter()
            .flat_map(Term::pairs)
            .filter(|&(q, item)| q < self.len && item == self.len)
            .count()
    }

    /// Builds a generic layout from a partition: one query per group, items
    /// padded to the widest query, spans as padded blocks.
    ///
    /// This is the route for new, irregular plans: write the sets, get an
    /// executable layout whose cost follows the partition's counts. Regular
    /// plans build block-structured layouts directly, which batch better.
    pub fn from_partition(p: &Partition) -> Layout {
        let len = p.len;
        let pad = len;
        let mut span_sets = Vec::new();
        // Pooled spans become padded blocks; token-query spans become
        // single-query blocks.
        let width = p
            .spans
            .iter()
            .map(|s| s.members.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let count = p.spans.len();
        if count > 0 {
            let mut members = vec![pad; count * width];
            let mut tokens = Vec::with_capacity(count);
            let any_token = p
                .spans
                .iter()
                .any(|s| matches!(s.query, SpanQuery::Token(_)));
            for (u, s) in p.spans.iter().enumerate() {
                members[u * width..u * width + s.members.len()].copy_from_slice(&s.members);
                tokens.push(match s.query {
                    SpanQuery::Token(t) => t,
                    SpanQuery::Pooled => s.members.first().copied().unwrap_or(0),
                });
            }
            assert!(
                !any_token
                    || p.spans
                        .iter()
                        .all(|s| matches!(s.query, SpanQuery::Token(_))),
                "from_partition: mixing pooled and token-query spans is not supported"
            );
            span_sets.push(SpanSet::Blocks {
                count,
                width,
                members,
                token_queries: any_token.then_some((1, tokens)),
            });
        }
        let w = p
            .queries
            .iter()
            .map(|q| q.direct.len() + q.spans.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut term = Term::new(len, 1, w, pad);
        for (i, parts) in p.queries.iter().enumerate() {
            term.queries[i] = i;
            let items = parts
                .direct
                .iter()
                .copied()
                .chain(parts.spans.iter().map(|&u| len + 1 + u));
            for (b, item) in items.enumerate() {
                term.items[i * w + b] = item;
                term.mask[i * w + b] = true;
            }
        }
        Layout {
            len,
            span_sets,
            terms: vec![term],
        }
    }
}

impl Partition {
    /// Spans some query actually uses (`U` of paper section 3.1).
    pub fn used_spans(&self) -> Vec<usize> {
        let mut used = vec![false; self.spans.len()];
        for q in &self.queries {
            for &u in &q.spans {
                used[u] = true;
            }
        }
        (0..self.spans.len()).filter(|&u| used[u]).collect()
    }
}
