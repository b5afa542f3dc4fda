//! CIFAR-10: the official binary batches and the shipped JPEG archive.
//!
//! An image is 3,072 sub-pixel tokens in raster order with the channels of a
//! pixel interleaved: token `(row * 32 + col) * 3 + channel` (R = 0, G = 1,
//! B = 2). The binary batches store each record channel-major (1 label byte,
//! then the 1,024 R bytes, the G bytes, the B bytes); [`read_batch`] and
//! [`write_batch`] convert between the two orders.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::archive::{for_each_member, Flow};
use crate::cache::cache_dir;
use crate::error::{DataError, Result};
use crate::names::{DatasetName, Split};

/// Image side in pixels.
pub const SIDE: usize = 32;
/// Sub-pixel tokens per image.
pub const TOKENS: usize = SIDE * SIDE * 3;
/// Bytes per record of the binary format (label + pixels).
pub const RECORD: usize = 1 + TOKENS;
/// Class names in label order (alphabetical, as in the official batches).
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// Training batch file names of the official binary release.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// Test batch file name of the official binary release.
pub const TEST_FILE: &str = "test_batch.bin";
/// Records per official batch file.
pub const PER_FILE: usize = 10_000;

/// One CIFAR-10 image with its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CifarImage {
    /// 3,072 sub-pixels, raster order, R G B interleaved per pixel.
    pub pixels: Vec<u8>,
    /// Class index into [`CLASSES`].
    pub label: u8,
}

impl CifarImage {
    /// Sub-pixel value at (`row`, `col`, `channel`).
    pub fn at(&self, row: usize, col: usize, channel: usize) -> u8 {
        self.pixels[(row * SIDE + col) * 3 + channel]
    }

    /// The 1,024 gray levels of the LRA Image task, raster order.
    ///
    /// Uses the ITU-R 601 luma weights of `tf.image.rgb_to_grayscale`, which
    /// LRA applies, rounded to the nearest level.
    pub fn grayscale(&self) -> Vec<u8> {
        self.pixels
            .chunks_exact(3)
            .map(|p| {
                let y = 0.2989 * p[0] as f32 + 0.5870 * p[1] as f32 + 0.1140 * p[2] as f32;
                y.round().clamp(0.0, 255.0) as u8
            })
            .collect()
    }
}

/// Parses the records of one binary batch held in memory; `file` names it in errors.
pub fn parse_batch(file: &Path, bytes: &[u8]) -> Result<Vec<CifarImage>> {
    if bytes.is_empty() {
        return Err(DataError::Empty {
            what: file.display().to_string(),
            hint: "a CIFAR-10 batch needs at least one 3,073-byte record".into(),
        });
    }
    let mut images = Vec::with_capacity(bytes.len() / RECORD);
    for (record, chunk) in bytes.chunks(RECORD).enumerate() {
        if chunk.len() < RECORD {
            return Err(DataError::Truncated {
                file: file.to_path_buf(),
                record,
                expected: RECORD,
                found: chunk.len(),
            });
        }
        let label = chunk[0];
        if label as usize >= CLASSES.len() {
            return Err(DataError::BadLabel {
                file: file.to_path_buf(),
                record,
                label: label as i64,
                classes: CLASSES.len(),
            });
        }
        let planes = &chunk[1..];
        let plane = SIDE * SIDE;
        let mut pixels = vec![0u8; TOKENS];
        for (i, px) in pixels.chunks_exact_mut(3).enumerate() {
            px[0] = planes[i];
            px[1] = planes[plane + i];
            px[2] = planes[2 * plane + i];
        }
        images.push(CifarImage { pixels, label });
    }
    Ok(images)
}

/// Reads one binary batch file (`data_batch_N.bin` or `test_batch.bin`).
pub fn read_batch(path: &Path) -> Result<Vec<CifarImage>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io("read", path, e))?;
    parse_batch(path, &bytes)
}

/// Encodes images in the binary batch format.
pub fn encode_batch(images: &[CifarImage]) -> Vec<u8> {
    let plane = SIDE * SIDE;
    let mut out = Vec::with_capacity(images.len() * RECORD);
    for img in images {
        assert_eq!(img.pixels.len(), TOKENS, "CifarImage holds 3072 sub-pixels");
        out.push(img.label);
        for c in 0..3 {
            out.extend((0..plane).map(|i| img.pixels[i * 3 + c]));
        }
    }
    out
}

/// Writes images in the binary batch format.
pub fn write_batch(path: &Path, images: &[CifarImage]) -> Result<()> {
    let mut file = std::fs::File::create(path).map_err(|e| DataError::io("create", path, e))?;
    file.write_all(&encode_batch(images))
        .and_then(|_| file.sync_all())
        .map_err(|e| DataError::io("write", path, e))
}

/// File names of a split in the binary layout.
pub fn split_files(split: Split) -> Vec<&'static str> {
    match split {
        Split::Train => TRAIN_FILES.to_vec(),
        Split::Test | Split::Valid => vec![TEST_FILE],
    }
}

