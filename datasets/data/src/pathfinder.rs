//! LRA Pathfinder, generated in code.
//!
//! A `side` x `side` grayscale image holds two main paths and some distractor
//! paths, each a dashed curve of `path_len` pixels. Two endpoint markers
//! (filled squares) are drawn: both on the ends of the first path (label 1,
//! connected) or one on each main path (label 0). The model reads the image
//! as `side * side` gray-level tokens (1,024 for 32x32).
//!
//! Connectivity is guaranteed by construction: along a path no gap is longer
//! than `gap` pixels, so its drawn pixels stay within Chebyshev distance
//! `gap + 1` ([`PathfinderConfig::link_radius`]) of each other, while pixels of
//! different paths (markers included) are kept farther apart than that. A
//! flood fill that links drawn pixels within that radius therefore recovers
//! the label from the image alone; the tests check exactly that.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};

/// Gray level of drawn pixels.
pub const INK: u8 = 255;

/// Generator settings; the difficulty knobs are `path_len`, `distractors`,
/// `dash`/`gap` and `curvature`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathfinderConfig {
    /// Image side in pixels (LRA: 32, 64, 128, 256).
    pub side: usize,
    /// Pixels per path (longer is harder).
    pub path_len: usize,
    /// Drawn pixels per dash.
    pub dash: usize,
    /// Blank pixels between dashes.
    pub gap: usize,
    /// Paths besides the two main ones.
    pub distractors: usize,
    /// Largest change of direction per step, in radians.
    pub curvature: f64,
    /// Marker half-width: a marker is a `(2m+1)` square.
    pub marker: usize,
}

impl Default for PathfinderConfig {
    fn default() -> Self {
        Self {
            side: 32,
            path_len: 14,
            dash: 2,
            gap: 1,
            distractors: 2,
            curvature: 0.6,
            marker: 1,
        }
    }
}

impl PathfinderConfig {
    /// Drawn pixels of one path are within this Chebyshev distance of a
    /// neighbor on the same path; pixels of different paths are farther.
    pub fn link_radius(&self) -> usize {
        self.gap + 1
    }

    fn check(&self) -> Result<()> {
        if self.side < 8 || self.path_len < 2 || self.dash == 0 || self.side <= 2 * self.marker + 2
        {
            return Err(DataError::Config(format!(
                "Pathfinder needs side >= 8, path_len >= 2, dash >= 1 and room for markers, got {self:?}"
            )));
        }
        Ok(())
    }
}

/// One Pathfinder image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathfinderExample {
    /// Gray levels, raster order, `side * side`.
    pub pixels: Vec<u8>,
    /// 1 when the two markers lie on the same path.
    pub label: u8,
    /// (row, col) of the two marker centers.
    pub endpoints: [(usize, usize); 2],
}

type Px = (usize, usize);

/// A candidate path: its pixels in order (8-connected, no repeats in a row).
fn walk(rng: &mut ChaCha8Rng, cfg: &PathfinderConfig) -> Option<Vec<Px>> {
    let lo = cfg.marker as f64;
    let hi = (cfg.side - 1 - cfg.marker) as f64;
    let mut y = rng.random_range(lo..=hi);
    let mut x = rng.random_range(lo..=hi);
    let mut angle = rng.random_range(0.0..std::f64::consts::TAU);
    // Coordinates stay positive, so rounding moves at most one pixel per unit step.
    let mut track = vec![(y.round() as usize, x.round() as usize)];
    for _ in 0..cfg.path_len * 4 {
        if track.len() == cfg.path_len {
            return Some(track);
        }
        angle += rng.random_range(-cfg.curvature..=cfg.curvature);
        y += angle.sin();
        x += angle.cos();
        if y < lo || x < lo || y > hi || x > hi {
            return None;
        }
        let p = (y.round() as usize, x.round() as usize);
        if track.contains(&p) {
            if *track.last().expect("track is never empty") != p {
                return None; // self-crossing: keep paths simple curves
            }
            continue;
        }
        track.push(p);
    }
    None
}

