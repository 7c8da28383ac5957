//! Archival fidelity, end to end through the real binary: bit depth, alpha, EXIF, ICC and
//! resolution read back from the *written* files (with `image`, `kamadak-exif`, `png`), EXIF
//! orientation, the gamut rule, the "already colour" check, size presets, unusual inputs.
use std::path::{Path, PathBuf};

use ddcolor::pipeline::color::{
    lab_to_linear, lab_to_rgb, lab_to_rgb_in_gamut, rgb_to_l, rgb_to_lab,
};
use image::{DynamicImage, GenericImageView, ImageDecoder, ImageReader};
use serde_json::Value;

use crate::batch::{colorize_cmd, count, report, run, stderr, tree};
use crate::util::fixtures;

/// `ddcolor colorize` with the golden test model at size 64, no cache, a report; the extra
/// arguments go after the inputs.
fn colorize(inputs: &[&Path], out: &Path, extra: &[&str]) -> (std::process::Output, Vec<Value>) {
    let dir = out.parent().unwrap();
    let rep = dir.join(format!(
        "{}.ndjson",
        out.file_name().unwrap().to_string_lossy()
    ));
    let mut c = colorize_cmd(inputs, out, "none", &rep);
    c.args(extra);
    let o = run(c);
    let r = if rep.exists() { report(&rep) } else { vec![] };
    (o, r)
}

fn record<'a>(rep: &'a [Value], name: &str) -> &'a Value {
    rep.iter()
        .find(|r| r["path"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("no record for {name}: {rep:?}"))
}

fn exif_of(path: &Path) -> exif::Exif {
    let f = std::fs::File::open(path).unwrap();
    exif::Reader::new()
        .read_from_container(&mut std::io::BufReader::new(f))
        .unwrap_or_else(|e| panic!("{}: no EXIF: {e}", path.display()))
}

fn ascii(e: &exif::Exif, tag: exif::Tag) -> String {
    let f = e
        .get_field(tag, exif::In::PRIMARY)
        .unwrap_or_else(|| panic!("no {tag}"));
    match &f.value {
        exif::Value::Ascii(v) => String::from_utf8_lossy(&v[0]).into_owned(),
        v => panic!("{tag} is {v:?}"),
    }
}

fn uint(e: &exif::Exif, tag: exif::Tag) -> u32 {
    e.get_field(tag, exif::In::PRIMARY)
        .and_then(|f| f.value.get_uint(0))
        .unwrap_or_else(|| panic!("no {tag}"))
}

fn rational(e: &exif::Exif, tag: exif::Tag) -> f64 {
    match &e.get_field(tag, exif::In::PRIMARY).unwrap().value {
        exif::Value::Rational(v) => v[0].to_f64(),
        v => panic!("{tag} is {v:?}"),
    }
}

fn icc_of(path: &Path) -> Option<Vec<u8>> {
    let mut d = ImageReader::open(path)
        .unwrap()
        .with_guessed_format()
        .unwrap()
        .into_decoder()
        .unwrap();
    d.icc_profile().unwrap()
}

fn open(path: &Path) -> DynamicImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The JFIF density of a JPEG: (unit, x, y).
fn jfif_density(path: &Path) -> (u8, u16, u16) {
    let b = std::fs::read(path).unwrap();
    let i = b
        .windows(5)
        .position(|w| w == b"JFIF\0")
        .expect("a JFIF segment");
    (
        b[i + 7],
        u16::from_be_bytes([b[i + 8], b[i + 9]]),
        u16::from_be_bytes([b[i + 10], b[i + 11]]),
    )
}

// ------------------------------------------------------------------------- bit depth

/// L of every pixel: gray 16-bit input vs RGB 16-bit output.
fn lightness_16(img: &DynamicImage) -> Vec<f32> {
    img.to_rgb16()
        .pixels()
        .map(|p| rgb_to_l(p.0.map(|v| f32::from(v) / 65535.0)))
        .collect()
}

