//! Loading DDColor checkpoints as the authors publish them: the container is recognised by its
//! content (torch zip `.pth`/`.bin`, safetensors), never by its extension; spectral and weight
//! norm are folded at load time; every failure names the file and the key.
//!
//! The torch formats are read with candle's pickle *interpreter*, which understands the opcodes
//! that describe tensors and dictionaries and nothing else: no Python object is ever built and no
//! code in the file is ever executed.
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

/// Why a checkpoint could not be turned into a model.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read weights file {}: {source}", crate::text::shown(path))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a readable checkpoint: {reason}", crate::text::shown(path))]
    Container { path: PathBuf, reason: String },
    #[error("{} is not a DDColor checkpoint: {reason}", crate::text::shown(path))]
    NotDdcolor { path: PathBuf, reason: String },
    #[error(
        "{}: missing key `{key}` (the file is not a complete DDColor checkpoint)",
        crate::text::shown(path)
    )]
    MissingKey { path: PathBuf, key: String },
    #[error(
        "{}: shape of `{key}` is {actual:?} but {expected:?} was expected",
        crate::text::shown(path)
    )]
    Shape {
        path: PathBuf,
        key: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{}: {reason}", crate::text::shown(path))]
    Invalid { path: PathBuf, reason: String },
    #[error("{}: {source}", crate::text::shown(path))]
    Tensor {
        path: PathBuf,
        source: candle_core::Error,
    },
}

/// The container formats we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// `torch.save` zip archive: the authors' `.pth` (`{'params': state_dict}`) and Hugging Face
    /// `pytorch_model.bin` (a bare state dict).
    TorchZip,
    /// A safetensors file.
    Safetensors,
}

impl fmt::Display for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Container::TorchZip => "PyTorch zip checkpoint",
            Container::Safetensors => "safetensors",
        })
    }
}

/// Recognise the container from the first bytes of the file.
pub fn sniff(path: &Path) -> Result<Container, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]).map_err(io)? {
            0 => break,
            k => n += k,
        }
    }
    let head = &head[..n];
    let container = |reason: &str| LoadError::Container {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if n == 0 {
        return Err(container("the file is empty"));
    }
    if head.starts_with(b"PK\x03\x04") {
        return Ok(Container::TorchZip);
    }
    if n >= 9 && head[8] == b'{' {
        return Ok(Container::Safetensors);
    }
    if head.starts_with(&[0x80]) {
        return Err(container(
            "legacy (pre-zip) torch pickle format; re-save it with torch>=1.6 or convert it to safetensors",
        ));
    }
    Err(container(
        "neither a PyTorch zip checkpoint nor safetensors (unknown leading bytes)",
    ))
}

/// All tensors of a checkpoint, on the CPU, plus bookkeeping for clear errors.
pub struct Checkpoint {
    path: PathBuf,
    container: Container,
    /// Every key's shape (kept after its tensor was handed out and dropped).
    shapes: HashMap<String, Vec<usize>>,
    tensors: Mutex<HashMap<String, Tensor>>,
    /// Hand each tensor out once and forget it ([`Checkpoint::consumed`]), so that its memory
    /// goes back to the allocator as soon as the layer that asked for it has its own form.
    consume: bool,
    used: Mutex<BTreeSet<String>>,
    /// Fabricate every requested tensor (benchmarks of a released architecture without its
    /// weights); see [`Checkpoint::random`].
    random: bool,
}

