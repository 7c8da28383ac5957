//! Pipeline tests (being written).
