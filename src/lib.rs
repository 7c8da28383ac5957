//! ddcolor: DDColor image colorization in candle, as a library.
//!
//! Data flow: [`pipeline`] turns a decoded image into the model input and composes the model's
//! ab prediction with the full-resolution L channel; [`model`] is the network itself.
pub mod model;
pub mod pipeline;
