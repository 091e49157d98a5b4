//! `--engine linux`: the experiment on Linux (docs/DESIGN.md "Commands").

use crate::Stop;
use crate::cli::Args;

pub fn run(_args: &Args) -> Result<u8, Stop> {
    Err(Stop::Failed("--engine linux: not built yet".into()))
}
