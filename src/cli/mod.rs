//! The command line: one file per subcommand; parsing arguments and printing only.

pub mod decode;
pub mod drivers;
pub mod simulate;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "meterbridge",
    version,
    about = "Read wired and wireless M-Bus meters, decode them and publish readings",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode M-Bus telegrams given as hex (arguments, or one per line on standard input).
    Decode(decode::DecodeArgs),
    /// List the meter drivers, or show one.
    Drivers(drivers::DriversArgs),
    /// Simulate meters for testing masters without hardware.
    Simulate(simulate::SimulateArgs),
}

/// Runs the command line and returns the process exit status.
pub fn run() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode(args) => decode::run(&args),
        Command::Drivers(args) => drivers::run(&args),
        Command::Simulate(args) => simulate::run(&args),
    }
}
