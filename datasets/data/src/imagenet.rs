//! ImageNet-64: the downsampled-ImageNet `.npz` batches and the shipped
//! Tiny-ImageNet 64x64 JPEG stand-in.
//!
//! The npz batches (`train_data_batch_1.npz` .. `_10`, `val_data.npz`) hold a
//! uint8 array `data` of shape `[N, 12288]`, each row channel-major (4,096 R
//! values, then G, then B), and `labels` of shape `[N]` with classes counted
//! from 1. Here an image is 12,288 sub-pixel tokens in raster order with R G B
//! interleaved per pixel, and labels count from 0.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::archive::{for_each_member, Flow};
use crate::cache::cache_dir;
use crate::error::{utf8, DataError, Result};
use crate::names::{DatasetName, Split};

/// Image side in pixels.
pub const SIDE: usize = 64;
/// Sub-pixel tokens per image (the sequence length of the ImageNet-64 task).
pub const TOKENS: usize = SIDE * SIDE * 3;

/// One 64x64 RGB image with its 0-based label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image64 {
    /// 12,288 sub-pixels, raster order, R G B interleaved per pixel.
    pub pixels: Vec<u8>,
    /// 0-based class index.
    pub label: u32,
}

/// An array read from a `.npy` member.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Shape, C order.
    pub shape: Vec<usize>,
    /// Values widened to i64 (only integer dtypes are supported).
    pub data: NpyData,
}

/// The element storage of an [`NpyArray`].
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `|u1` arrays, kept as bytes (the pixel case, 12,288 bytes per image).
    U8(Vec<u8>),
    /// Any other integer dtype, widened.
    I64(Vec<i64>),
}

fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
}

/// Parses a `.npy` file held in memory; `file` and `member` name it in errors.
pub fn parse_npy(file: &Path, member: &str, bytes: &[u8]) -> Result<NpyArray> {
    let bad = |what: String| DataError::format(file, format!("member {member}"), what);
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("the .npy magic \\x93NUMPY".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!(".npy format version 1, 2 or 3, found {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| bad(format!("a {header_len}-byte header, file too short")))?;
    let header = String::from_utf8_lossy(header);
    let descr = header_value(&header, "descr")
        .and_then(|v| v.strip_prefix('\'')?.split('\'').next())
        .ok_or_else(|| bad(format!("'descr' in the header {header:?}")))?;
    if header_value(&header, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad("C order (fortran_order: False)".into()));
    }
    let shape_text = header_value(&header, "shape")
        .and_then(|v| v.strip_prefix('(')?.split(')').next())
        .ok_or_else(|| bad(format!("'shape' in the header {header:?}")))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| bad(format!("an integer shape, found ({shape_text})")))?;
    let count: usize = shape.iter().product();
    let body = &bytes[start + header_len..];
    let (endian, kind) = descr.split_at(1);
    let width: usize = kind[1..]
        .parse()
        .map_err(|_| bad(format!("an integer dtype, found {descr:?}")))?;
    let signed = match &kind[..1] {
        "i" => true,
        "u" => false,
        _ => return Err(bad(format!("an integer dtype, found {descr:?}"))),
    };
    if !matches!(width, 1 | 2 | 4 | 8) {
        return Err(bad(format!("an integer dtype, found {descr:?}")));
    }
    if body.len() < count * width {
        return Err(bad(format!(
            "{} bytes of data for shape {shape:?}, found {}",
            count * width,
            body.len()
        )));
    }
    let data = if width == 1 && !signed {
        NpyData::U8(body[..count].to_vec())
    } else {
        let big = endian == ">";
        NpyData::I64(
            body[..count * width]
                .chunks_exact(width)
                .map(|c| {
                    let mut b = [0u8; 8];
                    if big {
                        b[8 - width..].copy_from_slice(c);
                        b.reverse();
                    } else {
                        b[..width].copy_from_slice(c);
                    }
                    let v = u64::from_le_bytes(b);
                    if signed && width < 8 && v >> (width * 8 - 1) & 1 == 1 {
                        (v | (u64::MAX << (width * 8))) as i64
                    } else {
                        v as i64
                    }
                })
                .collect(),
        )
    };
    Ok(NpyArray { shape, data })
}

