//! `torch.save` zip archives (the authors' `.pth`, Hugging Face `pytorch_model.bin`), read with
//! the file opened once: the pickle (`*/data.pkl`) is interpreted by candle's pickle machine
//! (tensors and dictionaries only: no Python object is built, no code in the file runs), the
//! zip's directory is read once, and each tensor's bytes are read with one positioned read
//! straight into the tensor's own buffer, the tensors in parallel.
//!
//! candle's `PthTensors` opens the file and parses the zip directory again for every tensor
//! (605 times for a large checkpoint) and finds a missing state-dict wrapper only by an error
//! message; this reader says what it found in types.
use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

/// State-dict wrappers looked inside, in order (`params` is what the authors' `.pth` files
/// use); the first whose value holds tensors wins, else the top level.
pub const WRAPPER_KEYS: [&str; 4] = ["params", "params_ema", "state_dict", "model"];

/// Where a tensor's storage lies in the archive.
struct Entry {
    info: TensorInfo,
    /// Offset of the stored (uncompressed) bytes in the file; `None` when the entry is
    /// compressed and has to go through the zip reader.
    offset: Option<u64>,
    /// Bytes of the entry once uncompressed.
    size: u64,
}

/// Every tensor of the archive at `path`, on the CPU.
pub fn read(path: &Path) -> candle_core::Result<Vec<(String, Tensor)>> {
    let file = File::open(path)?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file.try_clone()?)).map_err(zip_err)?;
    let names = zip
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<Vec<String>, _>>()
        .map_err(zip_err)?;
    let mut infos = Vec::new();
    for name in names.iter().filter(|n| n.ends_with("data.pkl")) {
        let dir = name.strip_suffix(".pkl").unwrap_or(name);
        let mut stack = Stack::empty();
        stack.read_loop(&mut BufReader::new(zip.by_name(name).map_err(zip_err)?))?;
        infos.extend(state_dict_infos(stack.finalize()?, Path::new(dir)));
    }
    let mut entries = Vec::with_capacity(infos.len());
    for info in infos {
        let f = zip.by_name(&info.path).map_err(zip_err)?;
        let stored = f.compression() == zip::CompressionMethod::Stored && !f.encrypted();
        let offset = if stored { f.data_start() } else { None };
        let size = f.size();
        drop(f);
        let entry = Entry { info, offset, size };
        check(&entry)?;
        entries.push(entry);
    }
    // Every buffer is allocated here, on the calling thread, so that its memory comes from
    // (and, once the model's layers have their own forms of it, goes back to) the allocator's
    // main arena, where those layers allocate: the freed checkpoint is reused, not faulted in
    // again. Stored entries are then filled by positioned reads in parallel; the rest through
    // the zip reader, in turn.
    let mut bufs: Vec<Buf> = entries.iter().map(Buf::for_entry).collect();
    entries
        .par_iter()
        .zip(bufs.par_iter_mut())
        .filter(|(e, _)| e.offset.is_some())
        .try_for_each(|(e, buf)| {
            let offset = e.offset.unwrap_or_default() + e.start();
            file.read_exact_at(buf.bytes(), offset)
        })?;
    let mut out = Vec::with_capacity(entries.len());
    for (e, mut buf) in entries.iter().zip(bufs) {
        if e.offset.is_none() {
            let mut bytes = Vec::new();
            zip.by_name(&e.info.path)
                .map_err(zip_err)?
                .read_to_end(&mut bytes)?;
            let start = e.start() as usize;
            let dst = buf.bytes();
            let src = bytes.get(start..start + dst.len()).ok_or_else(short)?;
            dst.copy_from_slice(src);
        }
        out.push(tensor(e, buf)?);
    }
    Ok(out)
}

/// A tensor's values as read, before they become a tensor.
enum Buf {
    F32(Vec<f32>),
    Raw(Vec<u8>),
}