/// Pixels a path may mark: its track plus marker squares at both ends.
fn footprint(track: &[Px], cfg: &PathfinderConfig) -> Vec<Px> {
    let mut out = track.to_vec();
    let m = cfg.marker as isize;
    for &(r, c) in [track[0], track[track.len() - 1]].iter() {
        for dr in -m..=m {
            for dc in -m..=m {
                out.push(((r as isize + dr) as usize, (c as isize + dc) as usize));
            }
        }
    }
    out
}

struct Canvas<'a> {
    cfg: &'a PathfinderConfig,
    /// Pixels closer than the link radius to an existing path.
    blocked: Vec<bool>,
}

impl Canvas<'_> {
    fn fits(&self, pixels: &[Px]) -> bool {
        pixels
            .iter()
            .all(|&(r, c)| !self.blocked[r * self.cfg.side + c])
    }

    fn block(&mut self, pixels: &[Px]) {
        let s = self.cfg.side as isize;
        let k = self.cfg.link_radius() as isize;
        for &(r, c) in pixels {
            for dr in -k..=k {
                for dc in -k..=k {
                    let (rr, cc) = (r as isize + dr, c as isize + dc);
                    if (0..s).contains(&rr) && (0..s).contains(&cc) {
                        self.blocked[(rr * s + cc) as usize] = true;
                    }
                }
            }
        }
    }

    fn place(&mut self, rng: &mut ChaCha8Rng, tries: usize) -> Option<Vec<Px>> {
        for _ in 0..tries {
            if let Some(track) = walk(rng, self.cfg) {
                let fp = footprint(&track, self.cfg);
                if self.fits(&fp) {
                    self.block(&fp);
                    return Some(track);
                }
            }
        }
        None
    }
}

fn draw_dashed(pixels: &mut [u8], track: &[Px], cfg: &PathfinderConfig) {
    for (k, &(r, c)) in track.iter().enumerate() {
        if k % (cfg.dash + cfg.gap) < cfg.dash {
            pixels[r * cfg.side + c] = INK;
        }
    }
}

fn draw_marker(pixels: &mut [u8], (r, c): Px, cfg: &PathfinderConfig) {
    for rr in r - cfg.marker..=r + cfg.marker {
        for cc in c - cfg.marker..=c + cfg.marker {
            pixels[rr * cfg.side + cc] = INK;
        }
    }
}

fn generate_one(
    rng: &mut ChaCha8Rng,
    cfg: &PathfinderConfig,
    label: u8,
) -> Option<PathfinderExample> {
    let mut canvas = Canvas {
        cfg,
        blocked: vec![false; cfg.side * cfg.side],
    };
    let a = canvas.place(rng, 50)?;
    let b = canvas.place(rng, 50)?;
    let mut pixels = vec![0u8; cfg.side * cfg.side];
    for _ in 0..cfg.distractors {
        // A crowded canvas may not fit every distractor; the image stays valid.
        if let Some(d) = canvas.place(rng, 20) {
            draw_dashed(&mut pixels, &d, cfg);
        }
    }
    draw_dashed(&mut pixels, &a, cfg);
    draw_dashed(&mut pixels, &b, cfg);
    let endpoints = if label == 1 {
        [a[0], a[a.len() - 1]]
    } else {
        [a[0], b[0]]
    };
    for &e in &endpoints {
        draw_marker(&mut pixels, e, cfg);
    }
    Some(PathfinderExample {
        pixels,
        label,
        endpoints,
    })
}

/// Whether `from` and `to` are joined by drawn pixels, each step linking
/// pixels within Chebyshev distance `radius`. Reads only the image.
pub fn connected(pixels: &[u8], side: usize, from: Px, to: Px, radius: usize) -> bool {
    let on = |r: usize, c: usize| pixels[r * side + c] > 0;
    if !on(from.0, from.1) || !on(to.0, to.1) {
        return false;
    }
    let mut seen = vec![false; side * side];
    let mut queue = VecDeque::from([from]);
    seen[from.0 * side + from.1] = true;
    let k = radius as isize;
    while let Some((r, c)) = queue.pop_front() {
        if (r, c) == to {
            return true;
        }
        for dr in -k..=k {
            for dc in -k..=k {
                let (rr, cc) = (r as isize + dr, c as isize + dc);
                if rr < 0 || cc < 0 || rr >= side as isize || cc >= side as isize {
                    continue;
                }
                let (rr, cc) = (rr as usize, cc as usize);
                if on(rr, cc) && !seen[rr * side + cc] {
                    seen[rr * side + cc] = true;
                    queue.push_back((rr, cc));
                }
            }
        }
    }
    false
}

