//! Archival metadata carried from a scan to its colorized copy: EXIF (description, dates,
//! camera or scanner, copyright, GPS), the ICC profile and the resolution, read from JPEG, PNG,
//! TIFF and WebP and written back into whichever of those the output is.
//!
//! - **Orientation** is applied to the pixels on decoding ([`crate::imageio::decode`]); the
//!   output is stored upright with EXIF orientation 1, so every viewer shows it the same way.
//! - **EXIF** of a JPEG, PNG or WebP source is kept byte for byte (maker notes keep their
//!   offsets) with three changes patched in place: orientation 1, PixelXDimension and
//!   PixelYDimension set to the output's size, and the thumbnail (IFD1: the gray, unrotated
//!   picture) unlinked. A TIFF source's tags, and any source written as TIFF, go through the
//!   parsed fields: IFD0 tags other than the ones describing the pixel data, plus the Exif and
//!   GPS sub-IFDs (the Interoperability IFD is dropped).
//! - **ICC**: an RGB profile is kept (neutral tones keep their exact values, so the profile
//!   still describes them); a gray or CMYK profile cannot describe an RGB output and is
//!   replaced by sRGB, the space the colours are computed in. No profile in, none out.
//! - **Resolution**: JFIF density (JPEG), pHYs (PNG) or the X/YResolution tags (TIFF, EXIF).
use std::io::{Cursor, Seek, Write};
use std::sync::OnceLock;

use exif::{Context, Field, In, Value};
use image::ImageFormat;
use tiff::encoder::{DirectoryEncoder, TiffEncoder, TiffKindStandard};
use tiff::tags::{Tag, Type};
use tiff::TiffResult;

/// EXIF tag numbers used here.
mod tag {
    pub const ORIENTATION: u16 = 0x0112;
    pub const X_RESOLUTION: u16 = 0x011A;
    pub const Y_RESOLUTION: u16 = 0x011B;
    pub const RESOLUTION_UNIT: u16 = 0x0128;
    pub const EXIF_IFD: u16 = 0x8769;
    pub const GPS_IFD: u16 = 0x8825;
    pub const INTEROP_IFD: u16 = 0xA005;
    pub const PIXEL_X_DIMENSION: u16 = 0xA002;
    pub const PIXEL_Y_DIMENSION: u16 = 0xA003;
}

/// IFD0 tags that describe a TIFF's pixel data, its layout or other IFDs: the encoder writes
/// its own, so these are never copied (nor the resolution, orientation and ICC profile, which
/// are written from [`Metadata`]). XMP, IPTC and Photoshop blocks are left out of EXIF blobs
/// (JPEG keeps them in segments of their own, and they would not fit one APP1 segment).
const PIXEL_LAYOUT: &[u16] = &[
    254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 269, 273, 277, 278, 279, 280, 281, 284,
    285, 286, 287, 290, 291, 292, 293, 296, 297, 301, 317, 318, 319, 320, 321, 322, 323, 324, 325,
    330, 332, 333, 334, 336, 337, 338, 339, 340, 341, 343, 347, 512, 513, 514, 515, 517, 518, 519,
    520, 521, 529, 530, 531, 532, 34665, 34853, 40965, 34675, 274, 282, 283,
];
const CONTAINER_BLOCKS: &[u16] = &[700, 33723, 34377];

/// The largest EXIF blob one JPEG APP1 segment holds (65535 - 2 length bytes - "Exif\0\0").
pub const JPEG_EXIF_MAX: usize = 65_527;

/// Pixels per inch or per centimetre.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Density {
    pub x: f64,
    pub y: f64,
    pub unit: DensityUnit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DensityUnit {
    Inch,
    Centimetre,
}

impl Density {
    fn new(x: f64, y: f64, unit: DensityUnit) -> Option<Self> {
        (x.is_finite() && y.is_finite() && x > 0.0 && y > 0.0).then_some(Self { x, y, unit })
    }

    /// Pixels per metre, as PNG's pHYs stores them.
    pub fn per_metre(&self) -> (u32, u32) {
        let k = match self.unit {
            DensityUnit::Inch => 1.0 / 0.0254,
            DensityUnit::Centimetre => 100.0,
        };
        let m = |v: f64| (v * k).round().clamp(1.0, u32::MAX as f64) as u32;
        (m(self.x), m(self.y))
    }

    /// The TIFF/EXIF ResolutionUnit value (2 inch, 3 centimetre).
    pub fn tiff_unit(&self) -> u16 {
        match self.unit {
            DensityUnit::Inch => 2,
            DensityUnit::Centimetre => 3,
        }
    }
}

