//! The echo test app as a standalone binary (see `mesh_e2e::echo`).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "mesh-echo",
    about = "Test app: answers with who it is and what it received"
)]
struct Cli {
    #[command(flatten)]
    args: mesh_e2e::echo::Args,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    mesh_e2e::echo::main_with(Cli::parse().args)
}