/// A generated Pathfinder set.
#[derive(Debug, Clone)]
pub struct Pathfinder {
    /// The images, in generation order.
    pub examples: Vec<PathfinderExample>,
}

impl Pathfinder {
    /// Generates `n` images, labels drawn with probability 1/2 each; the same
    /// `cfg` and `seed` give the same set.
    pub fn generate(cfg: &PathfinderConfig, seed: u64, n: usize) -> Result<Self> {
        cfg.check()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut examples = Vec::with_capacity(n);
        while examples.len() < n {
            let label = u8::from(rng.random_bool(0.5));
            let mut made = None;
            for _ in 0..100 {
                made = generate_one(&mut rng, cfg, label);
                if made.is_some() {
                    break;
                }
            }
            let ex = made.ok_or_else(|| {
                DataError::Config(format!(
                    "Pathfinder: cannot fit two paths of {} pixels in {0}x{0}; shorten path_len",
                    cfg.side
                ))
            })?;
            examples.push(ex);
        }
        Ok(Self { examples })
    }
}

impl burn::data::dataset::Dataset<PathfinderExample> for Pathfinder {
    fn get(&self, index: usize) -> Option<PathfinderExample> {
        self.examples.get(index).cloned()
    }

    fn len(&self) -> usize {
        self.examples.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_equals_flood_fill_connectivity_of_the_image() {
        for cfg in [
            PathfinderConfig::default(),
            PathfinderConfig {
                path_len: 20,
                distractors: 4,
                curvature: 0.9,
                ..Default::default()
            },
            PathfinderConfig {
                gap: 2,
                dash: 3,
                distractors: 6,
                path_len: 10,
                ..Default::default()
            },
        ] {
            let set = Pathfinder::generate(&cfg, 11, 300).unwrap();
            let positives = set.examples.iter().filter(|e| e.label == 1).count();
            assert!(
                (100..200).contains(&positives),
                "balanced labels: {positives}/300"
            );
            for ex in &set.examples {
                assert_eq!(ex.pixels.len(), cfg.side * cfg.side);
                let [a, b] = ex.endpoints;
                let linked = connected(&ex.pixels, cfg.side, a, b, cfg.link_radius());
                assert_eq!(linked, ex.label == 1, "{cfg:?}");
            }
        }
    }

    #[test]
    fn paths_are_dashed_and_distractors_add_ink() {
        let plain = PathfinderConfig {
            distractors: 0,
            ..Default::default()
        };
        let busy = PathfinderConfig {
            distractors: 6,
            ..Default::default()
        };
        let ink = |cfg: &PathfinderConfig| -> usize {
            let set = Pathfinder::generate(cfg, 5, 50).unwrap();
            set.examples
                .iter()
                .map(|e| e.pixels.iter().filter(|&&p| p == INK).count())
                .sum()
        };
        let (a, b) = (ink(&plain), ink(&busy));
        assert!(b > a, "distractors: {b} vs {a}");
        // Two dashed paths of 14 pixels (10 drawn each) and two 3x3 markers at most.
        assert!(a <= 50 * (2 * 10 + 2 * 9), "{a}");
    }

    #[test]
    fn same_seed_same_images() {
        let cfg = PathfinderConfig::default();
        let a = Pathfinder::generate(&cfg, 9, 20).unwrap().examples;
        assert_eq!(a, Pathfinder::generate(&cfg, 9, 20).unwrap().examples);
        assert_ne!(a, Pathfinder::generate(&cfg, 10, 20).unwrap().examples);
    }

    #[test]
    fn connectivity_checker_on_a_hand_drawn_image() {
        let side = 8;
        let mut px = vec![0u8; side * side];
        for c in [1, 2, 4, 5] {
            px[side + c] = INK;
        }
        assert!(connected(&px, side, (1, 1), (1, 5), 2));
        assert!(!connected(&px, side, (1, 1), (1, 5), 1));
        assert!(!connected(&px, side, (1, 1), (6, 6), 2));
    }
}
