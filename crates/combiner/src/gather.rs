//! Row gathers along the sequence dimension, read as views where the
//! indices allow.
//!
//! Layouts name the rows they read with index lists, and a gather
//! (`select`) is the general way to read them. But most plans lay blocks out
//! on a grid: a block's members are a contiguous run of positions, a
//! column-grouped term reads the grid transposed. Such an index list is an
//! affine function of two counters, and the rows it picks are a strided
//! window of the source: [`Rows`] finds that form once on the host and
//! reads it with `narrow`, `reshape` and a transpose. On the device that is a
//! copy, where a gather is an index read and its backward a scatter-add
//! (atomic adds, slow in bf16); the result is the same tensor.
//!
//! A [`Table`] is a list of tensors stacked along the sequence dimension
//! (tokens, the padding row, span summaries) read through [`Rows`] without
//! concatenating them when a view falls inside one of them.

use std::cell::OnceCell;

use burn::prelude::*;

/// Row `i` of an affine gather is
/// `start + (i / inner) * outer_stride + (i % inner) * inner_stride`, for
/// `i < outer * inner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    /// `start..start + n`.
    Range { start: usize, n: usize },
    /// `outer` runs of `inner` consecutive rows, `stride` apart
    /// (`stride > inner`).
    Blocks {
        start: usize,
        outer: usize,
        inner: usize,
        stride: usize,
    },
    /// The window read column by column: row `a * inner + j` is
    /// `start + j * stride + a` (`a < outer <= stride`).
    Transposed {
        start: usize,
        outer: usize,
        inner: usize,
        stride: usize,
    },
    /// `outer` copies of the run `start, start + step, ...` of `inner` rows
    /// (every query group of a term scoring the same items).
    Repeat {
        start: usize,
        outer: usize,
        inner: usize,
        step: usize,
    },
}

impl View {
    /// The affine form of `idx`, if it has one that a view can read.
    fn detect(idx: &[usize]) -> Option<View> {
        let n = idx.len();
        let start = *idx.first()?;
        if n == 1 {
            return Some(View::Range { start, n });
        }
        let step = |i: usize| idx[i] as i64 - idx[i - 1] as i64;
        let inner_stride = step(1);
        if idx.iter().all(|&p| p == start) {
            return Some(View::Repeat {
                start,
                outer: n,
                inner: 1,
                step: 1,
            });
        }
        if inner_stride <= 0 {
            return None;
        }
        let inner = (2..n).find(|&i| step(i) != inner_stride).unwrap_or(n);
        if !n.is_multiple_of(inner) {
            return None;
        }
        let outer = n / inner;
        let outer_stride = if outer > 1 {
            idx[inner] as i64 - start as i64
        } else {
            0
        };
        let affine = idx.iter().enumerate().all(|(i, &p)| {
            p as i64
                == start as i64
                    + (i / inner) as i64 * outer_stride
                    + (i % inner) as i64 * inner_stride
        });
        if !affine {
            return None;
        }
        let (si, so) = (inner_stride as usize, outer_stride);
        if outer == 1 {
            // one run with a constant step
            return Some(if si == 1 {
                View::Range { start, n }
            } else {
                View::Blocks {
                    start,
                    outer: n,
                    inner: 1,
                    stride: si,
                }
            });
        }
        if so == 0 {
            return Some(View::Repeat {
                start,
                outer,
                inner,
                step: si,
            });
        }
        if so < 0 {
            return None;
        }
        let so = so as usize;
        match (si, so) {
            (1, so) if so == inner => Some(View::Range { start, n }),
            (1, so) if so > inner => Some(View::Blocks {
                start,
                outer,
                inner,
                stride: so,
            }),
            (si, 1) if si >= outer => Some(View::Transposed {
                start,
                outer,
                inner,
                stride: si,
            }),
            _ => None,
        }
    }

    /// Rows of the source the view reads from: `start..end`.
    fn window(&self) -> (usize, usize) {
        match *self {
            View::Range { start, n } => (start, start + n),
            View::Blocks {
                start,
                outer,
                stride,
                ..
            } => (start, start + outer * stride),
            View::Transposed {
                start,
                inner,
                stride,
                ..
            } => (start, start + inner * stride),
            View::Repeat {
                start, inner, step, ..
            } => (start, start + inner * step),
        }
    }

