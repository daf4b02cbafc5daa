#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    waggle::cli::run(waggle::cli::Cli::parse()).await
}