/// A resolution as a TIFF RATIONAL (`n / d`), exact for whole and hundredths values.
pub fn rational(v: f64) -> (u32, u32) {
    if v.fract() == 0.0 && v <= u32::MAX as f64 {
        (v as u32, 1)
    } else {
        ((v * 100.0).round().clamp(1.0, u32::MAX as f64) as u32, 100)
    }
}

/// What is carried from a source file to its output.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// The embedded ICC profile, as found.
    pub icc: Option<Vec<u8>>,
    /// The source's EXIF as a TIFF-structured blob (JPEG APP1, PNG eXIf, WebP EXIF chunk).
    pub exif: Option<Vec<u8>>,
    /// The primary image's fields (IFD0, Exif and GPS IFDs): of the blob, or a TIFF's own tags.
    pub fields: Vec<Field>,
    pub density: Option<Density>,
    /// A JPEG's comment (COM) segments, carried to a JPEG output.
    pub comments: Vec<Vec<u8>>,
    /// EXIF orientation 1..=8 of the stored pixels (1 once [`Self::set_upright`] was called).
    pub orientation: u8,
}

impl Metadata {
    /// Read from a whole file of `format`, given what its decoder found (`icc`, `exif` blob).
    /// Best effort: unreadable metadata is left out, never an error.
    pub fn read(
        format: ImageFormat,
        file: Vec<u8>,
        icc: Option<Vec<u8>>,
        exif: Option<Vec<u8>>,
    ) -> Self {
        let comments = match format {
            ImageFormat::Jpeg => jpeg_comments(&file),
            _ => Vec::new(),
        };
        let container_density = match format {
            ImageFormat::Jpeg => jfif_density(&file),
            ImageFormat::Png => png_density(&file),
            _ => None,
        };
        let exif = exif.filter(|b| b.len() >= 8);
        let parsed = match (&exif, format) {
            (Some(blob), _) => parse_fields(blob.clone()),
            // a TIFF's own IFD0 is its EXIF
            (None, ImageFormat::Tiff) => parse_fields(file),
            _ => Vec::new(),
        };
        let orientation = field_uint(&parsed, Context::Tiff, tag::ORIENTATION)
            .and_then(|v| u8::try_from(v).ok())
            .filter(|v| (1..=8).contains(v))
            .unwrap_or(1);
        let density = container_density.or_else(|| fields_density(&parsed));
        Self {
            comments,
            icc: icc.filter(|p| !p.is_empty()),
            exif,
            fields: parsed,
            density,
            orientation,
        }
    }

    /// The pixels were turned upright: orientation 1, and the densities follow a quarter turn.
    pub fn set_upright(&mut self) {
        if self.orientation >= 5 {
            if let Some(d) = &mut self.density {
                std::mem::swap(&mut d.x, &mut d.y);
            }
        }
        self.orientation = 1;
    }

    /// The ICC profile for an output in colour (`rgb`) or gray: the source's if it describes
    /// that kind of image; for colour, sRGB in place of a gray or CMYK profile; none if the
    /// source had none (or, for gray, one that is not gray).
    pub fn icc_for(&self, rgb: bool) -> Option<&[u8]> {
        let icc = self.icc.as_deref()?;
        let space = icc.get(16..20).filter(|_| icc.len() >= 128);
        match (rgb, space) {
            (true, Some(b"RGB ")) | (false, Some(b"GRAY")) => Some(icc),
            (true, _) => Some(srgb_icc()),
            (false, _) => None,
        }
    }

    /// The EXIF blob for a JPEG, PNG or WebP output `width` x `height`: the source's blob
    /// patched in place, or one built from the fields of a TIFF source. None without EXIF.
    pub fn exif_blob(&self, width: u32, height: u32) -> Option<Vec<u8>> {
        if let Some(b) = self
            .exif
            .as_ref()
            .and_then(|b| patch_blob(b.clone(), width, height))
        {
            return Some(b);
        }
        self.build_blob(width, height)
    }

    /// The fields written into outputs.
    fn carried(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(|f| is_carried(f))
    }