#[test]
fn sixteen_bit_scans_come_out_sixteen_bit_with_the_scans_lightness() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let names = ["coffee-scan-16bit.tif", "coffee-scan-16bit.png"];
    let inputs: Vec<PathBuf> = names
        .iter()
        .map(|n| fixtures(&format!("photos/{n}")))
        .collect();
    let refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let (o, rep) = colorize(&refs, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(count(&rep, "inferred"), 2, "{rep:?}");
    for (name, input) in names.iter().zip(&inputs) {
        let src = open(input);
        assert!(
            matches!(src, DynamicImage::ImageLuma16(_)),
            "{name}: fixture is {:?}",
            src.color()
        );
        // the fixture's low byte carries information
        let raw = src.to_luma16();
        let fine = raw.as_raw().iter().filter(|v| *v % 257 != 0).count();
        assert!(
            fine * 2 > raw.as_raw().len(),
            "{name}: fixture is 8-bit data"
        );

        let got = open(&out.join(name));
        let DynamicImage::ImageRgb16(rgb) = &got else {
            panic!("{name}: output is {:?}, want 16-bit RGB", got.color());
        };
        assert_eq!(got.dimensions(), src.dimensions());
        let samples = rgb.as_raw();
        let fine = samples.iter().filter(|v| *v % 257 != 0).count();
        assert!(
            fine * 2 > samples.len(),
            "{name}: output is 8-bit values scaled to 16 bits ({fine} of {} fine)",
            samples.len()
        );
        assert!(
            rgb.pixels().filter(|p| p.0[0] != p.0[2]).count() * 2 > samples.len() / 3,
            "{name}: output is not in colour"
        );
        // L of the output is the scan's L to well under one 8-bit step (0.27-0.45 in L)
        let (l_in, l_out) = (lightness_16(&src), lightness_16(&got));
        let diffs: Vec<f32> = l_in
            .iter()
            .zip(&l_out)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let max = diffs.iter().copied().fold(0.0, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        eprintln!("{name}: L differs by max {max:.5}, mean {mean:.6}");
        assert!(max < 0.01 && mean < 0.002, "{name}: max {max}, mean {mean}");
    }
    // an 8-bit scan stays 8-bit
    let (o, _) = colorize(&[&fixtures("photos/cameraman.png")], &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(matches!(
        open(&out.join("cameraman.png")),
        DynamicImage::ImageRgb8(_)
    ));
}

#[test]
fn a_sixteen_bit_scan_asked_for_as_jpeg_says_so_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let tif = fixtures("photos/coffee-scan-16bit.tif");
    let png = fixtures("photos/coffee-scan-16bit.png");
    let (o, _) = colorize(&[&tif], &out, &["--format", "png"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("note:"), "{}", stderr(&o));

    let jpg = tmp.path().join("jpg");
    // two 16-bit sources, one note
    let png_copy = tmp.path().join("coffee-copy.png");
    std::fs::copy(&png, &png_copy).unwrap();
    let (o, rep) = colorize(&[&tif, &png_copy], &jpg, &["--format", "jpg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(count(&rep, "inferred"), 2);
    let err = stderr(&o);
    let notes: Vec<&str> = err.lines().filter(|l| l.starts_with("note:")).collect();
    assert_eq!(notes.len(), 1, "{err}");
    assert!(
        notes[0].contains("16-bit") && notes[0].contains("8-bit"),
        "{err}"
    );
    assert!(matches!(
        open(&jpg.join("coffee-scan-16bit.jpg")),
        DynamicImage::ImageRgb8(_)
    ));

    // --jpeg-quality: lower quality, smaller file; out of range is a usage error
    let low = tmp.path().join("low");
    let (o, _) = colorize(&[&tif], &low, &["--format", "jpg", "--jpeg-quality", "40"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&low.join("coffee-scan-16bit.jpg")) < size(&jpg.join("coffee-scan-16bit.jpg")));
    let (o, _) = colorize(&[&tif], &tmp.path().join("bad"), &["--jpeg-quality", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

// ------------------------------------------------------------------------- orientation, EXIF

#[test]
fn a_rotated_camera_jpeg_comes_out_upright_with_its_exif() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let input = fixtures("photos/rotated-exif6.jpg");
    let (o, _) = colorize(&[&input], &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got_path = out.join("rotated-exif6.jpg");

    let stored = ImageReader::open(&input).unwrap().decode().unwrap();
    let got = open(&got_path);
    assert_eq!(
        got.dimensions(),
        (stored.height(), stored.width()),
        "dimensions not swapped"
    );
    // orientation 6: shown rotated 90 degrees clockwise; the output's lightness is that
    let upright = stored.rotate90().to_luma8();
    let sideways = stored.rotate270().to_luma8();
    let l_out: Vec<f32> = got
        .to_rgb8()
        .pixels()
        .map(|p| rgb_to_l(p.0.map(|v| f32::from(v) / 255.0)))
        .collect();
    let diff = |g: &image::GrayImage| {
        g.pixels()
            .zip(&l_out)
            .map(|(p, l)| (rgb_to_l([f32::from(p.0[0]) / 255.0; 3]) - l).abs())
            .sum::<f32>()
            / l_out.len() as f32
    };
    let (right, wrong) = (diff(&upright), diff(&sideways));
    assert!(
        right < 1.5 && wrong > 5.0,
        "mean |dL|: upright {right}, rotated the other way {wrong}"
    );

    let e = exif_of(&got_path);
    assert_eq!(
        ascii(&e, exif::Tag::ImageDescription),
        "Chelsea, summer 1952"
    );
    assert_eq!(ascii(&e, exif::Tag::Software), "scanner v1");
    assert_eq!(uint(&e, exif::Tag::Orientation), 1);
    // no thumbnail left behind (it would be the gray, unrotated picture)
    assert!(e.fields().all(|f| f.ifd_num == exif::In::PRIMARY));
}

#[test]
fn an_rgb_icc_profile_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixtures("photos/rocket-rgb-icc.jpg");
    let want = icc_of(&input).expect("fixture has a profile");
    for format in ["same", "png", "tiff", "webp"] {
        let out = tmp.path().join(format);
        let (o, rep) = colorize(&[&input], &out, &["--format", format]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            count(&rep, "inferred"),
            1,
            "gray stored as RGB is colorized: {rep:?}"
        );
        let written = tree(&out);
        let (name, _) = written.iter().next().unwrap();
        assert_eq!(icc_of(&out.join(name)), Some(want.clone()), "{format}");
    }
}

/// A gray image with a gray ICC profile, 300 dpi, and EXIF, as a 16-bit PNG.
fn gray_png_with_gray_profile(path: &Path) {
    let (w, h) = (96u32, 64u32);
    let mut data = Vec::new();
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&((x * 600 + y * 200) as u16).to_be_bytes());
        }
    }
    let icc = moxcms::ColorProfile::new_gray_with_gamma(2.2)
        .encode()
        .unwrap();
    assert_eq!(&icc[16..20], b"GRAY");
    let mut info = png::Info::with_size(w, h);
    info.color_type = png::ColorType::Grayscale;
    info.bit_depth = png::BitDepth::Sixteen;
    info.icc_profile = Some(icc.into());
    info.pixel_dims = Some(png::PixelDimensions {
        xppu: 11811, // 300 dpi
        yppu: 11811,
        unit: png::Unit::Meter,
    });
    let file = std::fs::File::create(path).unwrap();
    let mut writer = png::Encoder::with_info(file, info)
        .unwrap()
        .write_header()
        .unwrap();
    writer.write_image_data(&data).unwrap();
    writer.finish().unwrap();
}

#[test]
fn a_gray_icc_profile_becomes_srgb_on_the_colour_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("gray-profile.png");
    gray_png_with_gray_profile(&input);
    for format in ["png", "jpg", "tiff", "webp"] {
        let out = tmp.path().join(format);
        let (o, _) = colorize(&[&input], &out, &["--format", format]);
        assert!(o.status.success(), "{}", stderr(&o));
        let name = tree(&out).into_keys().next().unwrap();
        let icc = icc_of(&out.join(&name)).unwrap_or_else(|| panic!("{format}: no profile"));
        assert_eq!(&icc[16..20], b"RGB ", "{format}: profile is not RGB");
        assert_eq!(&icc[36..40], b"acsp", "{format}: not an ICC profile");
        assert_eq!(icc, ddcolor::meta::srgb_icc(), "{format}");
        // a fixed creation date: a cache hit writes what a miss wrote, on any day
        assert_eq!(u16::from_be_bytes([icc[24], icc[25]]), 2025, "{format}");
        assert!(open(&out.join(&name)).color().has_color());
    }
    // the resolution came along: pHYs in, pHYs out
    let png_out = tmp.path().join("png/gray-profile.png");
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_out).unwrap(),
    ));
    let reader = decoder.read_info().unwrap();
    let dims = reader.info().pixel_dims.expect("pHYs");
    assert_eq!(
        (dims.xppu, dims.yppu, dims.unit),
        (11811, 11811, png::Unit::Meter)
    );
    assert_eq!(
        jfif_density(&tmp.path().join("jpg/gray-profile.jpg")),
        (1, 300, 300)
    );
}

