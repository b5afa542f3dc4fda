//! Pictures of plans: one query's support as text (paper Figures 1/2), the
//! support matrix and the effective attention as PNG, and a text heat map.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use combiner::{Grid, Partition};

/// Direct part, in PNG and terminal.
const BLUE: [u8; 3] = [31, 119, 180];
const WHITE: [u8; 3] = [255, 255, 255];
/// One shade per span, cycled; neighbouring span ids get different shades.
const YELLOWS: [[u8; 3]; 6] = [
    [255, 215, 0],
    [214, 160, 0],
    [255, 236, 140],
    [180, 140, 0],
    [255, 190, 70],
    [238, 220, 90],
];
/// xterm-256 yellows matching `YELLOWS`.
const ANSI_YELLOWS: [u8; 6] = [226, 178, 228, 136, 214, 185];
/// Span letters in order; more spans than letters reuse them.
const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Intensity characters of the text heat map, low to high (' ' = zero).
const LEVELS: &[u8] = b".:-=+*#%@";
/// Positions per line when a plan has no grid.
const LINE: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cell {
    Query,
    Direct,
    /// Rank of the span among the query's spans.
    Span(usize),
    Outside,
}

/// One query's support as text: `@` query, `#` direct, a letter per span,
/// `.` outside; laid out on `grid` (axial plans) or in lines of 64.
pub fn support_text(p: &Partition, query: usize, grid: Option<Grid>, color: bool) -> String {
    let len = p.len;
    let parts = &p.queries[query];
    let mut cells = vec![Cell::Outside; len];
    for &j in &parts.direct {
        cells[j] = Cell::Direct;
    }
    for (rank, &u) in parts.spans.iter().enumerate() {
        for &j in &p.spans[u].members {
            cells[j] = Cell::Span(rank);
        }
    }
    cells[query] = Cell::Query;

    let paint = |c: Cell| -> String {
        let (ch, code) = match c {
            Cell::Query => ('@', "1;31".to_string()),
            Cell::Direct => ('#', "1;34".to_string()),
            Cell::Span(r) => (
                LETTERS[r % LETTERS.len()] as char,
                format!("38;5;{}", ANSI_YELLOWS[r % ANSI_YELLOWS.len()]),
            ),
            Cell::Outside => ('.', "2".to_string()),
        };
        if color {
            format!("\x1b[{code}m{ch}\x1b[0m")
        } else {
            ch.to_string()
        }
    };

    let mut s = String::new();
    match grid {
        Some(g) => {
            let _ = writeln!(
                s,
                "  grid {} rows x {} columns (i = row * {} + column)",
                g.rows, g.cols, g.cols
            );
            let w = (g.rows.max(1) - 1).to_string().len();
            for r in 0..g.rows {
                let _ = write!(s, "  {r:>w$} |");
                for c in 0..g.cols {
                    let i = r * g.cols + c;
                    s.push(' ');
                    s.push_str(&if i < len { paint(cells[i]) } else { " ".into() });
                }
                s.push('\n');
            }
        }
        None => {
            let w = (len - 1).to_string().len();
            for start in (0..len).step_by(LINE) {
                let _ = write!(s, "  {start:>w$} | ");
                for &c in &cells[start..(start + LINE).min(len)] {
                    s.push_str(&paint(c));
                }
                s.push('\n');
            }
        }
    }
    let outside = cells.iter().filter(|&&c| c == Cell::Outside).count();
    let _ = writeln!(
        s,
        "  legend: {} query {query} | {} direct: {} positions | {} {} ... spans: {} | \
         {} outside support: {outside}",
        paint(Cell::Query),
        paint(Cell::Direct),
        parts.direct.len(),
        paint(Cell::Span(0)),
        paint(Cell::Span(1)),
        parts.spans.len(),
        paint(Cell::Outside),
    );
    const SHOWN: usize = 26;
    for (rank, &u) in parts.spans.iter().enumerate().take(SHOWN) {
        let m = &p.spans[u].members;
        let _ = writeln!(
            s,
            "    {}: span {u}, {} positions {}",
            paint(Cell::Span(rank)),
            m.len(),
            ranges(m)
        );
    }
    if parts.spans.len() > SHOWN {
        let _ = writeln!(s, "    ... and {} more spans", parts.spans.len() - SHOWN);
    }
    s
}

