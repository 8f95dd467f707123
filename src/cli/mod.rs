//! The command line: one file per subcommand; parsing arguments and printing only.

/// Writes to standard output like `print!`, but a closed pipe (`meterbridge drivers | head -1`)
/// ends the process quietly with status 0, as `cat` ends; any other write error ends it with a
/// one-line message and status 1. (Rust ignores SIGPIPE, so `print!` would panic instead.)
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}

/// [`out!`] with a newline.
macro_rules! outln {
    () => {
        $crate::cli::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

// After the macros: the subcommands use them by their textual scope.
pub mod addon;
pub mod bus;
pub mod daemon;
pub mod decode;
pub mod drivers;
pub mod listen;
pub mod simulate;

use clap::{Parser, Subcommand};

/// What [`out!`] and [`outln!`] do; see there.
pub fn write_stdout(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        exit_on_stdout_error(&e);
    }
}

/// Ends the process after standard output failed: quietly for a closed pipe (the reader has
/// what it wanted), with a message otherwise (a full disk must not look like success).
pub fn exit_on_stdout_error(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(1);
}

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
    /// How the long-running commands (run, demo, listen, simulate) write their
    /// log on standard error: `text`, or `json` (one object per line, for log shippers).
    /// Overrides the configuration's `log_format`; `RUST_LOG` sets levels and modules.
    #[arg(long, global = true, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: poll wired buses, listen to receivers, publish readings.
    Run(daemon::RunArgs),
    /// The whole gateway on simulated hardware: a wired bus with 3 meters and a wireless stick
    /// with 3 more, printing readings (and publishing them with --mqtt URL).
    Demo(daemon::DemoArgs),
    /// Check a configuration file and report every problem in it at once.
    CheckConfig(daemon::CheckConfigArgs),
    /// Exit 0 if the gateway using a state directory is alive (for container health checks).
    Health(daemon::HealthArgs),
    /// Decode M-Bus telegrams given as hex (arguments, or one per line on standard input).
    Decode(decode::DecodeArgs),
    /// Find the meters on a wired bus: `scan primary` (addresses 0-250) or `scan secondary`.
    Scan(bus::ScanArgs),
    /// Read a wired meter (all its telegrams) and print them like `decode`.
    Read(bus::ReadArgs),
    /// Give a wired meter a new primary address.
    SetAddress(bus::SetAddressArgs),
    /// Switch a wired meter to another baud rate (checked at the new speed).
    SetBaud(bus::SetBaudArgs),
    /// Send an application reset to a wired meter.
    Reset(bus::ResetArgs),
    /// Print every wireless telegram a receiver hears (how to find your meters).
    Listen(listen::ListenArgs),
    /// List the meter drivers, or show one.
    Drivers(drivers::DriversArgs),
    /// Simulate a wired bus or a wireless stick for testing without hardware.
    Simulate(simulate::SimulateArgs),
    /// Home Assistant add-on: write the configuration from the add-on's options and the
    /// Supervisor's MQTT service (used by the add-on's start script).
    AddonConfig(addon::AddonConfigArgs),
}

/// Runs the command line and returns the process exit status.
pub fn run() -> i32 {
    let cli = Cli::parse();
    let log_format = cli
        .log_format
        .as_deref()
        .and_then(crate::logging::LogFormat::parse);
    // Logging is set up only by the commands that log (never by decode, drivers or --version,
    // which must start in a few milliseconds).
    let start_logging = || crate::logging::init(None, log_format.unwrap_or_default());
    match cli.command {
        Command::Run(args) => daemon::run(&args, log_format),
        Command::Demo(args) => {
            start_logging();
            daemon::demo(&args)
        }
        Command::CheckConfig(args) => daemon::check_config(&args),
        Command::Health(args) => daemon::health(&args),
        Command::Decode(args) => decode::run(&args),
        Command::Scan(a) => bus::run(&bus::BusCommand::Scan(a)),
        Command::Read(a) => bus::run(&bus::BusCommand::Read(a)),
        Command::SetAddress(a) => bus::run(&bus::BusCommand::SetAddress(a)),
        Command::SetBaud(a) => bus::run(&bus::BusCommand::SetBaud(a)),
        Command::Reset(a) => bus::run(&bus::BusCommand::Reset(a)),
        Command::Listen(args) => {
            start_logging();
            listen::run(&args)
        }
        Command::Drivers(args) => drivers::run(&args),
        Command::Simulate(args) => {
            start_logging();
            simulate::run(&args)
        }
        Command::AddonConfig(args) => addon::run(&args),
    }
}