/// A 16-bit gray TIFF scan carrying the tags archives fill in, at 600 dpi.
fn tagged_tiff(path: &Path) {
    use tiff::encoder::{colortype, Rational, TiffEncoder};
    use tiff::tags::{ResolutionUnit, Tag};
    let (w, h) = (80u32, 48u32);
    let data: Vec<u16> = (0..w * h).map(|i| ((i * 997) % 65536) as u16).collect();
    let file = std::fs::File::create(path).unwrap();
    let mut enc = TiffEncoder::new(file).unwrap();
    let mut exif_ifd = enc.extra_directory().unwrap();
    exif_ifd
        .write_tag(Tag::Unknown(0x9003), "1931:05:02 10:00:00") // DateTimeOriginal
        .unwrap();
    let exif_at = exif_ifd.finish_with_offsets().unwrap();
    let mut img = enc.new_image::<colortype::Gray16>(w, h).unwrap();
    let dir = img.encoder();
    dir.write_tag(Tag::ImageDescription, "Harbour, 1931")
        .unwrap();
    dir.write_tag(Tag::Make, "Epson").unwrap();
    dir.write_tag(Tag::Model, "Perfection V850").unwrap();
    dir.write_tag(Tag::Artist, "A. Archivist").unwrap();
    dir.write_tag(Tag::Copyright, "City Archive").unwrap();
    dir.write_tag(Tag::DateTime, "2024:01:02 03:04:05").unwrap();
    dir.write_tag(Tag::ExifDirectory, exif_at.offset).unwrap();
    img.resolution(ResolutionUnit::Inch, Rational { n: 600, d: 1 });
    img.write_data(&data).unwrap();
}

