//! `meterbridge simulate bus`: a virtual wired M-Bus segment to point a master at.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::{Args, Subcommand};

use crate::sim::{self, BusSim, ServeOptions};
use crate::wire::wired::BAUD_RATES;

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(subcommand)]
    pub command: SimulateCommand,
}

#[derive(Debug, Subcommand)]
pub enum SimulateCommand {
    /// Serve simulated wired meters over TCP and/or a pseudo-terminal until Ctrl-C.
    Bus(BusArgs),
}

#[derive(Debug, Args)]
pub struct BusArgs {
    /// YAML file describing the meters.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "corpus",
        required_unless_present = "corpus"
    )]
    pub config: Option<PathBuf>,
    /// A folder of *.hex frames: one meter per file, at primary addresses 1, 2, ….
    #[arg(long, value_name = "DIR")]
    pub corpus: Option<PathBuf>,
    /// TCP address to listen on (the default when --pty is not given: 127.0.0.1:0).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Also (or only) serve on a pseudo-terminal; its device path is printed.
    #[arg(long)]
    pub pty: bool,
    /// The converter echoes every request before the answer.
    #[arg(long)]
    pub echo: bool,
    /// Line rate the master uses; meters without their own rate follow it.
    #[arg(long, value_name = "B")]
    pub baud: Option<u32>,
}

pub fn run(args: &SimulateArgs) -> i32 {
    match &args.command {
        SimulateCommand::Bus(bus) => run_bus(bus),
    }
}

fn build(args: &BusArgs) -> Result<BusSim, String> {
    if let Some(b) = args.baud {
        if !BAUD_RATES.contains(&b) {
            return Err(format!("--baud {b} is not an M-Bus rate ({BAUD_RATES:?})"));
        }
    }
    let sim = match (&args.config, &args.corpus) {
        (Some(path), _) => {
            let mut config = sim::load_config(path).map_err(|e| e.to_string())?;
            if let Some(b) = args.baud {
                config.baud = b;
            }
            config.build().map_err(|e| e.to_string())?
        }
        (None, Some(dir)) => {
            let sim = BusSim::from_corpus_dir(dir).map_err(|e| e.to_string())?;
            match args.baud {
                Some(b) => sim.with_baud(b),
                None => sim,
            }
        }
        (None, None) => return Err("give --config FILE or --corpus DIR".into()),
    };
    let echo = sim.echo || args.echo;
    Ok(sim.with_echo(echo))
}

fn run_bus(args: &BusArgs) -> i32 {
    let sim = match build(args) {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(serve(args, sim)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn serve(args: &BusArgs, sim: BusSim) -> Result<(), String> {
    let opts = ServeOptions {
        baud: sim.baud,
        log: true,
    };
    eprintln!(
        "{} meter(s) at {} baud{}",
        sim.meters().len(),
        opts.baud,
        if sim.echo { ", echoing requests" } else { "" }
    );
    for m in sim.meters() {
        eprintln!(
            "  primary {:3}  secondary {}  {} baud, {} telegram(s)",
            m.primary,
            m.secondary,
            m.baud,
            m.telegram_count()
        );
    }
    let sim = Arc::new(Mutex::new(sim));
    let mut tasks = tokio::task::JoinSet::new();

    let listen = match (&args.listen, args.pty) {
        (Some(addr), _) => Some(addr.clone()),
        (None, false) => Some("127.0.0.1:0".to_owned()),
        (None, true) => None,
    };
    if let Some(addr) = listen {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening on tcp {local}");
        tasks.spawn(sim::serve_tcp(listener, Arc::clone(&sim), opts));
    }
    if args.pty {
        let pty = sim::open_pty().map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
        println!("serving on pty {}", pty.path());
        tasks.spawn(pty.serve(Arc::clone(&sim), opts));
    }

    tokio::select! {
        signal = tokio::signal::ctrl_c() => {
            signal.map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
            eprintln!("stopped");
            Ok(())
        }
        Some(ended) = tasks.join_next() => match ended {
            Ok(Ok(())) => Err("a server stopped".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("a server task failed: {e}")),
        }
    }
}