/// Encodes a `.npy` (version 1.0) file.
pub fn encode_npy(descr: &str, shape: &[usize], body: &[u8]) -> Vec<u8> {
    let shape_text = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // NumPy pads the header with spaces so the data starts 64-byte aligned.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + body.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads an ImageNet-64 npz batch. Labels must lie in `1..=classes`.
pub fn read_npz(path: &Path, classes: usize) -> Result<Vec<Image64>> {
    let file = File::open(path).map_err(|e| DataError::io("open", path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| DataError::archive(path, "start", e))?;
    let mut member = |name: &str| -> Result<NpyArray> {
        let mut entry = zip.by_name(name).map_err(|_| {
            DataError::format(
                path,
                format!("member {name}"),
                "an array of that name (np.savez)",
            )
        })?;
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::archive(path, name, e))?;
        parse_npy(path, name, &bytes)
    };
    let data = member("data.npy")?;
    let labels = member("labels.npy")?;
    let NpyData::U8(pixels) = data.data else {
        return Err(DataError::format(
            path,
            "member data.npy",
            "dtype uint8 (|u1)",
        ));
    };
    if data.shape.len() != 2 || data.shape[1] != TOKENS {
        return Err(DataError::format(
            path,
            "member data.npy",
            format!("shape [N, {TOKENS}], found {:?}", data.shape),
        ));
    }
    let n = data.shape[0];
    let labels = match labels.data {
        NpyData::I64(v) => v,
        NpyData::U8(v) => v.into_iter().map(i64::from).collect(),
    };
    if labels.len() != n {
        return Err(DataError::format(
            path,
            "member labels.npy",
            format!("{n} labels (one per image), found {}", labels.len()),
        ));
    }
    let plane = SIDE * SIDE;
    let mut images = Vec::with_capacity(n);
    for (record, (row, &label)) in pixels.chunks_exact(TOKENS).zip(&labels).enumerate() {
        if label < 1 || label > classes as i64 {
            return Err(DataError::BadLabel {
                file: path.to_path_buf(),
                record,
                label,
                classes,
            });
        }
        let mut out = vec![0u8; TOKENS];
        for (i, px) in out.chunks_exact_mut(3).enumerate() {
            px[0] = row[i];
            px[1] = row[plane + i];
            px[2] = row[2 * plane + i];
        }
        images.push(Image64 {
            pixels: out,
            label: (label - 1) as u32,
        });
    }
    Ok(images)
}

/// Writes images as an ImageNet-64 npz batch (stored, 1-based int64 labels).
pub fn write_npz(path: &Path, images: &[Image64]) -> Result<()> {
    let plane = SIDE * SIDE;
    let mut data = Vec::with_capacity(images.len() * TOKENS);
    for img in images {
        for c in 0..3 {
            data.extend((0..plane).map(|i| img.pixels[i * 3 + c]));
        }
    }
    let labels: Vec<u8> = images
        .iter()
        .flat_map(|img| (img.label as i64 + 1).to_le_bytes())
        .collect();
    let file = File::create(path).map_err(|e| DataError::io("create", path, e))?;
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(data.len() as u64 >= u32::MAX as u64);
    let write = |zip: &mut zip::ZipWriter<File>, name: &str, bytes: Vec<u8>| -> Result<()> {
        zip.start_file(name, options)
            .map_err(|e| DataError::io("write", path, std::io::Error::other(e)))?;
        zip.write_all(&bytes)
            .map_err(|e| DataError::io("write", path, e))
    };
    write(
        &mut zip,
        "data.npy",
        encode_npy("|u1", &[images.len(), TOKENS], &data),
    )?;
    write(
        &mut zip,
        "labels.npy",
        encode_npy("<i8", &[images.len()], &labels),
    )?;
    let file = zip
        .finish()
        .map_err(|e| DataError::io("write", path, std::io::Error::other(e)))?;
    file.sync_all().map_err(|e| DataError::io("write", path, e))
}

/// Decodes a 64x64 JPEG, gray or RGB; gray is replicated into R, G and B.
pub fn decode_jpeg64(file: &Path, member: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    let img =
        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).map_err(|e| {
            DataError::format(
                file,
                format!("member {member}"),
                format!("a JPEG image ({e})"),
            )
        })?;
    let ok_color = matches!(img.color(), image::ColorType::L8 | image::ColorType::Rgb8);
    if img.width() as usize != SIDE || img.height() as usize != SIDE || !ok_color {
        return Err(DataError::ImageSize {
            file: file.to_path_buf(),
            member: member.to_string(),
            expected: "64x64 gray or RGB".into(),
            found: format!("{}x{} {:?}", img.width(), img.height(), img.color()),
        });
    }
    Ok(img.into_rgb8().into_raw())
}

/// A Tiny-ImageNet archive (train subset or val) decoded into memory.
#[derive(Debug, Clone)]
pub struct TinyImagenet {
    /// Class ids in label order (sorted wnids).
    pub wnids: Vec<String>,
    /// Images with 0-based labels into `wnids`.
    pub images: Vec<Image64>,
}