#[test]
fn exif_and_resolution_survive_into_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let scan = tmp.path().join("harbour.tif");
    tagged_tiff(&scan);
    let camera = fixtures("photos/rotated-exif6.jpg");
    for format in ["same", "jpg", "png", "tiff", "webp"] {
        let out = tmp.path().join(format);
        let (o, rep) = colorize(&[&scan, &camera], &out, &["--format", format]);
        assert!(o.status.success(), "{format}: {}", stderr(&o));
        assert_eq!(count(&rep, "inferred"), 2, "{rep:?}");
        for r in &rep {
            let path = PathBuf::from(r["output"].as_str().unwrap());
            let e = exif_of(&path);
            assert_eq!(uint(&e, exif::Tag::Orientation), 1, "{}", path.display());
            if r["path"].as_str().unwrap().ends_with("harbour.tif") {
                let s = |t| ascii(&e, t);
                assert_eq!(s(exif::Tag::ImageDescription), "Harbour, 1931", "{format}");
                assert_eq!(s(exif::Tag::Make), "Epson");
                assert_eq!(s(exif::Tag::Model), "Perfection V850");
                assert_eq!(s(exif::Tag::Artist), "A. Archivist");
                assert_eq!(s(exif::Tag::Copyright), "City Archive");
                assert_eq!(s(exif::Tag::DateTime), "2024:01:02 03:04:05");
                assert_eq!(s(exif::Tag::DateTimeOriginal), "1931:05:02 10:00:00");
                assert_eq!(rational(&e, exif::Tag::XResolution), 600.0, "{format}");
                assert_eq!(uint(&e, exif::Tag::ResolutionUnit), 2);
                let img = open(&path);
                assert_eq!(img.dimensions(), (80, 48));
                let sixteen = matches!(img, DynamicImage::ImageRgb16(_));
                assert_eq!(
                    sixteen,
                    matches!(format, "same" | "png" | "tiff"),
                    "{format}"
                );
            } else {
                assert_eq!(
                    ascii(&e, exif::Tag::ImageDescription),
                    "Chelsea, summer 1952"
                );
                assert_eq!(ascii(&e, exif::Tag::Software), "scanner v1");
                assert_eq!(
                    open(&path).dimensions(),
                    (300, 451),
                    "{format}: not upright"
                );
            }
        }
    }
    assert_eq!(
        jfif_density(&tmp.path().join("jpg/harbour.jpg")),
        (1, 600, 600)
    );
}

/// The two JPEG encoders (libjpeg-turbo's SIMD where the build had nasm, jpeg-encoder
/// otherwise; `JpegEncoder::best` picks one per machine, so the binary tests above see only
/// one) write the same metadata: a profile over one APP2 segment (numbered from 1), EXIF,
/// JFIF density and comments, one of them over one COM segment; and nearly the same pixels.
#[test]
fn both_jpeg_encoders_write_the_same_metadata() {
    use ddcolor::imageio::encode_jpeg::{encode_jpeg_with, JpegEncoder};
    use ddcolor::meta::{Density, DensityUnit, Metadata};
    let tmp = tempfile::tempdir().unwrap();
    let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(300, 200, |x, y| {
        image::Rgb([(x % 256) as u8, (y + 20) as u8, ((x + y) / 2) as u8])
    }));
    let mut icc = ddcolor::meta::srgb_icc().to_vec();
    icc.extend((0..150_000u32).map(|i| (i % 251) as u8));
    // a little-endian TIFF with IFD0 holding Orientation = 1
    let exif = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x01\0\0\0\0\0\0\0".to_vec();
    let meta = Metadata {
        icc: None,
        exif: None,
        fields: Vec::new(),
        density: Some(Density {
            x: 300.0,
            y: 300.0,
            unit: DensityUnit::Inch,
        }),
        comments: vec![b"scanned 1931, box 4".to_vec(), vec![b'c'; 70_000]],
        orientation: 1,
    };
    let mut decoded = Vec::new();
    for enc in [JpegEncoder::Turbo, JpegEncoder::Rust] {
        let bytes = encode_jpeg_with(
            enc,
            &img,
            Some(&meta),
            Some(&icc),
            Some(exif.clone()),
            95,
            false,
        )
        .unwrap();
        let path = tmp.path().join(format!("{enc:?}.jpg"));
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(icc_of(&path).as_ref(), Some(&icc), "{enc:?}: ICC profile");
        assert_eq!(jfif_density(&path), (1, 300, 300), "{enc:?}: density");
        let mut d = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(
            d.exif_metadata().unwrap(),
            Some(exif.clone()),
            "{enc:?}: EXIF"
        );
        let back = Metadata::read(image::ImageFormat::Jpeg, bytes.clone(), None, None);
        let joined: Vec<u8> = back.comments.concat();
        assert_eq!(joined, meta.comments.concat(), "{enc:?}: comments");
        let px = open(&path).to_rgb8();
        let worst = px
            .as_raw()
            .iter()
            .zip(img.as_bytes())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(
            worst <= 12,
            "{enc:?}: {worst} levels from the original at q95"
        );
        decoded.push(px);
        let halved = encode_jpeg_with(enc, &img, None, None, None, 95, true).unwrap();
        let path = tmp.path().join(format!("{enc:?}-420.jpg"));
        std::fs::write(&path, &halved).unwrap();
        assert_eq!(jpeg_sampling(&path), [0x22, 0x11, 0x11], "{enc:?}: 4:2:0");
        assert_eq!(open(&path).dimensions(), (300, 200), "{enc:?}: 4:2:0");
    }
    let apart = decoded[0]
        .as_raw()
        .iter()
        .zip(decoded[1].as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(
        apart <= 4,
        "the two encoders' pixels are {apart} levels apart"
    );
}

// ------------------------------------------------------------------------- gamut