    /// The rows of `x: [b, h, m, f]` (dim 2) the view names, `offset` being
    /// the index of `x`'s first row. The window must lie inside `x`.
    fn read<B: Backend>(&self, x: Tensor<B, 4>, offset: usize) -> Tensor<B, 4> {
        let [b, h, _, f] = x.dims();
        match *self {
            View::Range { start, n } => narrow(x, 2, start - offset, n),
            View::Blocks {
                start,
                outer,
                inner,
                stride,
            } => grid(x, start - offset, outer, stride, inner).reshape([b, h, outer * inner, f]),
            View::Transposed {
                start,
                outer,
                inner,
                stride,
            } => grid(x, start - offset, inner, stride, outer)
                .swap_dims(2, 3)
                .reshape([b, h, outer * inner, f]),
            View::Repeat {
                start,
                outer,
                inner,
                step,
            } => {
                let run = View::Blocks {
                    start,
                    outer: inner,
                    inner: 1,
                    stride: step,
                };
                run.read(x, offset)
                    .unsqueeze_dim::<5>(2)
                    .expand([b, h, outer, inner, f])
                    .reshape([b, h, outer * inner, f])
            }
        }
    }
}

impl View {
    /// The rows of `x: [b, h, m, f]` the view names as a `[b, h, groups,
    /// size, f]` tensor, row `a * size + j` at `[.., a, j, ..]`: a strided
    /// view (no copy) where the view's runs are the groups, `None` otherwise.
    fn read_grouped<B: Backend>(
        &self,
        x: Tensor<B, 4>,
        offset: usize,
        groups: usize,
        size: usize,
    ) -> Option<Tensor<B, 5>> {
        let [b, h, _, f] = x.dims();
        match *self {
            View::Range { start, n } if n == groups * size => {
                Some(narrow(x, 2, start - offset, n).reshape([b, h, groups, size, f]))
            }
            View::Blocks {
                start,
                outer,
                inner,
                stride,
            } if (outer, inner) == (groups, size) => {
                Some(grid(x, start - offset, outer, stride, inner))
            }
            View::Transposed {
                start,
                outer,
                inner,
                stride,
            } if (outer, inner) == (groups, size) => {
                Some(grid(x, start - offset, inner, stride, outer).swap_dims(2, 3))
            }
            _ => None,
        }
    }
}

/// Rows `start..start + rows * stride` of `x: [b, h, m, f]` as a
/// `[b, h, rows, cols, f]` grid: `rows` runs of `cols` consecutive rows,
/// `stride` apart.
fn grid<B: Backend>(
    x: Tensor<B, 4>,
    start: usize,
    rows: usize,
    stride: usize,
    cols: usize,
) -> Tensor<B, 5> {
    let [b, h, _, f] = x.dims();
    narrow(
        narrow(x, 2, start, rows * stride).reshape([b, h, rows, stride, f]),
        3,
        0,
        cols,
    )
}

/// `x.narrow(dim, start, len)`, or `x` itself when that is all of it: a
/// narrow is a slice whose backward writes the gradient into zeros of the
/// whole (a fill and a copy), for nothing when nothing is cut.
fn narrow<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    dim: usize,
    start: usize,
    len: usize,
) -> Tensor<B, D> {
    if start == 0 && len == x.dims()[dim] {
        x
    } else {
        x.narrow(dim, start, len)
    }
}

/// A row gather along dim 2 of `[b, h, m, f]` tensors: the index tensor on
/// the device, and the view that reads the same rows where one exists.
#[derive(Clone, Debug)]
pub(crate) struct Rows<B: Backend> {
    index: Tensor<B, 1, Int>,
    view: Option<View>,
    len: usize,
}

impl<B: Backend> Rows<B> {
    /// The gather of rows `idx`, uploaded to `device`.
    pub fn new(idx: &[usize], device: &B::Device) -> Self {
        Rows {
            index: crate::exec::int_tensor::<B>(idx, device),
            view: View::detect(idx),
            len: idx.len(),
        }
    }

    /// The index tensor.
    pub fn index(&self) -> &Tensor<B, 1, Int> {
        &self.index
    }

    /// Whether the rows are read as a view (no gather).
    #[cfg(test)]
    pub fn is_view(&self) -> bool {
        self.view.is_some()
    }

    /// Rows of `x: [b, h, m, f]`: `x.select(2, idx)`, as a view when the
    /// indices form one inside `0..m`.
    pub fn take(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let m = x.dims()[2];
        match self.view {
            Some(view) if view.window().1 <= m => view.read(x, 0),
            _ => x.select(2, self.index.clone()),
        }
    }

    /// Rows of `x: [b, m, f]` along dim 1.
    pub fn take_3d(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, _, f] = x.dims();
        self.take(x.unsqueeze_dim(1)).reshape([b, self.len, f])
    }
}

/// Tensors `[b, h, m_i, f]` stacked along dim 2 without being copied into
/// one: [`Table::take`] reads a view from the part its window falls in and
/// concatenates the parts (once) only for a gather that spans several.
#[derive(Debug)]
pub(crate) struct Table<B: Backend> {
    parts: Vec<Tensor<B, 4>>,
    whole: OnceCell<Tensor<B, 4>>,
}