/// Reads a shipped Tiny-ImageNet archive: the train subset
/// (`train/<wnid>/images/<wnid>_<n>.JPEG`) or the val split
/// (`val/images/val_<n>.JPEG` labelled by `val/val_annotations.txt`).
/// Labels follow the sorted `wnids.txt`. Train images are ordered by
/// (n, class), so any prefix is class-balanced; val images by n.
pub fn read_tiny_imagenet(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<TinyImagenet> {
    let mut wnids: Option<Vec<String>> = None;
    let mut annotations: HashMap<String, String> = HashMap::new();
    // (sort key n, wnid if known from the path, member name, pixels)
    let mut found: Vec<(u32, Option<String>, String, Vec<u8>)> = Vec::new();
    for_each_member(path, progress, |name, bytes| {
        let rel = name
            .trim_start_matches("./")
            .trim_start_matches("tiny-imagenet-200/");
        let parts: Vec<&str> = rel.split('/').collect();
        match parts.as_slice() {
            ["wnids.txt"] => {
                let text = utf8(bytes, path, name)?;
                wnids = Some(text.split_whitespace().map(str::to_string).collect());
            }
            ["val", "val_annotations.txt"] => {
                let text = utf8(bytes, path, name)?;
                for (i, line) in text.lines().enumerate() {
                    let mut f = line.split('\t');
                    match (f.next(), f.next()) {
                        (Some(file), Some(wnid)) => {
                            annotations.insert(file.to_string(), wnid.to_string());
                        }
                        _ => {
                            return Err(DataError::format(
                                path,
                                format!("{name} line {}", i + 1),
                                "`val_<n>.JPEG<TAB><wnid><TAB>...`",
                            ))
                        }
                    }
                }
            }
            ["train", wnid, "images", file] if file.ends_with(".JPEG") => {
                let n = file
                    .trim_end_matches(".JPEG")
                    .rsplit('_')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| {
                        DataError::format(path, format!("member {name}"), "<wnid>_<n>.JPEG")
                    })?;
                found.push((
                    n,
                    Some(wnid.to_string()),
                    file.to_string(),
                    decode_jpeg64(path, name, &bytes)?,
                ));
            }
            ["val", "images", file] if file.ends_with(".JPEG") => {
                let n = file
                    .trim_start_matches("val_")
                    .trim_end_matches(".JPEG")
                    .parse()
                    .map_err(|_| {
                        DataError::format(path, format!("member {name}"), "val_<n>.JPEG")
                    })?;
                found.push((
                    n,
                    None,
                    file.to_string(),
                    decode_jpeg64(path, name, &bytes)?,
                ));
            }
            _ => {}
        }
        Ok(Flow::Continue)
    })?;
    let mut wnids = wnids.ok_or_else(|| {
        DataError::format(
            path,
            "member tiny-imagenet-200/wnids.txt",
            "the list of class ids",
        )
    })?;
    wnids.sort();
    let index: BTreeMap<&str, u32> = wnids
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i as u32))
        .collect();
    if found.is_empty() {
        return Err(DataError::Empty {
            what: path.display().to_string(),
            hint: "expected train/<wnid>/images/*.JPEG or val/images/*.JPEG members".into(),
        });
    }
    let mut images = Vec::with_capacity(found.len());
    let mut keyed = Vec::with_capacity(found.len());
    for (n, wnid, file, pixels) in found {
        let wnid = match wnid {
            Some(w) => w,
            None => annotations.get(&file).cloned().ok_or_else(|| {
                DataError::format(
                    path,
                    format!("member val/images/{file}"),
                    "a line in val/val_annotations.txt",
                )
            })?,
        };
        let label = *index.get(wnid.as_str()).ok_or_else(|| {
            DataError::format(
                path,
                format!("member {file}"),
                format!("a class listed in wnids.txt, found {wnid}"),
            )
        })?;
        keyed.push(((n, label), Image64 { pixels, label }));
    }
    keyed.sort_by_key(|(k, _)| *k);
    images.extend(keyed.into_iter().map(|(_, img)| img));
    Ok(TinyImagenet { wnids, images })
}

/// ImageNet-64 (or its Tiny-ImageNet stand-in) held in memory.
#[derive(Debug, Clone)]
pub struct ImageNet64 {
    /// The images in file order.
    pub images: Vec<Image64>,
}

impl ImageNet64 {
    /// Loads the stand-in prepared by [`crate::prepare`]: `Train` from
    /// `tiny-imagenet-train/`, `Valid`/`Test` from `tiny-imagenet-val/`.
    pub fn load(data_dir: &Path, split: Split) -> Result<Self> {
        let (name, file) = match split {
            Split::Train => (DatasetName::TinyImagenetTrain, "train_data_batch_1.npz"),
            _ => (DatasetName::TinyImagenetVal, "val_data.npz"),
        };
        let path = cache_dir(data_dir, name).join(file);
        if !path.exists() {
            return Err(DataError::Missing {
                path,
                hint: format!("run `combiner data prepare {name} --from <archive>`"),
            });
        }
        Self::from_npz_files(&[path], 200)
    }

