//! Builders for small archives that tests corrupt on purpose.

use std::path::Path;

/// Writes `members` as a tar.xz archive (member order kept).
pub fn write_tar_xz(path: &Path, members: &[(String, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let xz = lzma_rust2::XzWriter::new(file, lzma_rust2::XzOptions::with_preset(1)).unwrap();
    let mut tar = tar::Builder::new(xz);
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

/// Encodes an RGB (or gray, `channels == 1`) image as JPEG.
pub fn jpeg(width: u32, height: u32, channels: u8, seed: u8) -> Vec<u8> {
    let n = (width * height) as usize * channels as usize;
    let pixels: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(seed)).collect();
    let color = if channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode(&pixels, width, height, color)
        .unwrap();
    out
}
