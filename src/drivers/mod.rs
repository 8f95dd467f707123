//! Meter drivers: declarative YAML files (`drivers/*.yaml`, embedded at build time, overridable
//! from a user folder) that turn a telegram's records into named readings, the way users know
//! them from wmbusmeters (`total_m3`, `flow_temperature_c`, `status`).

pub mod engine;
pub mod formula;
pub mod hooks;
pub mod model;
pub mod run;

use std::collections::HashMap;
use std::path::Path;

use thiserror::Error;

pub use engine::{Driver, MeterState, Reading, ReadingValue};
pub use model::DriverFile;

mod built_in {
    include!(concat!(env!("OUT_DIR"), "/built_in_drivers.rs"));
}

#[derive(Debug, Error)]
pub enum DriverError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{dir}: {source}")]
    Io { dir: String, source: std::io::Error },
}

/// All drivers known to a run: the built-in ones, then a user folder's (same name replaces).
#[derive(Debug, Default)]
pub struct Registry {
    drivers: Vec<Driver>,
    by_name: HashMap<String, usize>,
}

impl Registry {
    /// The drivers embedded in the binary. A broken built-in file is a build defect; it is
    /// reported by `tests/drivers.rs`, and skipped here so one file cannot take all down.
    pub fn built_in() -> Registry {
        let mut r = Registry::default();
        for (file, text) in built_in::BUILT_IN_DRIVERS {
            if let Ok(d) = Driver::from_yaml(file, text) {
                r.add(d);
            }
        }
        r
    }

    /// The built-in registry, loaded once per process.
    pub fn built_in_static() -> &'static Registry {
        static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
        REGISTRY.get_or_init(Registry::built_in)
    }

    /// Every built-in file parsed, with its error if it does not load.
    pub fn check_built_in() -> Vec<(&'static str, Result<Driver, DriverError>)> {
        built_in::BUILT_IN_DRIVERS
            .iter()
            .map(|(file, text)| (*file, Driver::from_yaml(file, text)))
            .collect()
    }

    /// Loads `*.yaml` from a folder; a file whose driver name exists replaces that driver.
    pub fn load_dir(&mut self, dir: &Path) -> Result<usize, DriverError> {
        let io = |source| DriverError::Io {
            dir: dir.display().to_string(),
            source,
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        paths.sort();
        let mut n = 0;
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(io)?;
            let d = Driver::from_yaml(&p.display().to_string(), &text)?;
            self.add(d);
            n += 1;
        }
        Ok(n)
    }

    fn add(&mut self, d: Driver) {
        let names: Vec<String> = std::iter::once(d.file.name.clone())
            .chain(d.file.aliases.iter().cloned())
            .collect();
        let index = match self.by_name.get(&d.file.name) {
            Some(&i) => {
                self.drivers[i] = d;
                i
            }
            None => {
                self.drivers.push(d);
                self.drivers.len() - 1
            }
        };
        for n in names {
            self.by_name.insert(n, index);
        }
    }

    pub fn get(&self, name: &str) -> Option<&Driver> {
        self.by_name.get(name).map(|&i| &self.drivers[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Driver> {
        self.drivers.iter()
    }

    /// The driver whose detection matches manufacturer, version and device type, from the
    /// triple alone: exact version and type beat wildcards, and among equals the driver whose
    /// name sorts first wins (the older driver of a pair like `qwater`/`qwaterv2`). A run that
    /// has the telegram chooses by its contents instead (`DriverRun`, docs/drivers.md).
    pub fn detect(&self, manufacturer: &str, version: u8, device_type: u8) -> Option<&Driver> {
        self.candidates(manufacturer, version, device_type)
            .into_iter()
            .next()
            .map(|(_, d)| d)
    }

    /// Every driver whose detection matches, with the specificity of its best matching entry
    /// (0-2: how many of version and type it names), most specific first, then by name.
    pub fn candidates(
        &self,
        manufacturer: &str,
        version: u8,
        device_type: u8,
    ) -> Vec<(u8, &Driver)> {
        let mut found: Vec<(u8, &Driver)> = self
            .drivers
            .iter()
            .filter_map(|d| {
                d.detect
                    .iter()
                    .filter(|m| m.matches(manufacturer, version, device_type))
                    .map(|m| m.specificity())
                    .max()
                    .map(|s| (s, d))
            })
            .collect();
        found.sort_by(|(sa, a), (sb, b)| sb.cmp(sa).then_with(|| a.name().cmp(b.name())));
        found
    }
}

/// One `MFCT,version,type` detection entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mvt {
    pub manufacturer: String,
    pub version: Option<u8>,
    pub device_type: Option<u8>,
}

impl Mvt {
    pub fn parse(s: &str) -> Option<Mvt> {
        let mut parts = s.split(',').map(str::trim);
        let m = parts.next()?.to_ascii_uppercase();
        let hex = |p: Option<&str>| -> Option<Option<u8>> {
            match p? {
                "*" => Some(None),
                v => u8::from_str_radix(v.trim_start_matches("0x"), 16)
                    .ok()
                    .map(Some),
            }
        };
        let version = hex(parts.next())?;
        let device_type = hex(parts.next())?;
        if parts.next().is_some() || m.len() != 3 {
            return None;
        }
        Some(Mvt {
            manufacturer: m,
            version,
            device_type,
        })
    }

    fn matches(&self, manufacturer: &str, version: u8, device_type: u8) -> bool {
        self.manufacturer == manufacturer
            && self.version.is_none_or(|v| v == version)
            && self.device_type.is_none_or(|t| t == device_type)
    }

    fn specificity(&self) -> u8 {
        u8::from(self.version.is_some()) + u8::from(self.device_type.is_some())
    }
}
