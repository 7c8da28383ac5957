//! ddcolor: colorize black-and-white photos with DDColor, in candle, as a library and a CLI.
//!
//! Data flow: [`imageio`] decodes a file; [`pipeline`] turns it into the full-resolution L
//! channel and the square gray model input; [`model`] (DDColor, on the tensor ops of
//! [`kernels`]) predicts ab; [`pipeline`]
//! composes full-resolution L with the resized ab; [`imageio`] writes the result atomically.
//! [`Colorizer`] ties these together for one image.
pub mod alloc;
pub mod batch;
pub mod cache;
pub mod cli;
pub mod colorizer;
#[cfg(unix)]
pub mod confined;
pub mod device;
pub mod error;
pub mod gallery;
pub mod hash;
pub mod imageio;
pub mod kernels;
mod keywords;
pub mod meta;
pub mod model;
pub mod pipeline;
pub mod progress;
pub mod say;
mod simd;
mod sync;
pub mod text;
pub mod weights;

pub use colorizer::Colorizer;
pub use error::{Error, Result};
