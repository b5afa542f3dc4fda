//! The one PNG writer of the workspace: an 8-bit RGB buffer to a file, and
//! the image grids of `data prepare` and `sample` on top of it. (Plots, plan
//! pictures and samples all end here.)

use std::path::Path;

use crate::error::{DataError, Result};

/// Writes an 8-bit RGB buffer (`w x h`, rows top to bottom, R G B
/// interleaved) as a PNG, through a temporary file and a rename so that a
/// reader never sees half a picture.
pub fn write_rgb_png(path: &Path, w: u32, h: u32, rgb: &[u8]) -> Result<()> {
    let want = w as usize * h as usize * 3;
    if rgb.len() != want {
        return Err(DataError::io(
            "write",
            path,
            std::io::Error::other(format!("{w}x{h} RGB needs {want} bytes, got {}", rgb.len())),
        ));
    }
    let tmp = path.with_extension("png.partial");
    image::save_buffer_with_format(
        &tmp,
        rgb,
        w,
        h,
        image::ColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| DataError::io("write", &tmp, std::io::Error::other(e)))?;
    std::fs::rename(&tmp, path).map_err(|e| DataError::io("rename into", path, e))
}

/// Writes square RGB images (raster order, R G B interleaved) as one PNG
/// grid with `cols` columns and a one-pixel black border.
pub fn write_image_grid(path: &Path, images: &[&[u8]], side: usize, cols: usize) -> Result<()> {
    if images.is_empty() {
        return Err(DataError::Empty {
            what: "image grid".into(),
            hint: "no images to draw".into(),
        });
    }
    let cols = cols.max(1).min(images.len());
    let rows = images.len().div_ceil(cols);
    let (w, h) = (cols * (side + 1) + 1, rows * (side + 1) + 1);
    let mut canvas = image::RgbImage::new(w as u32, h as u32);
    for (k, img) in images.iter().enumerate() {
        let (x0, y0) = ((k % cols) * (side + 1) + 1, (k / cols) * (side + 1) + 1);
        for (i, px) in img.chunks_exact(3).enumerate().take(side * side) {
            canvas.put_pixel(
                (x0 + i % side) as u32,
                (y0 + i / side) as u32,
                image::Rgb([px[0], px[1], px[2]]),
            );
        }
    }
    write_rgb_png(path, w as u32, h as u32, canvas.as_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_buffers_round_trip_and_bad_sizes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let rgb: Vec<u8> = (0..2 * 3 * 3).map(|i| i as u8 * 10).collect();
        write_rgb_png(&path, 2, 3, &rgb).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!((back.width(), back.height()), (2, 3));
        assert_eq!(back.as_raw(), &rgb);
        assert!(!path.with_extension("png.partial").exists());
        assert!(write_rgb_png(&path, 3, 3, &rgb).is_err());
    }
}