    /// An EXIF blob (a TIFF structure without image data) from the fields.
    fn build_blob(&self, width: u32, height: u32) -> Option<Vec<u8>> {
        self.carried().next()?;
        let mut out = Cursor::new(Vec::new());
        let result: TiffResult<()> = (|| {
            let mut enc = TiffEncoder::new(&mut out)?;
            let pointers = write_tiff_sub_ifds(&mut enc, self, width, height)?;
            let mut ifd0 = enc.image_directory()?;
            write_tiff_ifd0(&mut ifd0, self, &pointers)?;
            if let Some(d) = &self.density {
                write_tiff_density(&mut ifd0, d)?;
            }
            ifd0.finish()
        })();
        result.ok()?;
        Some(out.into_inner())
    }
}

/// The sRGB profile (IEC 61966-2.1, ICC v4 display class, built by moxcms; "Public Domain" in
/// its copyright tag). The same bytes on every run: a cache hit writes what a miss wrote.
pub fn srgb_icc() -> &'static [u8] {
    static SRGB: OnceLock<Vec<u8>> = OnceLock::new();
    SRGB.get_or_init(|| {
        let mut p = moxcms::ColorProfile::new_srgb();
        // ICC v4 display profiles: the media white is the PCS illuminant (D50) and 'chad'
        // holds the Bradford adaptation from the display's D65 to it
        p.media_white_point = Some(moxcms::Xyzd {
            x: 0.9642,
            y: 1.0,
            z: 0.8249,
        });
        p.chromatic_adaptation = Some(moxcms::Matrix3d {
            v: [
                [1.047_811_2, 0.022_886_6, -0.050_127_0],
                [0.029_542_4, 0.990_484_4, -0.017_049_1],
                [-0.009_234_5, 0.015_043_6, 0.752_131_6],
            ],
        });
        // a tag newer than most readers; the matrix and curves say the same
        p.cicp = None;
        let mut icc = p.encode().expect("the built-in sRGB profile encodes");
        // moxcms stamps the current time into the header (bytes 24..36): a fixed one instead
        let date: Vec<u8> = [2025u16, 1, 1, 0, 0, 0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        icc[24..36].copy_from_slice(&date);
        icc
    })
}

fn parse_fields(blob: Vec<u8>) -> Vec<Field> {
    let mut reader = exif::Reader::new();
    reader.continue_on_error(true);
    let exif = match reader.read_raw(blob) {
        Ok(e) => e,
        Err(e) => match e.distill_partial_result(|_| {}) {
            Ok(e) => e,
            Err(_) => return Vec::new(),
        },
    };
    exif.fields()
        .filter(|f| f.ifd_num == In::PRIMARY)
        .cloned()
        .collect()
}

fn field_uint(fields: &[Field], ctx: Context, number: u16) -> Option<u32> {
    fields
        .iter()
        .find(|f| f.tag.context() == ctx && f.tag.number() == number)
        .and_then(|f| f.value.get_uint(0))
}

fn field_f64(fields: &[Field], number: u16) -> Option<f64> {
    let f = fields
        .iter()
        .find(|f| f.tag.context() == Context::Tiff && f.tag.number() == number)?;
    match &f.value {
        Value::Rational(v) => v.first().filter(|r| r.denom != 0).map(|r| r.to_f64()),
        v => v.get_uint(0).map(f64::from),
    }
}

/// X/YResolution and ResolutionUnit (default inch; "no unit" means no resolution).
fn fields_density(fields: &[Field]) -> Option<Density> {
    let unit = match field_uint(fields, Context::Tiff, tag::RESOLUTION_UNIT).unwrap_or(2) {
        2 => DensityUnit::Inch,
        3 => DensityUnit::Centimetre,
        _ => return None,
    };
    let x = field_f64(fields, tag::X_RESOLUTION)?;
    let y = field_f64(fields, tag::Y_RESOLUTION).unwrap_or(x);
    Density::new(x, y, unit)
}

/// The marker segments of a JPEG's header, in order, up to the first scan: `(marker, payload,
/// offset of the marker)`. Stops quietly at anything malformed.
pub fn jpeg_header_segments(b: &[u8]) -> impl Iterator<Item = (u8, &[u8], usize)> {
    let mut i = 2;
    std::iter::from_fn(move || {
        if i + 4 > b.len() || b[i] != 0xFF {
            return None;
        }
        let marker = b[i + 1];
        if marker == 0xDA || marker == 0xD9 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
        let seg = b.get(i + 4..(i + 2 + len).max(i + 4))?;
        let at = i;
        i += 2 + len;
        Some((marker, seg, at))
    })
}

