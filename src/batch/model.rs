//! The model, loaded when the first image actually needs inference: a run where everything is
//! cached, skipped or a duplicate never reads the weights or opens a GPU. Cache keys need the
//! model's identity (a digest over every weight) before that; it comes from the index when the
//! weights file is unchanged since it was last loaded, else from loading the model.
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use super::index::{Index, Stat};
use crate::colorizer::Colorizer;
use crate::device::{self, DeviceSpec, Precision};
use crate::error::Error;
use crate::model::DDColor;
use crate::pipeline::{Gamut, LabFlavour, ResizeMode};

/// How to build the colorizer.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The checkpoint; empty for a dry run on a machine that does not have it (no identity,
    /// no cache lookups: [`LazyModel::has_weights`]).
    pub weights: PathBuf,
    pub device: DeviceSpec,
    pub dtype: Precision,
    pub tf32: bool,
    pub size: usize,
    pub resize: ResizeMode,
    pub gamut: Gamut,
    /// `--saturation`: applied when composing, never stored.
    pub saturation: f32,
    /// How L is computed (`--compat upstream`: OpenCV's way).
    pub lab: LabFlavour,
}

impl ModelSpec {
    /// What the identity depends on besides the weights file's own bytes.
    fn settings(&self) -> String {
        let heads = self.weights.with_file_name("config.json");
        let heads = std::fs::metadata(&heads)
            .map(|m| format!("{:?}", Stat::of(&m)))
            .unwrap_or_default();
        format!("v1 dtype={} config.json={heads}", self.dtype)
    }

    /// Open the device and load the weights (their digest not computed again when the
    /// model's `identity` is already known).
    pub fn load(&self, quiet: bool, identity: Option<String>) -> Result<Colorizer, Error> {
        let (dev, note) = self.device.open().map_err(Error::Device)?;
        if let (Some(note), false) = (note, quiet) {
            crate::say!("ddcolor: {note}");
        }
        candle_core::cuda::set_gemm_reduced_precision_f32(self.tf32);
        let model = DDColor::load_known(&self.weights, &dev, self.dtype.dtype(), identity)?;
        if !quiet {
            let c = model.config();
            crate::say!(
                "ddcolor: loaded {} ({} encoder, {} model) on {}, {}",
                crate::text::shown(&self.weights),
                c.encoder.name(),
                c.variant(),
                device::describe(&dev),
                device::dtype_name(model.dtype())
            );
        }
        Ok(Colorizer::new(model, self.size, self.resize)?
            .with_gamut(self.gamut)
            .with_saturation(self.saturation)
            .with_lab(self.lab))
    }
}

enum Source {
    Spec { spec: ModelSpec, quiet: bool },
    Ready,
}

/// A colorizer that loads itself on first use.
pub struct LazyModel {
    source: Source,
    colorizer: OnceLock<Colorizer>,
    /// The load error, said once; later calls get it again.
    failed: Mutex<Option<Arc<Error>>>,
    identity: OnceLock<(String, usize)>,
    size: usize,
    resize: ResizeMode,
    gamut: Gamut,
    saturation: f32,
    lab: LabFlavour,
}

impl LazyModel {
    pub fn new(spec: ModelSpec, quiet: bool) -> Self {
        let (size, resize, gamut, saturation, lab) = (
            spec.size,
            spec.resize,
            spec.gamut,
            spec.saturation,
            spec.lab,
        );
        Self {
            source: Source::Spec { spec, quiet },
            colorizer: OnceLock::new(),
            failed: Mutex::new(None),
            identity: OnceLock::new(),
            size,
            resize,
            gamut,
            saturation,
            lab,
        }
    }

    /// A model already loaded (library use).
    pub fn ready(colorizer: Colorizer) -> Self {
        let lazy = Self {
            source: Source::Ready,
            colorizer: OnceLock::new(),
            failed: Mutex::new(None),
            identity: OnceLock::new(),
            size: colorizer.size(),
            resize: colorizer.resize(),
            gamut: colorizer.gamut(),
            saturation: colorizer.saturation(),
            lab: colorizer.lab(),
        };
        let _ = lazy.colorizer.set(colorizer);
        lazy
    }

    /// The square size the model sees.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How L is computed for the model's input and the output.
    pub fn lab(&self) -> LabFlavour {
        self.lab
    }

