//! The library's front door: a loaded model plus the pipeline settings, turning decoded images
//! into colour images (`Colorizer::colorize`), or, for batch work, model inputs into ab
//! predictions and back (`predict`, `compose`).
use candle_core::Tensor;
use image::{DynamicImage, RgbImage};

use crate::error::{Error, Result};
use crate::model::DDColor;
use crate::pipeline::{self, Gamut, LabFlavour, Prepared, ResizeMode};

/// Pixels of a batch (images x size x size) up to which a CPU forward pass runs on one thread
/// (thumbnails, the test model at 32 or 64 px); the released models' sizes (256 and up) are
/// far above it.
const SMALL_FORWARD: usize = 64 * 64;

/// Model size used when none is given (the resolution DDColor was trained at).
pub const DEFAULT_SIZE: usize = 512;

/// A model and how to run it on whole images.
pub struct Colorizer {
    model: DDColor,
    size: usize,
    resize: ResizeMode,
    gamut: Gamut,
    saturation: f32,
    lab: LabFlavour,
}

impl Colorizer {
    /// `size` must be a positive multiple of 32.
    pub fn new(model: DDColor, size: usize, resize: ResizeMode) -> Result<Self> {
        crate::error::check_model_size(size)?;
        Ok(Self {
            model,
            size,
            resize,
            gamut: Gamut::default(),
            saturation: 1.0,
            lab: LabFlavour::Exact,
        })
    }

    /// How L is computed from sRGB (default exact; [`LabFlavour::OpenCv`] for the authors'
    /// pixels with `--compat upstream`).
    pub fn with_lab(mut self, lab: LabFlavour) -> Self {
        self.lab = lab;
        self
    }

    pub fn lab(&self) -> LabFlavour {
        self.lab
    }

    /// Scale the predicted chroma by `s` when composing (0 gray, 1 as predicted, up to 2;
    /// see [`pipeline::saturate`]). Predictions are unchanged: a cache keeps them raw.
    pub fn with_saturation(mut self, s: f32) -> Self {
        self.saturation = s;
        self
    }

    pub fn saturation(&self) -> f32 {
        self.saturation
    }

    /// What becomes of predicted colours outside sRGB (default [`Gamut::Auto`]).
    pub fn with_gamut(mut self, gamut: Gamut) -> Self {
        self.gamut = gamut;
        self
    }

    pub fn gamut(&self) -> Gamut {
        self.gamut
    }

    pub fn model(&self) -> &DDColor {
        &self.model
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn resize(&self) -> ResizeMode {
        self.resize
    }

    /// Full-resolution L and the square model input of an interleaved RGB `[0,1]` image.
    pub fn prepare(&self, rgb: &[f32], width: usize, height: usize) -> Prepared {
        pipeline::prepare_with(rgb, width, height, self.size, self.lab)
    }

    /// Run the network on a batch of model inputs (`3*size*size` each); returns `2*size*size`
    /// ab planes per input.
    pub fn predict(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        if inputs.is_empty() {
            return Ok(vec![]);
        }
        let s = self.size;
        let dev = self.model.device();
        let mut flat = Vec::with_capacity(inputs.len() * 3 * s * s);
        for x in inputs {
            if x.len() != 3 * s * s {
                return Err(Error::InputLength {
                    got: x.len(),
                    expected: 3 * s * s,
                });
            }
            flat.extend_from_slice(x);
        }
        let x = Tensor::from_vec(flat, (inputs.len(), 3, s, s), dev)?;
        // a forward pass this small is over before a second thread would have woken up
        let ab = if dev.is_cpu() && inputs.len() * s * s <= SMALL_FORWARD {
            crate::kernels::common::on_one_thread(|| self.model.forward(&x))?
        } else {
            self.model.forward(&x)?
        };
        let ab = ab.to_device(&candle_core::Device::Cpu)?.flatten_all()?;
        let ab = ab.to_vec1::<f32>()?;
        Ok(ab.chunks_exact(2 * s * s).map(<[f32]>::to_vec).collect())
    }

    /// Full-resolution L plus the model's ab: interleaved RGB in `[0,1]`.
    pub fn compose(&self, prepared: &Prepared, ab: &[f32]) -> Vec<f32> {
        pipeline::compose_gamut(
            &prepared.l,
            prepared.width,
            prepared.height,
            &pipeline::saturate(ab, self.saturation),
            self.size,
            self.resize,
            self.gamut,
        )
    }

    /// [`Colorizer::compose`] straight to an image at the depth, and with the alpha, that
    /// `keep` asks for (see [`pipeline::Keep::of`]).
    pub fn compose_image(
        &self,
        prepared: &Prepared,
        ab: &[f32],
        keep: &pipeline::Keep,
    ) -> DynamicImage {
        let ab = pipeline::saturate(ab, self.saturation);
        pipeline::compose_image(prepared, &ab, self.size, self.resize, self.gamut, keep)
    }

    /// Colorize one decoded image: 8-bit RGB out, the size of the input.
    pub fn colorize(&self, img: &DynamicImage) -> Result<RgbImage> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let prepared = pipeline::prepare_image_with(img, self.size, self.lab);
        let ab = self.predict(&[&prepared.model_input])?;
        let out = self.compose(&prepared, &ab[0]);
        Ok(pipeline::to_rgb8(&out, w, h))
    }
}

/// Forward-pass timings in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub median_ms: f64,
    pub min_ms: f64,
}

/// Time `runs` forward passes of a random `[batch, 3, size, size]` input after two warm-up
/// passes (the reference script's protocol). Waits for the device before stopping the clock.
pub fn bench_forward(model: &DDColor, size: usize, batch: usize, runs: usize) -> Result<Timing> {
    let x = Tensor::rand(0f32, 1.0, (batch, 3, size, size), model.device())?;
    for _ in 0..2 {
        model.forward(&x)?;
    }
    model.device().synchronize()?;
    let mut ts = Vec::with_capacity(runs.max(1));
    for _ in 0..runs.max(1) {
        let t = std::time::Instant::now();
        let y = model.forward(&x)?;
        model.device().synchronize()?;
        drop(y);
        ts.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ts.sort_by(f64::total_cmp);
    Ok(Timing {
        median_ms: ts[ts.len() / 2],
        min_ms: ts[0],
    })
}