/// The density of a JPEG's JFIF APP0 segment, when it has a unit (1 inch, 2 centimetre).
fn jfif_density(b: &[u8]) -> Option<Density> {
    let (_, seg, _) = jpeg_header_segments(b)
        .find(|(m, seg, _)| *m == 0xE0 && seg.len() >= 12 && seg.starts_with(b"JFIF\0"))?;
    let unit = match seg[7] {
        1 => DensityUnit::Inch,
        2 => DensityUnit::Centimetre,
        _ => return None,
    };
    let x = u16::from_be_bytes([seg[8], seg[9]]);
    let y = u16::from_be_bytes([seg[10], seg[11]]);
    Density::new(f64::from(x), f64::from(y), unit)
}

/// A JPEG's comment (COM) segments, as they are: archivists write box numbers and donor notes
/// there.
fn jpeg_comments(b: &[u8]) -> Vec<Vec<u8>> {
    jpeg_header_segments(b)
        .filter(|(m, _, _)| *m == 0xFE)
        .map(|(_, seg, _)| seg.to_vec())
        .collect()
}

/// `jpeg` with a COM segment for each of `comments`, after its APPn segments (where
/// libjpeg writes them).
pub fn add_jpeg_comments(jpeg: Vec<u8>, comments: &[Vec<u8>]) -> Vec<u8> {
    if comments.is_empty() || !jpeg.starts_with(&[0xFF, 0xD8]) {
        return jpeg;
    }
    let at = jpeg_header_segments(&jpeg)
        .find(|(m, _, _)| !(0xE0..=0xEF).contains(m))
        .map_or(2, |(_, _, at)| at);
    let mut out =
        Vec::with_capacity(jpeg.len() + comments.iter().map(|c| c.len() + 4).sum::<usize>());
    out.extend_from_slice(&jpeg[..at]);
    for c in comments {
        // a segment holds at most 65,533 bytes; longer comments are split
        for part in c.chunks(65_533) {
            out.extend_from_slice(&[0xFF, 0xFE]);
            out.extend_from_slice(&((part.len() + 2) as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(&jpeg[at..]);
    out
}

/// Remove the X/YResolution and ResolutionUnit entries from IFD0 of a little-endian classic
/// TIFF (the `tiff` encoder writes 1/1 with no unit into every image; a source without a
/// resolution must not gain one). Other files are returned as they are.
pub fn drop_tiff_resolution(mut t: Vec<u8>) -> Vec<u8> {
    if !t.starts_with(b"II*\0") {
        return t;
    }
    let u16_at = |t: &[u8], i: usize| u16::from_le_bytes([t[i], t[i + 1]]);
    let ifd = u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as usize;
    let Some(count) = t.get(ifd..ifd + 2).map(|_| usize::from(u16_at(&t, ifd))) else {
        return t;
    };
    let end = ifd + 2 + count * 12;
    if end + 4 > t.len() {
        return t;
    }
    let entries: Vec<[u8; 12]> = (0..count)
        .map(|k| {
            t[ifd + 2 + k * 12..ifd + 14 + k * 12]
                .try_into()
                .unwrap_or([0; 12])
        })
        .filter(|e| !matches!(u16::from_le_bytes([e[0], e[1]]), 282 | 283 | 296))
        .collect();
    let next: [u8; 4] = t[end..end + 4].try_into().unwrap_or([0; 4]);
    let mut w = ifd;
    t[w..w + 2].copy_from_slice(&(entries.len() as u16).to_le_bytes());
    w += 2;
    for e in &entries {
        t[w..w + 12].copy_from_slice(e);
        w += 12;
    }
    t[w..w + 4].copy_from_slice(&next);
    // what the entries left free: zeros (the values they pointed to stay, unreferenced)
    t[w + 4..end + 4].fill(0);
    t
}

/// The density of a PNG's pHYs chunk, when its unit is the metre.
fn png_density(b: &[u8]) -> Option<Density> {
    let mut decoder = png::Decoder::new(Cursor::new(b));
    decoder.ignore_checksums(true);
    let reader = decoder.read_info().ok()?;
    let dims = reader.info().pixel_dims?;
    if dims.unit != png::Unit::Meter {
        return None;
    }
    Density::new(
        f64::from(dims.xppu) / 100.0,
        f64::from(dims.yppu) / 100.0,
        DensityUnit::Centimetre,
    )
    .map(|d| {
        // pHYs can only say pixels per metre; show a whole number of dpi as such
        let dpi = (d.x * 2.54, d.y * 2.54);
        if (dpi.0 - dpi.0.round()).abs() < 0.01 && (dpi.1 - dpi.1.round()).abs() < 0.01 {
            Density {
                x: dpi.0.round(),
                y: dpi.1.round(),
                unit: DensityUnit::Inch,
            }
        } else {
            d
        }
    })
}

/// Patch a TIFF-structured EXIF blob for an upright output `width` x `height`: orientation 1,
/// PixelX/YDimension, IFD1 unlinked. Every other byte stays where it was. None if malformed.
fn patch_blob(mut b: Vec<u8>, width: u32, height: u32) -> Option<Vec<u8>> {
    let le = match b.get(0..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let rd16 = |b: &[u8], o: usize| -> Option<u16> {
        let s: [u8; 2] = b.get(o..o + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        })
    };
    let rd32 = |b: &[u8], o: usize| -> Option<u32> {
        let s: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    };
    let put = |b: &mut [u8], o: usize, bytes: &[u8]| -> Option<()> {
        b.get_mut(o..o + bytes.len())?.copy_from_slice(bytes);
        Some(())
    };
    let u16b = |v: u16| if le { v.to_le_bytes() } else { v.to_be_bytes() };
    let u32b = |v: u32| if le { v.to_le_bytes() } else { v.to_be_bytes() };
    // an entry: tag, type, count, value; set one inline value of `ty` (SHORT 3 or LONG 4)
    let set = |b: &mut [u8], e: usize, ty: u16, v: u32| -> Option<()> {
        put(b, e + 2, &u16b(ty))?;
        put(b, e + 4, &u32b(1))?;
        let value = if ty == 3 {
            let s = u16b(v as u16);
            [s[0], s[1], 0, 0]
        } else {
            u32b(v)
        };
        put(b, e + 8, &value)
    };

    if rd16(&b, 2)? != 42 {
        return None;
    }
    let ifd0 = rd32(&b, 4)? as usize;
    let n = usize::from(rd16(&b, ifd0)?);
    let mut exif_ifd = None;
    for i in 0..n {
        let e = ifd0 + 2 + 12 * i;
        match rd16(&b, e)? {
            tag::ORIENTATION => set(&mut b, e, 3, 1)?,
            tag::EXIF_IFD => exif_ifd = Some(rd32(&b, e + 8)? as usize),
            _ => {}
        }
    }
    put(&mut b, ifd0 + 2 + 12 * n, &u32b(0))?;
    if let Some(ifd) = exif_ifd {
        let n = usize::from(rd16(&b, ifd)?);
        for i in 0..n {
            let e = ifd + 2 + 12 * i;
            match rd16(&b, e)? {
                tag::PIXEL_X_DIMENSION => set(&mut b, e, 4, width)?,
                tag::PIXEL_Y_DIMENSION => set(&mut b, e, 4, height)?,
                _ => {}
            }
        }
    }
    Some(b)
}

/// Whether a primary-image field is carried into outputs at all.
fn is_carried(f: &Field) -> bool {
    let n = f.tag.number();
    match f.tag.context() {
        Context::Tiff => !PIXEL_LAYOUT.contains(&n) && !CONTAINER_BLOCKS.contains(&n),
        Context::Exif => n != tag::INTEROP_IFD,
        Context::Gps => true,
        _ => false,
    }
}

/// A field's value as TIFF type and bytes in this machine's byte order (the tiff encoder's).
fn raw(v: &Value) -> Option<(Type, Vec<u8>)> {
    fn ne<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
        v.iter().flat_map(|&x| f(x)).collect()
    }
    let (ty, bytes) = match v {
        Value::Byte(v) => (Type::BYTE, v.clone()),
        Value::Ascii(v) => (
            Type::ASCII,
            v.iter()
                .flat_map(|s| s.iter().copied().chain([0]))
                .collect(),
        ),
        Value::Short(v) => (Type::SHORT, ne(v, u16::to_ne_bytes)),
        Value::Long(v) => (Type::LONG, ne(v, u32::to_ne_bytes)),
        Value::Rational(v) => (
            Type::RATIONAL,
            v.iter()
                .flat_map(|r| [r.num.to_ne_bytes(), r.denom.to_ne_bytes()])
                .flatten()
                .collect(),
        ),
        Value::SByte(v) => (Type::SBYTE, ne(v, i8::to_ne_bytes)),
        Value::Undefined(v, _) => (Type::UNDEFINED, v.clone()),
        Value::SShort(v) => (Type::SSHORT, ne(v, i16::to_ne_bytes)),
        Value::SLong(v) => (Type::SLONG, ne(v, i32::to_ne_bytes)),
        Value::SRational(v) => (
            Type::SRATIONAL,
            v.iter()
                .flat_map(|r| [r.num.to_ne_bytes(), r.denom.to_ne_bytes()])
                .flatten()
                .collect(),
        ),
        Value::Float(v) => (Type::FLOAT, ne(v, f32::to_ne_bytes)),
        Value::Double(v) => (Type::DOUBLE, ne(v, f64::to_ne_bytes)),
        Value::Unknown(..) => return None,
    };
    (!bytes.is_empty()).then_some((ty, bytes))
}

/// Add one entry of any type to a directory being encoded.
pub fn put_entry<W: Write + Seek>(
    dir: &mut DirectoryEncoder<'_, W, TiffKindStandard>,
    number: u16,
    ty: Type,
    data: &[u8],
) -> TiffResult<()> {
    let entry = dir.write_entry_bytes(ty, data)?;
    let mut one = tiff::Directory::empty();
    one.extend([(Tag::from_u16_exhaustive(number), entry)]);
    dir.extend_from(&one);
    Ok(())
}

fn put_field<W: Write + Seek>(
    dir: &mut DirectoryEncoder<'_, W, TiffKindStandard>,
    f: &Field,
) -> TiffResult<()> {
    match raw(&f.value) {
        Some((ty, data)) => put_entry(dir, f.tag.number(), ty, &data),
        None => Ok(()),
    }
}

/// Write the carried Exif and GPS sub-IFDs (not linked into the image chain) and return the
/// IFD0 pointer entries to them, `(tag, offset)`. The Exif IFD's pixel dimensions become
/// `width` x `height`.
pub fn write_tiff_sub_ifds<W: Write + Seek>(
    enc: &mut TiffEncoder<W, TiffKindStandard>,
    meta: &Metadata,
    width: u32,
    height: u32,
) -> TiffResult<Vec<(u16, u32)>> {
    let mut pointers = Vec::new();
    for (ctx, pointer) in [(Context::Exif, tag::EXIF_IFD), (Context::Gps, tag::GPS_IFD)] {
        let mut fields = meta.carried().filter(|f| f.tag.context() == ctx).peekable();
        if fields.peek().is_none() {
            continue;
        }
        let mut dir = enc.extra_directory()?;
        for f in fields {
            match f.tag.number() {
                tag::PIXEL_X_DIMENSION => put_entry(
                    &mut dir,
                    tag::PIXEL_X_DIMENSION,
                    Type::LONG,
                    &width.to_ne_bytes(),
                )?,
                tag::PIXEL_Y_DIMENSION => put_entry(
                    &mut dir,
                    tag::PIXEL_Y_DIMENSION,
                    Type::LONG,
                    &height.to_ne_bytes(),
                )?,
                _ => put_field(&mut dir, f)?,
            }
        }
        let at = dir.finish_with_offsets()?;
        pointers.push((pointer, at.offset));
    }
    Ok(pointers)
}

/// Write the carried IFD0 tags, orientation 1 and the sub-IFD `pointers` into an IFD0.
pub fn write_tiff_ifd0<W: Write + Seek>(
    dir: &mut DirectoryEncoder<'_, W, TiffKindStandard>,
    meta: &Metadata,
    pointers: &[(u16, u32)],
) -> TiffResult<()> {
    for f in meta.carried().filter(|f| f.tag.context() == Context::Tiff) {
        put_field(dir, f)?;
    }
    put_entry(dir, tag::ORIENTATION, Type::SHORT, &1u16.to_ne_bytes())?;
    for &(t, offset) in pointers {
        put_entry(dir, t, Type::LONG, &offset.to_ne_bytes())?;
    }
    Ok(())
}

/// Write a density as X/YResolution and ResolutionUnit.
pub fn write_tiff_density<W: Write + Seek>(
    dir: &mut DirectoryEncoder<'_, W, TiffKindStandard>,
    d: &Density,
) -> TiffResult<()> {
    for (t, v) in [(tag::X_RESOLUTION, d.x), (tag::Y_RESOLUTION, d.y)] {
        let (n, den) = rational(v);
        let bytes: Vec<u8> = [n.to_ne_bytes(), den.to_ne_bytes()].concat();
        put_entry(dir, t, Type::RATIONAL, &bytes)?;
    }
    put_entry(
        dir,
        tag::RESOLUTION_UNIT,
        Type::SHORT,
        &d.tiff_unit().to_ne_bytes(),
    )
}
