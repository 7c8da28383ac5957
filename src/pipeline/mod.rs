//! Pre- and post-processing around the model (stub, being written).