#[test]
fn out_of_range_ab_keeps_its_hue_and_lightness() {
    // upstream issue #54: b near -180, far outside what Lab can show at any lightness
    for lab in [
        [50.0f32, 0.0, -180.0],
        [50.0, -170.0, -180.0],
        [20.0, 120.0, 90.0],
        [85.0, -90.0, 150.0],
        [3.0, 60.0, -60.0],
        [97.0, 1e6, -1e6],
    ] {
        let rgb = lab_to_rgb_in_gamut(lab);
        assert!(
            rgb.iter().all(|v| (0.0..=1.0).contains(v)),
            "{lab:?} -> {rgb:?}"
        );
        let [l, a, b] = rgb_to_lab(rgb);
        assert!((l - lab[0]).abs() < 0.05, "{lab:?}: L {l}");
        let hue = |a: f32, b: f32| b.atan2(a).to_degrees();
        let dh = (hue(a, b) - hue(lab[1], lab[2]) + 540.0).rem_euclid(360.0) - 180.0;
        assert!(
            dh.abs() < 1.5,
            "{lab:?}: hue moved by {dh} degrees to {a} {b}"
        );
        assert!(
            a.hypot(b) < lab[1].hypot(lab[2]),
            "{lab:?}: chroma not reduced"
        );
        // and reduced no more than it must: 1% more chroma along the same hue leaves sRGB
        // (with its slack of 1e-5 on linear RGB)
        let more = lab_to_linear([lab[0], a * 1.01, b * 1.01]);
        assert!(
            more.iter().any(|v| !(-1e-5..=1.0 + 1e-5).contains(v)),
            "{lab:?}: {a} {b} is not the largest chroma that fits ({more:?} fits too)"
        );
        // clipping each channel (upstream) moves hue or lightness here
        let [lc, ac, bc] = rgb_to_lab(lab_to_rgb(lab));
        let dhc = (hue(ac, bc) - hue(lab[1], lab[2]) + 540.0).rem_euclid(360.0) - 180.0;
        assert!(
            (lc - lab[0]).abs() > 0.5 || dhc.abs() > 3.0,
            "{lab:?}: clip is fine too"
        );
    }
    // inside sRGB both rules agree exactly; non-finite ab is gray
    for lab in [[60.0f32, 20.0, -10.0], [30.0, 0.0, 0.0], [90.0, -5.0, 40.0]] {
        assert_eq!(lab_to_rgb_in_gamut(lab), lab_to_rgb(lab));
    }
    let gray = lab_to_rgb_in_gamut([40.0, f32::NAN, f32::INFINITY]);
    assert_eq!(gray, lab_to_rgb([40.0, 0.0, 0.0]));
}

// ------------------------------------------------------------------------- already colour

/// A sepia-toned copy of a colour photo: its lightness in one brown tint.
fn sepia_copy(src: &Path, dst: &Path) {
    let gray = open(src).to_luma8();
    let toned = image::RgbImage::from_fn(gray.width(), gray.height(), |x, y| {
        let v = f32::from(gray.get_pixel(x, y).0[0]) / 255.0;
        let c = [v * 1.07 + 0.02, v * 0.95, v * 0.78];
        image::Rgb(c.map(|c| (c.clamp(0.0, 1.0) * 255.0).round() as u8))
    });
    toned.save(dst).unwrap();
}

#[test]
fn colour_photos_are_skipped_toned_ones_colorized_and_force_colorizes_all() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = fixtures("reference");
    let sepia = tmp.path().join("chelsea-sepia.png");
    sepia_copy(&reference.join("chelsea.png"), &sepia);
    let cache_dir = tmp.path().join("cache");
    let rep_path = tmp.path().join("r.json");
    let out = tmp.path().join("out");
    let spec = format!("disk:{}", cache_dir.display());
    let o = run(colorize_cmd(&[&reference, &sepia], &out, &spec, &rep_path));
    assert!(o.status.success(), "{}", stderr(&o));
    let rep = report(&rep_path);
    for name in ["astronaut.png", "chelsea.png", "coffee.png", "rocket.png"] {
        let r = record(&rep, &format!("reference/{name}"));
        assert_eq!(r["status"], "skipped", "{r}");
        assert_eq!(r["error"], "already colour", "{r}");
        assert!(r["output"].is_null(), "{r}");
    }
    assert_eq!(record(&rep, "chelsea-sepia.png")["status"], "inferred");
    let written: Vec<PathBuf> = tree(&out).into_keys().collect();
    assert_eq!(written, vec![PathBuf::from("chelsea-sepia.png")]);
    // skipped photos were neither inferred nor stored: one value in the cache
    // values live in the shard folders (the index of hashed files sits beside them)
    let stored = walkdir::WalkDir::new(&cache_dir)
        .min_depth(2)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.metadata().unwrap().len() > 1000)
        .count();
    assert_eq!(stored, 1, "values stored");
    assert!(stderr(&o).contains("4 skipped"), "{}", stderr(&o));

    // --force colorizes a colour photo
    let forced = tmp.path().join("forced");
    let mut c = colorize_cmd(&[&reference.join("rocket.png")], &forced, "none", &rep_path);
    c.arg("--force");
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(count(&report(&rep_path), "inferred"), 1);
    assert!(forced.join("rocket.png").exists());
}