/// Decodes one JPEG member of the shipped archive, which must be 32x32 RGB.
pub fn decode_jpeg(file: &Path, member: &str, bytes: &[u8], label: u8) -> Result<CifarImage> {
    let img =
        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).map_err(|e| {
            DataError::format(
                file,
                format!("member {member}"),
                format!("a JPEG image ({e})"),
            )
        })?;
    let (w, h) = (img.width(), img.height());
    let channels = img.color().channel_count();
    if w as usize != SIDE || h as usize != SIDE || img.color() != image::ColorType::Rgb8 {
        return Err(DataError::ImageSize {
            file: file.to_path_buf(),
            member: member.to_string(),
            expected: "32x32 RGB".into(),
            found: format!("{w}x{h} with {channels} channel(s) ({:?})", img.color()),
        });
    }
    Ok(CifarImage {
        pixels: img.into_rgb8().into_raw(),
        label,
    })
}

/// Splits `train/<class>/NNNN.jpg` into (split, label, index); `None` for
/// members that are not images of a known class.
fn parse_member(name: &str) -> Option<(Split, u8, u32)> {
    let mut parts = name.trim_start_matches("./").split('/');
    let split = match parts.next()? {
        "train" => Split::Train,
        "test" => Split::Test,
        _ => return None,
    };
    let class = parts.next()?;
    let file = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let index = file.strip_suffix(".jpg")?.parse().ok()?;
    let label = CLASSES.iter().position(|c| *c == class)? as u8;
    Some((split, label, index))
}