impl<B: Backend> Clone for Table<B> {
    fn clone(&self) -> Self {
        Table::new(self.parts.clone())
    }
}

impl<B: Backend> Table<B> {
    /// The stack of `parts` (at least one, equal in every dim but 2).
    pub fn new(parts: Vec<Tensor<B, 4>>) -> Self {
        assert!(!parts.is_empty(), "a table has at least one part");
        Table {
            parts,
            whole: OnceCell::new(),
        }
    }

    /// This table with `more` stacked after it.
    pub fn extend(mut self, more: impl IntoIterator<Item = Tensor<B, 4>>) -> Self {
        self.parts.extend(more);
        Table::new(self.parts)
    }

    /// `f` applied to every part (a row-wise `f` commutes with stacking).
    pub fn map(&self, f: impl Fn(Tensor<B, 4>) -> Tensor<B, 4>) -> Self {
        Table::new(self.parts.iter().cloned().map(f).collect())
    }

    /// `[b, h, sum m_i, f]`.
    pub fn first(&self) -> &Tensor<B, 4> {
        &self.parts[0]
    }

    /// Shape of the stacked table.
    pub fn dims(&self) -> [usize; 4] {
        let mut dims = self.parts[0].dims();
        dims[2] = self.parts.iter().map(|p| p.dims()[2]).sum();
        dims
    }

    /// The view of `rows` and the part (with the index of its first row)
    /// its window falls inside, if both exist.
    fn part_of(&self, rows: &Rows<B>) -> Option<(View, &Tensor<B, 4>, usize)> {
        let view = rows.view?;
        let (start, end) = view.window();
        let mut offset = 0;
        for part in &self.parts {
            let m = part.dims()[2];
            if offset <= start && end <= offset + m {
                return Some((view, part, offset));
            }
            offset += m;
        }
        None
    }

    /// Rows `rows` of the stack.
    pub fn take(&self, rows: &Rows<B>) -> Tensor<B, 4> {
        if let Some((view, part, offset)) = self.part_of(rows) {
            return view.read(part.clone(), offset);
        }
        let whole = self
            .whole
            .get_or_init(|| Tensor::cat(self.parts.clone(), 2))
            .clone();
        whole.select(2, rows.index.clone())
    }