// ------------------------------------------------------------------------- size presets

#[test]
fn size_presets_name_the_subject() {
    assert_eq!(ddcolor::pipeline::parse_model_size("portrait"), Ok(512));
    assert_eq!(
        ddcolor::pipeline::parse_model_size("Architecture"),
        Ok(1024)
    );
    assert_eq!(ddcolor::pipeline::parse_model_size("640"), Ok(640));
    let e = ddcolor::pipeline::parse_model_size("500").unwrap_err();
    assert!(e.contains("not a multiple of 32"), "{e}");
    let e = ddcolor::pipeline::parse_model_size("huge").unwrap_err();
    assert!(e.contains("portrait") && e.contains("architecture"), "{e}");

    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("small.png");
    image::GrayImage::from_fn(40, 30, |x, y| image::Luma([(x * 6 + y * 2) as u8]))
        .save(&input)
        .unwrap();
    let mut outputs = Vec::new();
    for size in ["portrait", "512"] {
        let out = tmp.path().join(size);
        // later --size wins (clap's override), so the preset is what runs
        let (o, _) = colorize(&[&input], &out, &["--size", size]);
        assert!(o.status.success(), "{size}: {}", stderr(&o));
        outputs.push(std::fs::read(out.join("small.png")).unwrap());
    }
    assert_eq!(outputs[0], outputs[1], "portrait is 512");
    let (o, _) = colorize(&[&input], &tmp.path().join("x"), &["--size", "skyscraper"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("architecture"), "{}", stderr(&o));
}

// ------------------------------------------------------------------------- unusual inputs

fn gray(w: u32, h: u32) -> image::GrayImage {
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x * 7 + y * 13) % 256) as u8]))
}

fn write_palette_png(path: &Path) {
    let (w, h) = (33u32, 21u32);
    let palette: Vec<u8> = (0..16u8).flat_map(|i| [i * 17; 3]).collect();
    let data: Vec<u8> = (0..w * h).map(|i| (i % 16) as u8).collect();
    let mut enc = png::Encoder::new(std::fs::File::create(path).unwrap(), w, h);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(palette);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(&data).unwrap();
    writer.finish().unwrap();
}

fn write_jpeg(path: &Path, progressive: bool, cmyk: bool) {
    let g = gray(64, 48);
    let mut enc = jpeg_encoder::Encoder::new_file(path, 90).unwrap();
    enc.set_progressive(progressive);
    if cmyk {
        // neutral: no C, M, Y ink, black ink for the shadows
        let data: Vec<u8> = g
            .as_raw()
            .iter()
            .flat_map(|&v| [0, 0, 0, 255 - v])
            .collect();
        enc.encode(&data, 64, 48, jpeg_encoder::ColorType::Cmyk)
            .unwrap();
    } else {
        enc.encode(g.as_raw(), 64, 48, jpeg_encoder::ColorType::Luma)
            .unwrap();
    }
}

#[test]
fn unusual_but_valid_inputs_are_colorized() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("odd");
    std::fs::create_dir(&dir).unwrap();
    gray(1, 1).save(dir.join("one.png")).unwrap();
    gray(2, 3).save(dir.join("two-by-three.png")).unwrap();
    gray(4000, 8).save(dir.join("wide.png")).unwrap();
    gray(8, 4000).save(dir.join("tall.png")).unwrap();
    write_palette_png(&dir.join("palette.png"));
    let la = image::GrayAlphaImage::from_fn(31, 17, |x, y| {
        image::LumaA([(x * 8) as u8, (y * 15) as u8])
    });
    la.save(dir.join("gray-alpha.png")).unwrap();
    let rgba = image::RgbaImage::from_fn(19, 23, |x, y| {
        let v = (x * 13) as u8;
        image::Rgba([v, v, v, (y * 11) as u8])
    });
    rgba.save(dir.join("rgba.png")).unwrap();
    let la16 = image::ImageBuffer::<image::LumaA<u16>, _>::from_fn(9, 7, |x, y| {
        image::LumaA([(x * 7000) as u16, (y * 9000 + 3) as u16])
    });
    DynamicImage::ImageLumaA16(la16.clone())
        .save(dir.join("gray-alpha-16.png"))
        .unwrap();
    write_jpeg(&dir.join("progressive.jpg"), true, false);
    write_jpeg(&dir.join("cmyk.jpg"), false, true);
    gray(20, 20).save(dir.join("with space.png")).unwrap();
    gray(21, 20).save(dir.join("ünïcødé 写真.png")).unwrap();
    gray(22, 20).save(dir.join("-leading-dash.png")).unwrap();

    let out = tmp.path().join("out");
    let (o, rep) = colorize(&[&dir], &out, &[]);
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(rep.len(), files, "{rep:?}");
    for r in &rep {
        assert_eq!(r["status"], "inferred", "{r}\n{}", stderr(&o));
    }
    assert!(o.status.success(), "{}", stderr(&o));
    for (name, dims) in [
        ("one.png", (1, 1)),
        ("two-by-three.png", (2, 3)),
        ("wide.png", (4000, 8)),
        ("tall.png", (8, 4000)),
        ("palette.png", (33, 21)),
        ("progressive.jpg", (64, 48)),
        ("cmyk.jpg", (64, 48)),
        ("with space.png", (20, 20)),
        ("ünïcødé 写真.png", (21, 20)),
        ("-leading-dash.png", (22, 20)),
    ] {
        let img = open(&out.join(name));
        assert_eq!(img.dimensions(), dims, "{name}");
        assert!(
            img.color().has_color() && !img.color().has_alpha(),
            "{name}: {:?}",
            img.color()
        );
    }
    // alpha is kept, sample for sample
    let got = open(&out.join("gray-alpha.png"));
    let DynamicImage::ImageRgba8(got) = got else {
        panic!("gray+alpha came out {:?}", got.color())
    };
    assert!(got.pixels().zip(la.pixels()).all(|(g, s)| g.0[3] == s.0[1]));
    let got = open(&out.join("rgba.png"));
    let DynamicImage::ImageRgba8(got) = got else {
        panic!("RGBA came out {:?}", got.color())
    };
    assert!(got
        .pixels()
        .zip(rgba.pixels())
        .all(|(g, s)| g.0[3] == s.0[3]));
    let got = open(&out.join("gray-alpha-16.png"));
    let DynamicImage::ImageRgba16(got) = got else {
        panic!("16-bit gray+alpha came out {:?}", got.color())
    };
    assert!(got
        .pixels()
        .zip(la16.pixels())
        .all(|(g, s)| g.0[3] == s.0[1]));

    // a leading dash named directly, after `--`
    let direct = tmp.path().join("direct");
    let rep_path = tmp.path().join("direct.json");
    let mut c = colorize_cmd(&[], &direct, "none", &rep_path);
    c.current_dir(&dir).args(["--", "-leading-dash.png"]);
    let o = run(c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(direct.join("-leading-dash.png").exists());
}

