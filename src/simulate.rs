//! `pulsegate simulate`: a demo monitor publishing realistic events.
//! (Filled in below.)

use crate::cli::SimulateArgs;

pub async fn run(_args: SimulateArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