    /// Rows `rows` of the stack as `[b, h, groups, size, f]` (row `a * size
    /// + j` at `[.., a, j, ..]`): a strided view of one part wherever the
    /// rows are a grid of it, so that the attention kernels read blocks and
    /// transposed blocks in place; [`Table::take`] reshaped otherwise.
    pub fn take_grouped(&self, rows: &Rows<B>, groups: usize, size: usize) -> Tensor<B, 5> {
        if let Some((view, part, offset)) = self.part_of(rows) {
            if let Some(x) = view.read_grouped(part.clone(), offset, groups, size) {
                return x;
            }
        }
        let [b, h, _, f] = self.parts[0].dims();
        self.take(rows).reshape([b, h, groups, size, f])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;

    type B = burn_ndarray::NdArray<f32>;
    type A = Autodiff<B>;

    fn source<Bk: Backend>(m: usize, dev: &Bk::Device) -> Tensor<Bk, 4> {
        let n = 2 * 3 * m * 2;
        Tensor::<Bk, 1>::from_data(
            TensorData::new((0..n).map(|x| x as f32).collect::<Vec<_>>(), [n]),
            dev,
        )
        .reshape([2, 3, m, 2])
    }

    fn cases() -> Vec<(Vec<usize>, bool)> {
        let grid = |n: usize, m: usize, off: usize| -> Vec<usize> {
            (0..m)
                .flat_map(|c| (0..n).map(move |r| off + r * m + c))
                .collect()
        };
        vec![
            ((0..12).collect(), true),                               // identity
            ((5..9).collect(), true),                                // a run
            (vec![7], true),                                         // one row
            (grid(3, 4, 0), true),                                   // a 3 x 4 grid by columns
            (grid(4, 3, 5), true),                                   // ... at an offset
            ((0..4).flat_map(|r| r * 5..r * 5 + 2).collect(), true), // blocks
            ((0..5).map(|i| 2 + 3 * i).collect(), true),             // strided
            (vec![3, 1, 2], false),                                  // a permutation
            (vec![0, 1, 2, 19], false),                              // padding at the end
            (vec![4, 4, 4], true),                                   // one row repeated
            ([2, 3, 4].repeat(3), true),                             // a run repeated
            ([1, 5, 9].repeat(2), true),                             // a strided run repeated
            (vec![0, 2, 1, 3, 9, 9], false),                         // not affine
            (vec![5, 4, 3], false),                                  // descending
        ]
    }

    #[test]
    fn views_read_what_select_reads_forward_and_backward() {
        let dev = Default::default();
        for (idx, is_view) in cases() {
            let m = 21;
            let rows = Rows::<A>::new(&idx, &dev);
            assert_eq!(rows.is_view(), is_view, "{idx:?}");
            let x = source::<A>(m, &dev).require_grad();
            let y = source::<A>(m, &dev).require_grad();
            let taken = rows.take(x.clone());
            let picked = y.clone().select(2, int_tensor(&idx, &dev));
            assert_eq!(taken.to_data(), picked.to_data(), "{idx:?}");
            // the same gradient, repeats and all
            let w = source::<A>(idx.len(), &dev);
            let gx = (taken * w.clone()).sum().backward();
            let gy = (picked * w).sum().backward();
            assert_eq!(
                x.grad(&gx).unwrap().to_data(),
                y.grad(&gy).unwrap().to_data(),
                "{idx:?}"
            );
        }
    }

    #[test]
    fn views_past_the_source_fall_back_to_gathers() {
        // columns of a 3 x 4 grid whose window (0..12) is longer than the source
        let dev = Default::default();
        let idx = vec![0, 4, 8, 1, 5, 9];
        let rows = Rows::<B>::new(&idx, &dev);
        let x = source::<B>(10, &dev);
        let want = x.clone().select(2, int_tensor(&idx, &dev));
        assert_eq!(rows.take(x).to_data(), want.to_data());
    }

    #[test]
    fn tables_read_across_and_inside_parts() {
        let dev = Default::default();
        let whole = source::<B>(20, &dev);
        let table = Table::new(vec![
            whole.clone().narrow(2, 0, 8),
            whole.clone().narrow(2, 8, 1),
            whole.clone().narrow(2, 9, 11),
        ]);
        assert_eq!(table.dims(), whole.dims());
        let mut cases = cases();
        cases.push(((9..20).collect(), true)); // the last part alone
        cases.push(((6..12).collect(), true)); // a run across parts
        for (idx, _) in cases {
            let rows = Rows::<B>::new(&idx, &dev);
            let want = whole.clone().select(2, int_tensor(&idx, &dev));
            assert_eq!(table.take(&rows).to_data(), want.to_data(), "{idx:?}");
        }
    }

    #[test]
    fn grouped_reads_are_the_rows_reshaped_forward_and_backward() {
        let dev = Default::default();
        let grid = |n: usize, m: usize, off: usize| -> Vec<usize> {
            (0..m)
                .flat_map(|c| (0..n).map(move |r| off + r * m + c))
                .collect()
        };
        // (rows, groups, size)
        let cases = vec![
            ((0..12).collect::<Vec<_>>(), 3, 4),
            ((0..12).collect(), 12, 1),
            (grid(3, 4, 0), 4, 3),
            (grid(4, 3, 5), 3, 4),
            (grid(3, 4, 0), 2, 6), // a transposed grid read in other groups
            ((0..4).flat_map(|r| r * 5..r * 5 + 2).collect(), 4, 2),
            ((0..4).flat_map(|r| r * 5..r * 5 + 2).collect(), 2, 4),
            (vec![3, 1, 2, 0], 2, 2),
            ([2, 3, 4].repeat(2), 2, 3),
        ];
        for (idx, groups, size) in cases {
            let x = source::<A>(21, &dev).require_grad();
            let y = source::<A>(21, &dev).require_grad();
            let table = Table::new(vec![x.clone().narrow(2, 0, 20), x.clone().narrow(2, 20, 1)]);
            let rows = Rows::<A>::new(&idx, &dev);
            let grouped = table.take_grouped(&rows, groups, size);
            let want = y
                .clone()
                .select(2, int_tensor(&idx, &dev))
                .reshape([2, 3, groups, size, 2]);
            assert_eq!(grouped.to_data(), want.to_data(), "{idx:?}");
            let w = source::<A>(idx.len(), &dev).reshape([2, 3, groups, size, 2]);
            let gx = (grouped * w.clone()).sum().backward();
            let gy = (want * w).sum().backward();
            assert_eq!(
                x.grad(&gx).unwrap().to_data(),
                y.grad(&gy).unwrap().to_data(),
                "{idx:?}"
            );
        }
    }

    fn int_tensor<Bk: Backend>(v: &[usize], dev: &Bk::Device) -> Tensor<Bk, 1, Int> {
        crate::exec::int_tensor::<Bk>(v, dev)
    }
}