impl Buf {
    fn for_entry(e: &Entry) -> Buf {
        let count = e.info.layout.shape().elem_count();
        match e.info.dtype {
            DType::F32 => Buf::F32(vec![0f32; count]),
            other => Buf::Raw(vec![0u8; count * other.size_in_bytes()]),
        }
    }

    fn bytes(&mut self) -> &mut [u8] {
        match self {
            Buf::F32(v) => bytemuck::cast_slice_mut(v),
            Buf::Raw(v) => v,
        }
    }
}

fn zip_err(e: zip::result::ZipError) -> candle_core::Error {
    candle_core::Error::Msg(format!("zip: {e}"))
}

fn short() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "a tensor reaches past its storage",
    )
}

/// The tensors' descriptions of the state dict inside the pickled object `obj`: the value of
/// the first of [`WRAPPER_KEYS`] that holds tensors, else the top level's.
fn state_dict_infos(obj: Object, dir: &Path) -> Vec<TensorInfo> {
    // a TorchScript module pickles as Build(Reduce(__torch__.Module), state)
    let obj = match obj {
        Object::Build { callable, args } => match *callable {
            Object::Reduce { callable, .. }
                if matches!(&*callable, Object::Class { module_name, class_name }
                    if module_name == "__torch__" && class_name == "Module") =>
            {
                *args
            }
            _ => return vec![],
        },
        obj => obj,
    };
    let Object::Dict(items) = obj else {
        return vec![];
    };
    for key in WRAPPER_KEYS {
        let inner = items
            .iter()
            .find(|(k, _)| matches!(k, Object::Unicode(s) if s == key))
            .map(|(_, v)| v);
        if let Some(Object::Dict(inner)) = inner {
            let found = dict_infos(inner.clone(), dir);
            if !found.is_empty() {
                return found;
            }
        }
    }
    dict_infos(items, dir)
}

/// The tensors among a dictionary's values (other values, such as an optimizer's step count,
/// are not tensors and are left out).
fn dict_infos(items: Vec<(Object, Object)>, dir: &Path) -> Vec<TensorInfo> {
    items
        .into_iter()
        .filter_map(|(name, value)| value.into_tensor_info(name, dir).ok().flatten())
        .collect()
}

impl Entry {
    /// Where the tensor's values start in its entry (candle's pickle reader gives the start
    /// in bytes).
    fn start(&self) -> u64 {
        self.info.layout.start_offset() as u64
    }
}

/// Check an entry's layout and size before anything is read.
fn check(e: &Entry) -> candle_core::Result<()> {
    let layout = &e.info.layout;
    if !layout.is_contiguous() && !layout.is_fortran_contiguous() {
        candle_core::bail!("{}: cannot read a non-contiguous tensor", e.info.name);
    }
    let bytes = (layout.shape().elem_count() * e.info.dtype.size_in_bytes()) as u64;
    if e.start() + bytes > e.size {
        return Err(short().into());
    }
    Ok(())
}

/// The tensor of an entry whose values are in `buf`.
fn tensor(e: &Entry, buf: Buf) -> candle_core::Result<(String, Tensor)> {
    let info = &e.info;
    let dims = info.layout.dims();
    // fortran order: the values of the reversed shape, transposed back
    let fortran = info.layout.is_fortran_contiguous() && !info.layout.is_contiguous();
    let shape: Vec<usize> = if fortran {
        dims.iter().rev().copied().collect()
    } else {
        dims.to_vec()
    };
    let t = match buf {
        Buf::F32(mut v) => {
            if cfg!(target_endian = "big") {
                for x in &mut v {
                    *x = f32::from_bits(u32::from_le(x.to_bits()));
                }
            }
            Tensor::from_vec(v, shape, &Device::Cpu)?
        }
        Buf::Raw(v) => Tensor::from_raw_buffer(&v, info.dtype, &shape, &Device::Cpu)?,
    };
    let t = if fortran {
        t.permute((0..dims.len()).rev().collect::<Vec<_>>())?
    } else {
        t
    };
    Ok((info.name.clone(), t))
}
