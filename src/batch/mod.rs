//! Batch colorizing as a stream of images, each flowing through bounded stages on its own:
//! walk ([`walk`], only this process's [`shard`]) -> destination and skip checks ([`dest`]) -> read once and hash ([`read`],
//! [`index`]) -> in-run dedup ([`dedup`]) -> cache lookup -> lease, renewed while held
//! ([`lease`]) -> decode -> infer (the model loads on first need: [`model`]; each new value
//! compressed and stored off the model's thread: `store`) -> compose and write atomically -> record ([`report`], one durable line per input). [`engine`] wires the
//! stages: a walker thread, prep workers, a poller for images another process is inferring,
//! the inference loop ([`infer`]) and two writers ([`write`]); an image's stages are types
//! ([`stage`]), what the threads share is in [`state`], the options in [`options`]. Memory follows the stages' bounds, not the archive.
pub mod dedup;
pub mod dest;
pub mod engine;
pub mod index;
mod infer;
pub mod lease;
mod metrics;
pub mod model;
mod options;
mod poll;
mod prep;
pub mod read;
pub mod report;
pub mod shard;
mod stage;
mod state;
mod store;
pub mod walk;
mod write;

pub use dest::OutputFormat;
pub use engine::{run, Outcome};
pub use model::{LazyModel, ModelSpec};
pub use options::{BatchOptions, StdioAliases, ALREADY_COLOUR, DEFAULT_LEASE_TTL};
pub use report::{Record, Status, Summary};