/// Sorted positions as runs, e.g. `0-7,16,24-31`, cut at about 60 characters.
fn ranges(xs: &[usize]) -> String {
    let mut runs: Vec<String> = Vec::new();
    let mut k = 0;
    while k < xs.len() {
        let mut e = k;
        while e + 1 < xs.len() && xs[e + 1] == xs[e] + 1 {
            e += 1;
        }
        runs.push(if e == k {
            xs[k].to_string()
        } else {
            format!("{}-{}", xs[k], xs[e])
        });
        k = e + 1;
    }
    let mut s = String::new();
    for (n, r) in runs.iter().enumerate() {
        if s.len() + r.len() > 60 {
            let _ = write!(s, ",... ({} runs)", runs.len());
            break;
        }
        if n > 0 {
            s.push(',');
        }
        s.push_str(r);
    }
    s
}

/// Pixels per matrix cell: small matrices are scaled up to about 512 px.
pub fn scale_for(len: usize) -> usize {
    (512 / len.max(1)).max(1)
}

/// The support matrix (rows = queries, columns = keys) as RGB cells:
/// blue = direct, a yellow shade per span id, white = outside.
pub fn support_cells(p: &Partition) -> Vec<[u8; 3]> {
    let len = p.len;
    let mut cells = vec![WHITE; len * len];
    for (i, parts) in p.queries.iter().enumerate() {
        for &j in &parts.direct {
            cells[i * len + j] = BLUE;
        }
        for &u in &parts.spans {
            for &j in &p.spans[u].members {
                cells[i * len + j] = YELLOWS[u % YELLOWS.len()];
            }
        }
    }
    cells
}

/// Position of `v` on a log scale spanning four decades below `max`, in `[0, 1]`.
fn level(v: f32, max: f32) -> f32 {
    (1.0 + (v / max).log10() / 4.0).clamp(0.0, 1.0)
}

/// A dense matrix as a heat map: white = 0, light to dark on a log scale
/// over four decades below the largest entry.
pub fn heat_cells(m: &[f32]) -> Vec<[u8; 3]> {
    const STOPS: [[f32; 3]; 7] = [
        [252.0, 253.0, 191.0],
        [254.0, 176.0, 120.0],
        [241.0, 96.0, 93.0],
        [183.0, 55.0, 121.0],
        [114.0, 31.0, 129.0],
        [44.0, 17.0, 95.0],
        [0.0, 0.0, 4.0],
    ];
    let max = m.iter().copied().fold(0.0f32, f32::max);
    m.iter()
        .map(|&v| {
            if v <= 0.0 || max <= 0.0 {
                return WHITE;
            }
            let x = level(v, max) * (STOPS.len() - 1) as f32;
            let k = (x.floor() as usize).min(STOPS.len() - 2);
            let f = x - k as f32;
            let (a, b) = (STOPS[k], STOPS[k + 1]);
            [0, 1, 2].map(|c| (a[c] + (b[c] - a[c]) * f).round() as u8)
        })
        .collect()
}

/// A square `len x len` matrix as text, one intensity character per entry.
pub fn heat_text(m: &[f32], len: usize) -> String {
    let max = m.iter().copied().fold(0.0f32, f32::max);
    let w = (len.max(1) - 1).to_string().len();
    let mut s = String::new();
    for i in 0..len {
        let _ = write!(s, "  {i:>w$} | ");
        for &v in &m[i * len..(i + 1) * len] {
            s.push(if v <= 0.0 || max <= 0.0 {
                ' '
            } else {
                let k = (level(v, max) * (LEVELS.len() - 1) as f32).round() as usize;
                LEVELS[k] as char
            });
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "  rows: queries i, columns: keys j; ' ' = 0, then `{}` on a log scale \
         from 1e-4 x max to max = {max:.3}",
        std::str::from_utf8(LEVELS).expect("ascii")
    );
    s
}

/// Writes `n x n` cells as an RGB PNG, each cell `scale x scale` pixels.
pub fn write_png(path: &Path, cells: &[[u8; 3]], n: usize, scale: usize) -> Result<()> {
    let side = n * scale;
    let mut rgb = Vec::with_capacity(side * side * 3);
    for r in 0..n {
        let mut line = Vec::with_capacity(side * 3);
        for c in &cells[r * n..(r + 1) * n] {
            for _ in 0..scale {
                line.extend_from_slice(c);
            }
        }
        for _ in 0..scale {
            rgb.extend_from_slice(&line);
        }
    }
    Ok(combiner_data::picture::write_rgb_png(
        path,
        side as u32,
        side as u32,
        &rgb,
    )?)
}