    /// Loads real ImageNet-64 batches (`train_data_batch_*.npz`, `val_data.npz`);
    /// `classes` is 1000 for ImageNet.
    pub fn from_npz_files(paths: &[PathBuf], classes: usize) -> Result<Self> {
        let mut images = Vec::new();
        for p in paths {
            images.extend(read_npz(p, classes)?);
        }
        Ok(Self { images })
    }

    /// Number of distinct labels present.
    pub fn distinct_labels(&self) -> usize {
        self.images
            .iter()
            .map(|i| i.label)
            .collect::<BTreeSet<_>>()
            .len()
    }
}

impl burn::data::dataset::Dataset<Image64> for ImageNet64 {
    fn get(&self, index: usize) -> Option<Image64> {
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

    fn synthetic(n: usize) -> Vec<Image64> {
        (0..n)
            .map(|i| Image64 {
                pixels: (0..TOKENS).map(|t| (t * 31 + i) as u8).collect(),
                label: (i * 7 % 1000) as u32,
            })
            .collect()
    }

    #[test]
    fn npz_round_trip_and_channel_major_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train_data_batch_1.npz");
        let images = synthetic(3);
        write_npz(&path, &images).unwrap();
        assert_eq!(read_npz(&path, 1000).unwrap(), images);
        // Re-read the raw array: row 0 must start with the R plane.
        let mut zip = zip::ZipArchive::new(File::open(&path).unwrap()).unwrap();
        let mut bytes = Vec::new();
        zip.by_name("data.npy")
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        let arr = parse_npy(&path, "data.npy", &bytes).unwrap();
        assert_eq!(arr.shape, vec![3, TOKENS]);
        let NpyData::U8(raw) = arr.data else {
            panic!("u8 expected")
        };
        assert_eq!(raw[1], images[0].pixels[3]);
        assert_eq!(raw[4096], images[0].pixels[1]);
    }

    #[test]
    fn npy_integer_dtypes_widen_with_sign() {
        let body: Vec<u8> = [-2i32, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        let arr = parse_npy(Path::new("f"), "m", &encode_npy("<i4", &[2], &body)).unwrap();
        assert_eq!(arr.data, NpyData::I64(vec![-2, 7]));
        let body: Vec<u8> = [300u16].iter().flat_map(|v| v.to_be_bytes()).collect();
        let arr = parse_npy(Path::new("f"), "m", &encode_npy(">u2", &[1], &body)).unwrap();
        assert_eq!(arr.data, NpyData::I64(vec![300]));
    }

    #[test]
    fn bad_npy_and_labels_are_errors_naming_the_member() {
        let short = encode_npy("|u1", &[2, 3], &[1, 2, 3]);
        let err = parse_npy(Path::new("b.npz"), "data.npy", &short)
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.npz") && err.contains("data.npy"), "{err}");
        let err = parse_npy(Path::new("b.npz"), "x", b"PK\x03\x04 not npy").unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.npz");
        write_npz(&path, &synthetic(20)).unwrap();
        let err = read_npz(&path, 10).unwrap_err();
        assert!(matches!(err, DataError::BadLabel { .. }), "{err}");
    }

    #[test]
    fn tiny_imagenet_replicates_gray_and_labels_val_from_annotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("val.tar.xz");
        let members = vec![
            (
                "tiny-imagenet-200/val/images/val_0.JPEG".to_string(),
                testutil::jpeg(64, 64, 1, 5),
            ),
            (
                "tiny-imagenet-200/val/images/val_1.JPEG".to_string(),
                testutil::jpeg(64, 64, 3, 5),
            ),
            (
                "tiny-imagenet-200/val/val_annotations.txt".to_string(),
                b"val_0.JPEG\tn02\t0\t0\t1\t1\nval_1.JPEG\tn01\t0\t0\t1\t1\n".to_vec(),
            ),
            (
                "tiny-imagenet-200/wnids.txt".to_string(),
                b"n02\nn01\n".to_vec(),
            ),
        ];
        testutil::write_tar_xz(&path, &members);
        let t = read_tiny_imagenet(&path, &mut |_, _| {}).unwrap();
        assert_eq!(t.wnids, vec!["n01", "n02"]);
        assert_eq!(
            t.images.iter().map(|i| i.label).collect::<Vec<_>>(),
            vec![1, 0]
        );
        assert!(t.images[0]
            .pixels
            .chunks(3)
            .all(|p| p[0] == p[1] && p[1] == p[2]));

        let mut bad = members.clone();
        bad[1].1 = testutil::jpeg(32, 32, 3, 5);
        testutil::write_tar_xz(&path, &bad);
        let err = read_tiny_imagenet(&path, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("val_1.JPEG") && err.contains("64x64"), "{err}");
    }
}