#[test]
fn unreadable_formats_fail_with_a_clear_reason() {
    let tmp = tempfile::tempdir().unwrap();
    // a GIF is an image, but not one ddcolor reads
    let gif = tmp.path().join("anim.jpg");
    std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
    let (o, rep) = colorize(&[&gif], &tmp.path().join("out"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = rep[0]["error"].as_str().unwrap();
    assert!(
        err.contains("cannot decode") && err.contains("not supported"),
        "{err}"
    );
}

#[test]
fn out_of_range_ab_is_scaled_along_its_hue_and_auto_picks_by_depth() {
    use ddcolor::pipeline::{clamp_ab, Depth, Gamut};
    // upstream issue #54: b near -180
    let [l, a, b] = clamp_ab([50.0, 30.0, -180.0]);
    assert_eq!(l, 50.0);
    assert!((b + 127.0).abs() < 1e-4, "{b}");
    assert!(
        (a / b - 30.0 / -180.0).abs() < 1e-6,
        "hue angle kept: {a} {b}"
    );
    assert_eq!(clamp_ab([50.0, 100.0, -120.0]), [50.0, 100.0, -120.0]);
    assert_eq!(Gamut::Auto.resolve(Depth::Sixteen), Gamut::Fit);
    assert_eq!(Gamut::Auto.resolve(Depth::Eight), Gamut::Clip);
    assert_eq!(Gamut::Fit.resolve(Depth::Eight), Gamut::Fit);
}

/// The sampling factors of a JPEG's components, from its frame header.
fn jpeg_sampling(path: &Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap();
    let mut i = 2;
    while i + 4 <= b.len() {
        let (marker, len) = (
            b[i + 1],
            usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]])),
        );
        if marker == 0xC0 || marker == 0xC2 {
            let n = usize::from(b[i + 9]);
            return (0..n).map(|k| b[i + 11 + 3 * k]).collect();
        }
        i += 2 + len;
    }
    panic!("{}: no frame header", path.display());
}

