//! `ddcolor weights list` and `ddcolor weights fetch NAME...`: the released models, where they
//! are on this machine, and their download.
use clap::{Args, Subcommand};

use crate::weights::{fetch, Hub, Locations, ModelName, WeightsError};

#[derive(Debug, Subcommand)]
pub enum WeightsCommand {
    /// The released models: name, encoder, download size, and where a copy is on this machine.
    List,
    /// Download models into the user data dir (progress bar, resumable, SHA-256 checked).
    Fetch(FetchArgs),
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// paper_tiny, paper, modelscope or artistic (several may be given).
    #[arg(value_name = "NAME", required = true, value_enum)]
    pub names: Vec<ModelName>,
    /// Download even if a copy is already on this machine (./weights, hub cache).
    #[arg(long)]
    pub force: bool,
    /// No progress bar and no messages; errors are still printed.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Run a `weights` subcommand against the process environment.
pub fn run(cmd: &WeightsCommand) -> Result<(), WeightsError> {
    let locations = Locations::from_env();
    match cmd {
        WeightsCommand::List => {
            crate::say::stdout_bytes(list(&locations).as_bytes()).map_err(WeightsError::from)
        }
        WeightsCommand::Fetch(args) => {
            let hub = Hub::from_env();
            // every name is tried, whatever happened to the one before it
            let mut errors = Vec::new();
            for &name in &args.names {
                if !args.force {
                    if let Some(found) = locations.find(name) {
                        crate::say::out_line(&format!(
                            "{name}\t{}\t(already here: {})",
                            crate::text::shown(&found.path),
                            found.place
                        ))?;
                        continue;
                    }
                }
                match fetch(name, &locations, &hub, args.quiet, args.force) {
                    Ok(path) => {
                        crate::say::out_line(&format!("{name}\t{}", crate::text::shown(&path)))?
                    }
                    Err(e) => errors.push(e),
                }
            }
            match errors.len() {
                0 => Ok(()),
                1 if args.names.len() == 1 => Err(errors.remove(0)),
                n => {
                    for e in &errors {
                        crate::say!("ddcolor: {e}");
                    }
                    Err(WeightsError::Several {
                        failed: n,
                        tried: args.names.len(),
                    })
                }
            }
        }
    }
}

/// The table `ddcolor weights list` prints.
pub fn list(locations: &Locations) -> String {
    let mut rows = vec![[
        "name".to_owned(),
        "encoder".to_owned(),
        "size".to_owned(),
        "local copy".to_owned(),
    ]];
    for m in ModelName::ALL {
        let name = if m == ModelName::DEFAULT {
            format!("{m} (default)")
        } else {
            m.to_string()
        };
        let local = match locations.find(m) {
            Some(f) => format!("{} ({})", crate::text::shown(&f.path), f.place),
            None => "-".to_owned(),
        };
        rows.push([
            name,
            m.encoder().to_owned(),
            m.approx_size().to_owned(),
            local,
        ]);
    }
    let widths: Vec<usize> = (0..3)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        out.push_str(&format!(
            "{:w0$}  {:w1$}  {:w2$}  {}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        ));
    }
    match locations.data_dir() {
        Some(d) => out.push_str(&format!("downloads go to {}\n", crate::text::shown(d))),
        None => out.push_str("no download folder: set DDCOLOR_WEIGHTS_DIR or HOME\n"),
    }
    out
}
