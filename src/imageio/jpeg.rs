//! JPEG structure checks and the OpenCV-compatible decoder: the file walked segment by segment
//! up to its end-of-image marker (a cut-off file is an error, not gray padding), the frame
//! checked against the data it holds, and `--compat upstream`'s libjpeg-turbo decode.
use image::DynamicImage;

/// JPEG pixels as OpenCV's `imread` gives them: libjpeg-turbo (here through mozjpeg, the same
/// decoder), its default integer IDCT and fancy upsampling, converted to 8-bit RGB (gray
/// replicated), as `IMREAD_COLOR` does.
pub(super) fn jpeg_like_opencv(bytes: &[u8]) -> std::result::Result<DynamicImage, String> {
    let decoded = std::panic::catch_unwind(|| -> std::io::Result<(usize, usize, Vec<[u8; 3]>)> {
        let d = mozjpeg::Decompress::new_mem(bytes)?;
        let mut img = d.rgb()?;
        let (w, h) = (img.width(), img.height());
        let px: Vec<[u8; 3]> = img.read_scanlines()?;
        img.finish()?;
        Ok((w, h, px))
    });
    let (w, h, px) = match decoded {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(format!("damaged JPEG file: {e}")),
        Err(_) => return Err("damaged JPEG file (libjpeg refused it)".into()),
    };
    let raw: Vec<u8> = px.into_iter().flatten().collect();
    image::RgbImage::from_raw(w as u32, h as u32, raw)
        .map(DynamicImage::ImageRgb8)
        .ok_or_else(|| "damaged JPEG file: its data does not match its size".to_string())
}

/// JPEG pixels in zune-jpeg's strict mode, in the colour layout image's decoder reported.
pub(super) fn jpeg_strict(
    bytes: &[u8],
    out: &mut [u8],
    color: image::ColorType,
    (w, h): (u32, u32),
) -> std::result::Result<(), String> {
    use zune_core::colorspace::ColorSpace;
    let space = match color {
        image::ColorType::L8 => ColorSpace::Luma,
        image::ColorType::La8 => ColorSpace::LumaA,
        image::ColorType::Rgba8 => ColorSpace::RGBA,
        _ => ColorSpace::RGB,
    };
    let options = zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(space)
        .set_strict_mode(true)
        .set_max_width(w as usize)
        .set_max_height(h as usize);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    d.decode_into(out)
        .map_err(|e| format!("damaged JPEG file: {e:?}"))
}

/// Walk a JPEG's segments and entropy-coded scans up to the end-of-image marker. JPEG decoders
/// are lenient and fill a cut-off file with gray; an archive wants to hear that it is cut off.
/// Data after the end marker (camera trailers, motion photos) is allowed. Also checks that the
/// image data can hold the image the frame header claims: Huffman coding spends at least one
/// bit on every 8x8 block (its DC code), so a header edited to claim more pixels than the data
/// was coded for is refused instead of decoding to a sea of gray.
pub fn jpeg_complete(b: &[u8]) -> std::result::Result<(), String> {
    let truncated = |what: &str| Err(format!("truncated JPEG: the file ends {what}"));
    if b.len() < 4 || b[0] != 0xFF || b[1] != 0xD8 {
        return Err("not a JPEG (no start-of-image marker)".into());
    }
    let n = b.len();
    let mut i = 2;
    // blocks the frame header implies (Huffman-coded frames only), and entropy-coded bytes
    let mut blocks: Option<u64> = None;
    let mut claimed = (0u32, 0u32);
    let mut coded: u64 = 0;
    loop {
        // a marker: 0xFF (fill bytes allowed), then its code
        while i < n && b[i] == 0xFF && i + 1 < n && b[i + 1] == 0xFF {
            i += 1;
        }
        if i + 1 >= n {
            return truncated("before the end-of-image marker");
        }
        if b[i] != 0xFF {
            return Err(format!("corrupt JPEG: no marker at byte {i}"));
        }
        let m = b[i + 1];
        match m {
            0xD9 => break,
            0x01 | 0xD0..=0xD7 => {
                i += 2;
                continue;
            }
            _ => {}
        }
        if i + 3 >= n {
            return truncated("inside a segment header");
        }
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        let end = i + 2 + len;
        if len < 2 || end > n {
            return truncated("inside a segment");
        }
        // SOF0-2 (baseline, extended, progressive; Huffman): the frame's size and sampling
        if matches!(m, 0xC0..=0xC2) {
            let (f, blk) = frame_blocks(&b[i + 4..end])?;
            claimed = f;
            blocks = Some(blk);
        }
        i = end;
        if m == 0xDA {
            // entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or a
            // restart marker
            let start = i;
            loop {
                if i + 1 >= n {
                    return truncated("in the middle of the image data");
                }
                if b[i] == 0xFF && b[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&b[i + 1]) {
                    break;
                }
                i += 1;
            }
            coded += (i - start) as u64;
        }
    }
    if let Some(blocks) = blocks {
        if coded.saturating_mul(8) < blocks {
            return Err(format!(
                "damaged JPEG: its header claims {}x{} pixels ({blocks} blocks of 8x8), but its \
                 image data ({coded} bytes) is too short to hold them",
                claimed.0, claimed.1
            ));
        }
    }
    Ok(())
}

/// A frame header's width and height, and the 8x8 blocks its components hold (at least: a
/// component scanned alone holds no more than when interleaved).
fn frame_blocks(sof: &[u8]) -> std::result::Result<((u32, u32), u64), String> {
    let bad = || Err("damaged JPEG: a malformed frame header".to_string());
    if sof.len() < 6 {
        return bad();
    }
    let h = u16::from_be_bytes([sof[1], sof[2]]) as u64;
    let w = u16::from_be_bytes([sof[3], sof[4]]) as u64;
    let nc = sof[5] as usize;
    if sof.len() < 6 + 3 * nc || nc == 0 {
        return bad();
    }
    let comps: Vec<(u64, u64)> = (0..nc)
        .map(|c| {
            let s = sof[6 + 3 * c + 1];
            ((s >> 4).max(1) as u64, (s & 15).max(1) as u64)
        })
        .collect();
    let hmax = comps.iter().map(|c| c.0).max().unwrap_or(1);
    let vmax = comps.iter().map(|c| c.1).max().unwrap_or(1);
    let blocks = comps
        .iter()
        .map(|&(hs, vs)| {
            let cw = (w * hs).div_ceil(hmax);
            let ch = (h * vs).div_ceil(vmax);
            cw.div_ceil(8) * ch.div_ceil(8)
        })
        .sum();
    Ok(((w as u32, h as u32), blocks))
}