/// `--jpeg-chroma`: `auto` halves the chroma of JPEG outputs at least twice the model size on
/// both sides (the model runs at 64 here) and keeps it whole on smaller ones; `444` and `420`
/// say the same whatever the size.
#[test]
fn jpeg_chroma_is_halved_only_where_the_prediction_is_coarser() {
    let tmp = tempfile::tempdir().unwrap();
    let make = |name: &str, w: u32, h: u32| {
        let p = tmp.path().join(name);
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x * 7 + y * 3) % 256) as u8]))
            .save(&p)
            .unwrap();
        p
    };
    let big = make("big.png", 300, 200);
    let narrow = make("narrow.png", 127, 400);
    let full = vec![0x11, 0x11, 0x11];
    let half = vec![0x22, 0x11, 0x11];
    for (chroma, want_big, want_narrow) in [
        ("auto", &half, &full),
        ("444", &full, &full),
        ("420", &half, &half),
    ] {
        let out = tmp.path().join(chroma);
        let (o, _) = colorize(
            &[&big, &narrow],
            &out,
            &["--format", "jpg", "--jpeg-chroma", chroma],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(&jpeg_sampling(&out.join("big.jpg")), want_big, "{chroma}");
        assert_eq!(
            &jpeg_sampling(&out.join("narrow.jpg")),
            want_narrow,
            "{chroma}"
        );
    }
    let (o, _) = colorize(&[&big], &tmp.path().join("x"), &["--jpeg-chroma", "422"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// TIFF outputs of every layout the writer takes, over several strips with a short last one
/// (the strips are predicted and compressed in parallel batches), read back sample for sample
/// by the tiff crate under every compression.
#[test]
fn tiff_outputs_of_every_layout_read_back_exactly() {
    use ddcolor::imageio::{encode, Encoding, TiffCompression};
    use image::{ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
    let (w, h) = (701u32, 3013u32);
    let v = |x: u32, y: u32, c: u32| x.wrapping_mul(37) ^ y.wrapping_mul(91) ^ (c * 5101);
    let images = [
        DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, y| Luma([v(x, y, 0) as u8]))),
        DynamicImage::ImageRgb8(ImageBuffer::from_fn(w, h, |x, y| {
            Rgb([0, 1, 2].map(|c| v(x, y, c) as u8))
        })),
        DynamicImage::ImageRgba8(ImageBuffer::from_fn(w, h, |x, y| {
            Rgba([0, 1, 2, 3].map(|c| v(x, y, c) as u8))
        })),
        DynamicImage::ImageLumaA8(ImageBuffer::from_fn(w, h, |x, y| {
            LumaA([0, 1].map(|c| v(x, y, c) as u8))
        })),
        DynamicImage::ImageLuma16(ImageBuffer::from_fn(w, h, |x, y| Luma([v(x, y, 0) as u16]))),
        DynamicImage::ImageRgb16(ImageBuffer::from_fn(w, h, |x, y| {
            Rgb([0, 1, 2].map(|c| v(x, y, c) as u16))
        })),
        DynamicImage::ImageRgba16(ImageBuffer::from_fn(w, h, |x, y| {
            Rgba([0, 1, 2, 3].map(|c| v(x, y, c) as u16))
        })),
    ];
    for img in &images {
        for tiff in [
            TiffCompression::Deflate,
            TiffCompression::Lzw,
            TiffCompression::None,
        ] {
            let enc = Encoding {
                tiff,
                ..Encoding::default()
            };
            let bytes = encode(img, ImageFormat::Tiff, None, &enc).unwrap();
            let what = format!("{:?} {tiff:?}", img.color());
            let mut d = tiff::decoder::Decoder::new(std::io::Cursor::new(&bytes)).unwrap();
            let strips = d.strip_count().unwrap();
            assert!(strips > 2, "{what}: {strips} strips");
            let back = image::load_from_memory_with_format(&bytes, ImageFormat::Tiff)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            // gray with alpha is written as RGBA (what TIFF readers expect)
            let want = match img {
                DynamicImage::ImageLumaA8(_) => DynamicImage::ImageRgba8(img.to_rgba8()),
                other => other.clone(),
            };
            assert_eq!(back.color(), want.color(), "{what}");
            assert!(back.as_bytes() == want.as_bytes(), "{what}: samples differ");
        }
    }
}

/// `--tiff-compression` and `--png-compression`: the TIFF says the compression asked for (with
/// the predictor), every choice decodes to the same samples, and PNG's levels trade size.
#[test]
fn output_compression_is_as_asked_and_never_changes_a_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let scan = fixtures("photos/coffee-scan-16bit.tif");
    let mut samples = Vec::new();
    for (method, tag) in [("deflate", 8u16), ("lzw", 5), ("none", 1)] {
        let out = tmp.path().join(format!("tiff-{method}"));
        let (o, _) = colorize(&[&scan], &out, &["--tiff-compression", method]);
        assert!(o.status.success(), "{}", stderr(&o));
        let file = out.join("coffee-scan-16bit.tif");
        let mut d = tiff::decoder::Decoder::new(std::fs::File::open(&file).unwrap()).unwrap();
        let got = d.get_tag_u32(tiff::tags::Tag::Compression).unwrap();
        assert_eq!(got, u32::from(tag), "{method}");
        let predictor = d.get_tag_u32(tiff::tags::Tag::Predictor).unwrap_or(1);
        assert_eq!(predictor, if method == "none" { 1 } else { 2 }, "{method}");
        samples.push(open(&file).into_rgb16().into_raw());
    }
    assert!(samples.windows(2).all(|w| w[0] == w[1]));
    let png = fixtures("photos/cameraman.png");
    let mut sizes = Vec::new();
    let mut pixels = Vec::new();
    for level in ["fast", "default", "best"] {
        let out = tmp.path().join(format!("png-{level}"));
        let (o, _) = colorize(&[&png], &out, &["--png-compression", level]);
        assert!(o.status.success(), "{}", stderr(&o));
        let file = out.join("cameraman.png");
        sizes.push(std::fs::metadata(&file).unwrap().len());
        pixels.push(open(&file).into_rgb8().into_raw());
    }
    assert!(pixels.windows(2).all(|w| w[0] == w[1]));
    assert!(sizes[0] > sizes[1] && sizes[1] >= sizes[2], "{sizes:?}");
    let (o, _) = colorize(
        &[&png],
        &tmp.path().join("x"),
        &["--png-compression", "max"],
    );
    assert_eq!(o.status.code(), Some(2));
}