/// Reads one split of the shipped `cifar10-jpeg.tar.xz`.
///
/// Images come back ordered by (index, class), so every run of ten
/// consecutive images holds one image per class and any prefix is balanced.
/// Members are sorted by name in the archive and `test/` precedes `train/`,
/// so reading the test split stops after decompressing a sixth of it.
pub fn read_jpeg_archive(
    path: &Path,
    split: Split,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<CifarImage>> {
    let want = if split == Split::Train {
        Split::Train
    } else {
        Split::Test
    };
    let [train, test] = scan_jpeg_archive(path, Some(want), progress)?;
    Ok(if want == Split::Train { train } else { test })
}

/// Reads both splits of the shipped JPEG archive in one pass: (train, test).
pub fn read_jpeg_archive_splits(
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<CifarImage>, Vec<CifarImage>)> {
    let [train, test] = scan_jpeg_archive(path, None, progress)?;
    Ok((train, test))
}

fn scan_jpeg_archive(
    path: &Path,
    only: Option<Split>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<[Vec<CifarImage>; 2]> {
    let mut found: [Vec<(u32, CifarImage)>; 2] = [Vec::new(), Vec::new()];
    let mut in_split = false;
    for_each_member(path, progress, |name, bytes| {
        match (parse_member(name), only) {
            (Some((s, label, index)), _) if only.is_none_or(|o| o == s) => {
                in_split = true;
                let slot = usize::from(s != Split::Train);
                found[slot].push((index, decode_jpeg(path, name, &bytes, label)?));
            }
            // Sorted archive: once past the split there is nothing more for us.
            (_, Some(o)) if in_split && !name.starts_with(split_dir(o)) => return Ok(Flow::Stop),
            _ => {}
        }
        Ok(Flow::Continue)
    })?;
    let splits = [Split::Train, Split::Test];
    let mut out: [Vec<CifarImage>; 2] = [Vec::new(), Vec::new()];
    for (slot, mut images) in found.into_iter().enumerate() {
        let split = splits[slot];
        if only.is_none_or(|o| o == split) && images.is_empty() {
            return Err(DataError::Empty {
                what: format!("{} split {split}", path.display()),
                hint: format!(
                    "expected members {}/<class>/NNNN.jpg",
                    split_dir(split).trim_end_matches('/')
                ),
            });
        }
        images.sort_by_key(|(index, img)| (*index, img.label));
        out[slot] = images.into_iter().map(|(_, img)| img).collect();
    }
    Ok(out)
}

fn split_dir(split: Split) -> &'static str {
    match split {
        Split::Train => "train/",
        _ => "test/",
    }
}

/// CIFAR-10 split held in memory.
#[derive(Debug, Clone)]
pub struct Cifar10 {
    /// The images in file order.
    pub images: Vec<CifarImage>,
}

impl Cifar10 {
    /// Loads a split prepared by [`crate::prepare`] (`<data_dir>/cifar10/*.bin`).
    pub fn load(data_dir: &Path, split: Split) -> Result<Self> {
        Self::from_binary_dir(&cache_dir(data_dir, DatasetName::Cifar10), split)
    }

    /// Loads a split from a folder of official binary batches
    /// (`cifar-10-batches-bin/`).
    pub fn from_binary_dir(dir: &Path, split: Split) -> Result<Self> {
        let mut images = Vec::new();
        for name in split_files(split) {
            let path: PathBuf = dir.join(name);
            if !path.exists() {
                return Err(DataError::Missing {
                    path,
                    hint: "run `combiner data prepare cifar10 --from <archive or folder>`".into(),
                });
            }
            images.extend(read_batch(&path)?);
        }
        Ok(Self { images })
    }

    /// Images per class, indexed by label.
    pub fn class_counts(&self) -> [usize; 10] {
        let mut counts = [0; 10];
        for img in &self.images {
            counts[img.label as usize] += 1;
        }
        counts
    }
}

impl burn::data::dataset::Dataset<CifarImage> for Cifar10 {
    fn get(&self, index: usize) -> Option<CifarImage> {
        self.images.get(index).cloned()
    }

    fn len(&self) -> usize {
        self.images.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;

    fn synthetic(n: usize) -> Vec<CifarImage> {
        (0..n)
            .map(|i| CifarImage {
                pixels: (0..TOKENS).map(|t| (t * 7 + i * 13) as u8).collect(),
                label: (i % 10) as u8,
            })
            .collect()
    }

    #[test]
    fn binary_round_trip_keeps_pixels_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data_batch_1.bin");
        let images = synthetic(25);
        write_batch(&path, &images).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            25 * RECORD
        );
        assert_eq!(read_batch(&path).unwrap(), images);
    }

    #[test]
    fn binary_layout_is_channel_major_and_tokens_are_interleaved() {
        // A red pixel at (row 1, col 2) must land in the R plane on disk and
        // at token (1*32+2)*3 in memory.
        let mut pixels = vec![0u8; TOKENS];
        pixels[(32 + 2) * 3] = 200;
        pixels[(32 + 2) * 3 + 2] = 50;
        let bytes = encode_batch(&[CifarImage { pixels, label: 3 }]);
        assert_eq!(bytes[0], 3);
        assert_eq!(bytes[1 + 32 + 2], 200);
        assert_eq!(bytes[1 + 2 * 1024 + 32 + 2], 50);
        let back = parse_batch(Path::new("x"), &bytes).unwrap();
        assert_eq!((back[0].at(1, 2, 0), back[0].at(1, 2, 2)), (200, 50));
    }

    #[test]
    fn truncated_batch_names_file_and_record() {
        let bytes = encode_batch(&synthetic(3));
        let err =
            parse_batch(Path::new("data_batch_9.bin"), &bytes[..2 * RECORD + 100]).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    record: 2,
                    found: 100,
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("data_batch_9.bin") && msg.contains("record 2"),
            "{msg}"
        );
    }

    #[test]
    fn bad_label_and_empty_file_are_errors() {
        let mut bytes = encode_batch(&synthetic(2));
        bytes[RECORD] = 10;
        let err = parse_batch(Path::new("b.bin"), &bytes).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::BadLabel {
                    record: 1,
                    label: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            parse_batch(Path::new("b.bin"), &[]),
            Err(DataError::Empty { .. })
        ));
    }

    #[test]
    fn grayscale_of_gray_pixels_is_identity() {
        let pixels = (0..TOKENS).map(|t| (t / 3) as u8).collect();
        let gray = CifarImage { pixels, label: 0 }.grayscale();
        assert_eq!(gray.len(), 1024);
        assert!(gray.iter().enumerate().all(|(i, &g)| g == i as u8));
    }

    #[test]
    fn jpeg_archive_reads_split_in_balanced_order_and_rejects_wrong_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.tar.xz");
        let mut members = Vec::new();
        for split in ["test", "train"] {
            for class in CLASSES {
                for i in 0..2 {
                    members.push((
                        format!("{split}/{class}/{i:04}.jpg"),
                        testutil::jpeg(32, 32, 3, 3),
                    ));
                }
            }
        }
        testutil::write_tar_xz(&path, &members);
        let test = read_jpeg_archive(&path, Split::Test, &mut |_, _| {}).unwrap();
        assert_eq!(test.len(), 20);
        let labels: Vec<u8> = test.iter().map(|i| i.label).collect();
        assert_eq!(&labels[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(
            read_jpeg_archive(&path, Split::Train, &mut |_, _| {})
                .unwrap()
                .len(),
            20
        );

        members[3].1 = testutil::jpeg(32, 31, 3, 3);
        testutil::write_tar_xz(&path, &members);
        let err = read_jpeg_archive(&path, Split::Test, &mut |_, _| {}).unwrap_err();
        assert!(matches!(err, DataError::ImageSize { .. }), "{err}");
        assert!(err.to_string().contains(&members[3].0), "{err}");

        members[3].1 = testutil::jpeg(32, 32, 1, 3);
        testutil::write_tar_xz(&path, &members);
        let err = read_jpeg_archive(&path, Split::Test, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("32x32 RGB"), "{err}");

        members[3].1 = b"not a jpeg".to_vec();
        testutil::write_tar_xz(&path, &members);
        let err = read_jpeg_archive(&path, Split::Test, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains(&members[3].0), "{err}");
    }
}
