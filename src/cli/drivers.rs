//! `meterbridge drivers [show NAME]`: what the built-in (and later user) drivers know.

use clap::{Args, Subcommand};

use crate::drivers::Registry;

#[derive(Debug, Args)]
pub struct DriversArgs {
    #[command(subcommand)]
    pub command: Option<DriversCommand>,
    /// A folder of driver files loaded after the built-in ones.
    #[arg(long, value_name = "DIR", global = true)]
    pub drivers_dir: Option<std::path::PathBuf>,
}

/// The built-in drivers, plus a user folder's when given. The registry lives as long as the
/// command (a process), so it is leaked rather than threaded through every call.
pub fn registry(dir: Option<&std::path::Path>) -> Result<&'static Registry, String> {
    match dir {
        None => Ok(Registry::built_in_static()),
        Some(dir) => {
            let mut r = Registry::built_in();
            r.load_dir(dir).map_err(|e| e.to_string())?;
            Ok(Box::leak(Box::new(r)))
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DriversCommand {
    /// One driver: detection, fields with units and Home Assistant classes.
    Show {
        /// Driver name or alias.
        name: String,
    },
    /// The Rust decoders for manufacturer payloads, with the values each makes.
    Decoders,
}

pub fn run(args: &DriversArgs) -> i32 {
    let registry = match registry(args.drivers_dir.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    match &args.command {
        None => {
            outln!(
                "{:<16} {:<12} {:<40} detection",
                "driver",
                "type",
                "aliases"
            );
            let mut drivers: Vec<_> = registry.iter().collect();
            drivers.sort_by(|a, b| a.name().cmp(b.name()));
            for d in drivers {
                outln!(
                    "{:<16} {:<12} {:<40} {}",
                    d.name(),
                    d.file.meter_type,
                    d.file.aliases.join(","),
                    d.file.detect.join(" ")
                );
            }
            0
        }
        Some(DriversCommand::Decoders) => {
            for h in crate::drivers::hooks::all() {
                outln!("{:<18} {}", h.name, h.values.join(", "));
            }
            0
        }
        Some(DriversCommand::Show { name }) => {
            let Some(d) = registry.get(name) else {
                eprintln!("error: no driver named {name:?} (`meterbridge drivers` lists them)");
                return 2;
            };
            outln!("driver:     {}", d.name());
            if !d.file.aliases.is_empty() {
                outln!("aliases:    {}", d.file.aliases.join(", "));
            }
            outln!("meter type: {}", d.file.meter_type);
            if let Some(info) = &d.file.info {
                outln!("info:       {info}");
            }
            outln!("detection:  {}", d.file.detect.join(" "));
            outln!("tests:      {}", d.tests().len());
            outln!("fields:");
            for (f, key) in d.file.fields.iter().zip(d.field_keys()) {
                if f.has("hide") {
                    continue;
                }
                let ha =
                    f.ha.as_ref()
                        .map(|h| format!("{}/{}", h.device_class, h.state_class))
                        .unwrap_or_else(|| "-".into());
                outln!(
                    "  {:<40} {:<24} {}",
                    key,
                    ha,
                    f.info.as_deref().unwrap_or("")
                );
            }
            0
        }
    }
}