impl Checkpoint {
    /// Read every tensor of a checkpoint file (the container is recognised by content).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let container = sniff(path)?;
        let bad = |e: candle_core::Error| LoadError::Container {
            path: path.to_owned(),
            reason: format!("{container} is truncated or corrupt ({e})"),
        };
        let list = match container {
            Container::Safetensors => candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(bad)?
                .into_iter()
                .collect::<Vec<_>>(),
            Container::TorchZip => super::torch_zip::read(path).map_err(bad)?,
        };
        if list.is_empty() {
            return Err(LoadError::NotDdcolor {
                path: path.to_owned(),
                reason: "it holds no tensors".into(),
            });
        }
        Ok(Self::from_tensors(path, container, list))
    }

    /// Wrap tensors that are already in memory (tests, conversions).
    pub fn from_tensors(
        path: impl Into<PathBuf>,
        container: Container,
        tensors: impl IntoIterator<Item = (String, Tensor)>,
    ) -> Self {
        let tensors: HashMap<String, Tensor> = tensors.into_iter().collect();
        Self {
            path: path.into(),
            container,
            shapes: tensors
                .iter()
                .map(|(k, t)| (k.clone(), t.dims().to_vec()))
                .collect(),
            tensors: Mutex::new(tensors),
            consume: false,
            used: Mutex::new(BTreeSet::new()),
            random: false,
        }
    }

    /// This checkpoint handing each tensor out once: a second [`Checkpoint::get`] of a key is
    /// refused, and [`Checkpoint::digest`] sees only the tensors not yet handed out (take a
    /// [`Checkpoint::snapshot`] first). For loading one model with half the peak memory.
    pub fn consumed(mut self) -> Self {
        self.consume = true;
        self
    }

    /// A checkpoint that answers every request with random values of the requested shape,
    /// scaled so activations stay finite: for timing an architecture whose weights are not at
    /// hand. Norm layers come out plain (no `weight_orig`), BatchNorm variances positive.
    pub fn random() -> Self {
        let mut ck = Self::from_tensors("<random weights>", Container::Safetensors, []);
        ck.random = true;
        ck
    }

    fn fabricate(key: &str, shape: &[usize]) -> candle_core::Result<Tensor> {
        let dev = &Device::Cpu;
        let leaf = key.rsplit('.').next().unwrap_or(key);
        let imagenet = |v: [f32; 3]| Tensor::new(&v, dev)?.reshape((1, 3, 1, 1));
        match (key, leaf, shape.len()) {
            ("mean", _, _) => imagenet([0.485, 0.456, 0.406]),
            ("std", _, _) => imagenet([0.229, 0.224, 0.225]),
            (_, "running_var", _) => Tensor::ones(shape, DType::F32, dev),
            (_, "running_mean" | "bias", _) => Tensor::zeros(shape, DType::F32, dev),
            (_, "gamma", _) => Tensor::full(0.1f32, shape, dev),
            (_, "weight", 1) => Tensor::ones(shape, DType::F32, dev),
            _ => {
                let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
                Tensor::randn(0f32, (1.0 / fan_in as f64).sqrt() as f32, shape, dev)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn container(&self) -> Container {
        self.container
    }

    pub fn len(&self) -> usize {
        self.shapes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.shapes.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.shapes.keys().map(String::as_str)
    }

    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.shapes.get(key).map(Vec::as_slice)
    }

    /// The shape of a key that must exist.
    pub fn require_shape(&self, key: &str) -> Result<&[usize], LoadError> {
        self.shape(key).ok_or_else(|| self.missing(key))
    }

    pub(crate) fn missing(&self, key: &str) -> LoadError {
        LoadError::MissingKey {
            path: self.path.clone(),
            key: key.to_owned(),
        }
    }

    pub(crate) fn invalid(&self, reason: impl Into<String>) -> LoadError {
        LoadError::Invalid {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn tensor_err(&self, source: candle_core::Error) -> LoadError {
        LoadError::Tensor {
            path: self.path.clone(),
            source,
        }
    }

    /// A float tensor of exactly `shape`, as f32 on the CPU.
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<Tensor, LoadError> {
        if self.random {
            return Self::fabricate(key, shape).map_err(|e| self.tensor_err(e));
        }
        let t = {
            let mut tensors = crate::sync::lock(&self.tensors);
            let t = if self.consume {
                tensors.remove(key)
            } else {
                tensors.get(key).cloned()
            };
            t.ok_or_else(|| match self.shapes.contains_key(key) {
                true => self.invalid(format!("`{key}` was asked for twice")),
                false => self.missing(key),
            })?
        };
        if t.dims() != shape {
            return Err(LoadError::Shape {
                path: self.path.clone(),
                key: key.to_owned(),
                actual: t.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        if !t.dtype().is_float() {
            return Err(self.invalid(format!(
                "`{key}` has dtype {:?}, a float tensor was expected",
                t.dtype()
            )));
        }
        if let Ok(mut used) = self.used.lock() {
            used.insert(key.to_owned());
        }
        t.to_dtype(DType::F32).map_err(|e| self.tensor_err(e))
    }

    /// A SHA-256 over every float tensor (name, shape, f32 values, in key order) plus `extra`
    /// (the configuration): the model's identity for cache keys. Independent of the container,
    /// so the same weights as `.pth` or safetensors share cached results.
    pub fn digest(&self, extra: &str) -> Result<String, LoadError> {
        self.digest_of(self.snapshot(), extra)
    }

    /// The tensors not yet handed out, in key order (cheap: the values are shared).
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        let mut list: Vec<(String, Tensor)> = crate::sync::lock(&self.tensors)
            .iter()
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// [`Checkpoint::digest`] over a [`Checkpoint::snapshot`] taken before.
    pub fn digest_of(
        &self,
        tensors: Vec<(String, Tensor)>,
        extra: &str,
    ) -> Result<String, LoadError> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(extra.as_bytes());
        if self.random {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            h.update(format!("random weights {nanos} {}", std::process::id()));
        }
        for (k, t) in &tensors {
            if !t.dtype().is_float() {
                continue; // num_batches_tracked does not change the output
            }
            h.update(k.as_bytes());
            h.update(format!("{:?}", t.dims()).as_bytes());
            // the f32 values' little-endian bytes: straight from the tensor's storage where it
            // is f32 and contiguous (no copy), else converted
            if cfg!(target_endian = "little") && t.dtype() == DType::F32 && t.is_contiguous() {
                let (storage, layout) = t.storage_and_layout();
                if let candle_core::Storage::Cpu(cpu) = &*storage {
                    let v = cpu.as_slice::<f32>().map_err(|e| self.tensor_err(e))?;
                    let v = &v[layout.start_offset()..][..t.elem_count()];
                    h.update(bytemuck::cast_slice::<f32, u8>(v));
                    continue;
                }
            }
            let v = t
                .flatten_all()
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| self.tensor_err(e))?;
            for x in v {
                h.update(x.to_le_bytes());
            }
        }
        Ok(crate::hash::hex(&h.finalize()))
    }

    /// Keys that no layer asked for (buffers such as `num_batches_tracked` aside).
    pub fn unused_keys(&self) -> Vec<String> {
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        let mut out: Vec<String> = self
            .shapes
            .keys()
            .filter(|k| !used.contains(*k) && !k.ends_with("num_batches_tracked"))
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// A view with a key prefix, as `VarBuilder::pp` in candle; the model built from it keeps
    /// its weights in f32.
    pub fn root(&self) -> Vb<'_> {
        self.root_as(DType::F32)
    }

    /// [`Checkpoint::root`] for a model that keeps its weights in `dtype` (folding is done in
    /// f32 first, then each finished weight is converted).
    pub fn root_as(&self, dtype: DType) -> Vb<'_> {
        Vb {
            ckpt: self,
            prefix: String::new(),
            dtype,
            bf16_products: false,
        }
    }

    /// [`Checkpoint::root`] for a CPU model whose matrix products run in bf16: weights and
    /// activations stay f32 except the weights of the products, which the layers keep in bf16
    /// (see [`Vb::bf16_products`]).
    pub fn root_bf16_products(&self) -> Vb<'_> {
        Vb {
            bf16_products: true,
            ..self.root_as(DType::F32)
        }
    }
}

/// A prefixed view into a [`Checkpoint`], mirroring the PyTorch attribute path.
#[derive(Clone)]
pub struct Vb<'a> {
    ckpt: &'a Checkpoint,
    prefix: String,
    /// What the model's weights are stored as on the device.
    dtype: DType,
    /// The products of the layers below run in bf16 (CPU, f32 activations).
    bf16_products: bool,
}

impl<'a> Vb<'a> {
    /// Descend into a sub-module: `vb.pp("decoder").pp(0)` is `decoder.0.`.
    pub fn pp(&self, name: impl fmt::Display) -> Vb<'a> {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Vb {
            ckpt: self.ckpt,
            prefix,
            dtype: self.dtype,
            bf16_products: self.bf16_products,
        }
    }

    /// The same view with the products of the layers below in f32 (a layer kept at full
    /// precision in a bf16 model).
    pub fn f32_products(&self) -> Vb<'a> {
        Vb {
            bf16_products: false,
            ..self.clone()
        }
    }

    /// Whether the layers below keep the weights of their products in bf16 (CPU).
    pub fn bf16_products(&self) -> bool {
        self.bf16_products
    }

    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.ckpt.contains(&self.key(name))
    }

    pub fn checkpoint(&self) -> &'a Checkpoint {
        self.ckpt
    }

    /// The dtype the model's weights are kept in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A float tensor of exactly `shape` (f32, CPU).
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, LoadError> {
        self.ckpt.get(&self.key(name), shape)
    }

    /// A convolution or linear weight of `shape`, with spectral norm (`weight_orig`, `weight_u`,
    /// `weight_v`) or weight norm (`weight_g`, `weight_v`) folded in, whichever the file holds.
    pub fn normed_weight(&self, shape: &[usize]) -> Result<Tensor, LoadError> {
        let ck = self.ckpt;
        let out = shape[0];
        let fan: usize = shape[1..].iter().product();
        if self.contains("weight_orig") {
            // eval-mode torch.nn.utils.spectral_norm: sigma = u . (W v) with the stored u and v.
            let w = self.get("weight_orig", shape)?;
            let u = self.get("weight_u", &[out])?;
            let v = self.get("weight_v", &[fan])?;
            let sigma = spectral_sigma(&w, &u, &v).map_err(|e| ck.tensor_err(e))?;
            if !sigma.is_finite() || sigma.abs() < 1e-12 {
                return Err(ck.invalid(format!(
                    "spectral norm of `{}` is {sigma}; the stored u/v vectors are broken",
                    self.key("weight_orig")
                )));
            }
            w.affine(1.0 / sigma as f64, 0.0)
                .map_err(|e| ck.tensor_err(e))
        } else if self.contains("weight_g") {
            let mut gshape = vec![1usize; shape.len()];
            gshape[0] = out;
            let g = self.get("weight_g", &gshape)?;
            let v = self.get("weight_v", shape)?;
            weight_norm(&g, &v).map_err(|e| ck.tensor_err(e))
        } else {
            self.get("weight", shape)
        }
    }
}

/// `u . (W v)` for a weight reshaped to `[out, fan]`.
fn spectral_sigma(w: &Tensor, u: &Tensor, v: &Tensor) -> candle_core::Result<f32> {
    let (out, fan) = (u.dim(0)?, v.dim(0)?);
    let wv = w.reshape((out, fan))?.matmul(&v.reshape((fan, 1))?)?;
    u.reshape((1, out))?
        .matmul(&wv)?
        .flatten_all()?
        .to_vec1::<f32>()
        .map(|s| s[0])
}

/// torch.nn.utils.weight_norm(dim=0): `w = g * v / ||v||`, the norm taken per output channel.
fn weight_norm(g: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    let out = v.dim(0)?;
    let norm = v.reshape((out, ()))?.sqr()?.sum_keepdim(1)?.sqrt()?;
    v.broadcast_div(&norm.reshape(g.shape())?)?.broadcast_mul(g)
}