    /// Full-resolution L and, with `input`, the model input of a decoded image (pipeline
    /// settings only; an image whose prediction is cached needs no model input).
    pub fn prepare_image(
        &self,
        img: &image::DynamicImage,
        input: bool,
    ) -> crate::pipeline::Prepared {
        let run = || match input {
            true => crate::pipeline::prepare_image_with(img, self.size, self.lab),
            false => crate::pipeline::prepare_l_only(img, self.size, self.lab),
        };
        if small(img.width(), img.height()) {
            crate::kernels::common::on_one_thread(run)
        } else {
            run()
        }
    }

    /// Full-resolution L plus a prediction, as an image (see [`Colorizer::compose_image`]):
    /// needs the pipeline settings only, never the weights.
    pub fn compose_image(
        &self,
        prepared: &crate::pipeline::Prepared,
        ab: &[f32],
        keep: &crate::pipeline::Keep,
    ) -> image::DynamicImage {
        let ab = crate::pipeline::saturate(ab, self.saturation);
        let run = || {
            crate::pipeline::compose_image(prepared, &ab, self.size, self.resize, self.gamut, keep)
        };
        if (prepared.width * prepared.height) as u64 <= SMALL_IMAGE {
            crate::kernels::common::on_one_thread(run)
        } else {
            run()
        }
    }

    /// Whether there are weights to load (a dry run may have none: the model is not on this
    /// machine yet).
    pub fn has_weights(&self) -> bool {
        match &self.source {
            Source::Spec { spec, .. } => !spec.weights.as_os_str().is_empty(),
            Source::Ready => true,
        }
    }

    /// Whether the weights were loaded in this run.
    pub fn is_loaded(&self) -> bool {
        self.colorizer.get().is_some()
    }

    /// The colorizer, loading it now if needed.
    pub fn get(&self) -> Result<&Colorizer, Error> {
        if let Some(c) = self.colorizer.get() {
            return Ok(c);
        }
        let mut failed = crate::sync::lock(&self.failed);
        if let Some(c) = self.colorizer.get() {
            return Ok(c);
        }
        if let Some(e) = &*failed {
            return Err(Error::Model(Arc::clone(e)));
        }
        let Source::Spec { spec, quiet } = &self.source else {
            unreachable!("a ready model is set at construction");
        };
        match spec.load(*quiet, self.identity.get().map(|(id, _)| id.clone())) {
            Ok(c) => {
                let _ = self.colorizer.set(c);
                Ok(self.colorizer.get().expect("just set"))
            }
            Err(e) => {
                let e = Arc::new(e);
                *failed = Some(Arc::clone(&e));
                Err(Error::Model(e))
            }
        }
    }

    /// The model's identity (for cache keys) and its output channels: from `index` when the
    /// weights are unchanged since they were last loaded on this machine, else by loading.
    pub fn identity(&self, index: &Index) -> Result<(&str, usize), Error> {
        if let Some((id, ch)) = self.identity.get() {
            return Ok((id, *ch));
        }
        let known = match &self.source {
            Source::Spec { spec, .. } => {
                let resolved = spec.weights.canonicalize().ok();
                let stat = std::fs::metadata(&spec.weights).ok().map(|m| Stat::of(&m));
                resolved
                    .zip(stat)
                    .and_then(|(p, st)| index.model_identity(&p, &st, &spec.settings()))
            }
            Source::Ready => None,
        };
        let found = match known {
            Some(found) => found,
            None => {
                let c = self.get()?;
                let found = (
                    c.model().identity().to_owned(),
                    c.model().config().num_output_channels,
                );
                if let Source::Spec { spec, .. } = &self.source {
                    if let (Ok(p), Ok(m)) = (
                        spec.weights.canonicalize(),
                        std::fs::metadata(&spec.weights),
                    ) {
                        index.record_model(&p, &Stat::of(&m), &spec.settings(), &found.0, found.1);
                    }
                }
                found
            }
        };
        let (id, ch) = self.identity.get_or_init(|| found);
        Ok((id, *ch))
    }
}

/// Images of at most this many pixels are prepared and composed on the stage's own thread
/// ([`crate::kernels::common::on_one_thread`]): the work (about a millisecond at this size) is
/// less than waking the pool costs, and the engine's two readers and two writers already work
/// on several images at once.
const SMALL_IMAGE: u64 = 512 * 512;

fn small(width: u32, height: u32) -> bool {
    u64::from(width) * u64::from(height) <= SMALL_IMAGE
}
