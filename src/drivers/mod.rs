//! Meter drivers: declarative YAML files (`drivers/*.yaml`, embedded at build time, overridable
//! from a user folder) that turn a telegram's records into named readings, the way users know
//! them from wmbusmeters (`total_m3`, `flow_temperature_c`, `status`).

pub mod engine;
pub mod formula;
pub mod hooks;
pub mod model;
mod packed;
pub mod run;

use std::collections::HashMap;
use std::path::Path;

use thiserror::Error;

pub use engine::{Driver, MeterState, Reading, ReadingValue};
pub use model::DriverFile;

mod built_in {
    use super::model::{DriverFile, TestCase};
    use super::packed::{Damaged, Reader};

    /// Where a driver's bytes are in `PACKED`: offset and length.
    #[derive(Debug, Clone, Copy)]
    pub struct Span(pub usize, pub usize);

    impl Span {
        /// Its bytes (none for a span outside `PACKED`, which then reads as `Damaged`).
        pub(super) fn bytes(self) -> &'static [u8] {
            PACKED.get(self.0..self.0 + self.1).unwrap_or_default()
        }
    }

    /// A built-in driver before it is built: what finding it needs and its packed form.
    #[derive(Debug)]
    pub struct BuiltIn {
        pub file: &'static str,
        /// The YAML, for the test that compares it with the packed form; the binary does
        /// not carry it.
        #[cfg(test)]
        pub text: &'static str,
        /// The driver without its test cases (written by build.rs).
        pub(super) packed: Span,
        /// Its test cases, kept apart: decoding never reads them.
        packed_tests: Span,
        /// Whether it declares `plain_security_modes` or `scrambled_security_modes`.
        pub manufacturer_security_modes: bool,
    }

    impl BuiltIn {
        /// The driver as its file reads, without its test cases.
        pub fn model_without_tests(&self) -> Result<DriverFile, Damaged> {
            Reader::whole(self.packed.bytes())
        }

        /// The test cases (telegrams, keys, expected readings): read by the simulators and
        /// `drivers NAME`, never by decoding, so a driver in use does not keep them in memory.
        pub fn tests(&self) -> Result<Vec<TestCase>, Damaged> {
            Reader::whole(self.packed_tests.bytes())
        }

        /// The driver as its file reads, test cases included.
        pub fn model(&self) -> Result<DriverFile, Damaged> {
            Ok(DriverFile {
                tests: self.tests()?,
                ..self.model_without_tests()?
            })
        }
    }

    include!(concat!(env!("OUT_DIR"), "/built_in_drivers.rs"));
}

use std::sync::OnceLock;

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
///
/// A built-in driver is built on its first use and kept: a process that decodes a wired frame
/// builds none, one that names or detects a driver builds that one. build.rs has parsed every
/// built-in file and written its contents in packed form (`packed.rs`), so no YAML is
/// parsed at run time, and finding a driver needs no building (names and detection triples
/// come from its index).
#[derive(Debug)]
pub struct Registry {
    /// One cell per `built_in::BUILT_IN_DRIVERS` entry; boxed, as a `Driver` is 520 bytes and
    /// most cells stay empty.
    built_in: Box<[OnceLock<Option<Box<Driver>>>]>,
    /// For each built-in driver, the user driver (index in `user`) that replaces it.
    replaced: Box<[Option<usize>]>,
    /// Drivers from a user folder, in load order.
    user: Vec<Driver>,
    /// Names and aliases of the user drivers (looked up before the built-in names).
    user_names: HashMap<String, usize>,
}

/// Where a driver of a registry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    BuiltIn(usize),
    User(usize),
}

impl Registry {
    /// The drivers embedded in the binary (none built yet).
    pub fn built_in() -> Registry {
        let n = built_in::BUILT_IN_DRIVERS.len();
        Registry {
            built_in: (0..n).map(|_| OnceLock::new()).collect(),
            replaced: vec![None; n].into_boxed_slice(),
            user: Vec::new(),
            user_names: HashMap::new(),
        }
    }

    /// The built-in registry, one per process.
    pub fn built_in_static() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(Registry::built_in)
    }

    /// Every built-in driver built, with its error if it does not load. build.rs has parsed
    /// each file; this is the rest of the checks (units, formulas, decoders), which
    /// `tests/drivers.rs` runs for every file.
    pub fn check_built_in() -> Vec<(&'static str, Result<Driver, DriverError>)> {
        built_in::BUILT_IN_DRIVERS
            .iter()
            .map(|b| {
                let driver = b.model().map_err(|e| DriverError::Invalid {
                    file: b.file.to_string(),
                    message: e.to_string(),
                });
                (b.file, driver.and_then(|d| Driver::compile(b.file, d)))
            })
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

    /// Adds a user driver: it takes the place of the driver its name already names (built-in
    /// or user), or comes last.
    fn add(&mut self, d: Driver) {
        let names: Vec<String> = std::iter::once(d.file.name.clone())
            .chain(d.file.aliases.iter().cloned())
            .collect();
        let index = match self.slot(&d.file.name) {
            Some(Slot::User(i)) => {
                self.user[i] = d;
                i
            }
            Some(Slot::BuiltIn(b)) => {
                // The built-in driver's names and aliases now lead to this one (see `slot`).
                self.user.push(d);
                self.replaced[b] = Some(self.user.len() - 1);
                self.user.len() - 1
            }
            None => {
                self.user.push(d);
                self.user.len() - 1
            }
        };
        for n in names {
            self.user_names.insert(n, index);
        }
    }

    /// The driver a name or alias names: a user driver's names first, then the built-in
    /// ones (whose replacement, if any, answers for them).
    fn slot(&self, name: &str) -> Option<Slot> {
        if let Some(&i) = self.user_names.get(name) {
            return Some(Slot::User(i));
        }
        let names = built_in::BUILT_IN_NAMES;
        let i = names.binary_search_by(|(n, _)| (*n).cmp(name)).ok()?;
        let b = names[i].1;
        Some(match self.replaced[b] {
            Some(u) => Slot::User(u),
            None => Slot::BuiltIn(b),
        })
    }

    fn driver(&self, slot: Slot) -> Option<&Driver> {
        match slot {
            Slot::User(i) => self.user.get(i),
            Slot::BuiltIn(b) => self.built_in[b]
                .get_or_init(|| {
                    let entry = &built_in::BUILT_IN_DRIVERS[b];
                    // build.rs parsed this file with the same format; what it cannot check
                    // (units, formulas, decoders) `tests/drivers.rs` does for every file, so
                    // this fails only in a build whose tests fail.
                    let model = entry.model_without_tests().ok()?;
                    Driver::compile(entry.file, model)
                        .ok()
                        .map(|d| Box::new(d.with_built_in_tests(entry)))
                })
                .as_deref(),
        }
    }

    /// Every driver in order: the built-in ones (replaced ones by their replacement), then
    /// user drivers that replace none.
    fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        let replacing: Vec<usize> = self.replaced.iter().flatten().copied().collect();
        let built_in = self.replaced.iter().enumerate().map(|(b, r)| match r {
            Some(u) => Slot::User(*u),
            None => Slot::BuiltIn(b),
        });
        let user = (0..self.user.len())
            .filter(move |u| !replacing.contains(u))
            .map(Slot::User);
        built_in.chain(user)
    }

    /// How many built-in drivers this registry has built so far (benchmarks and tests show
    /// what a command costs with it).
    pub fn built_in_loaded(&self) -> usize {
        self.built_in.iter().filter(|c| c.get().is_some()).count()
    }

    /// Every name and alias a driver can be given by, without building any driver.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        built_in::BUILT_IN_NAMES.iter().map(|(n, _)| *n).chain(
            self.user_names.keys().map(String::as_str).filter(|n| {
                built_in::BUILT_IN_NAMES
                    .binary_search_by(|(b, _)| b.cmp(n))
                    .is_err()
            }),
        )
    }

    pub fn get(&self, name: &str) -> Option<&Driver> {
        self.driver(self.slot(name)?)
    }

    /// Every driver, building the built-in ones not built yet.
    pub fn iter(&self) -> impl Iterator<Item = &Driver> {
        self.slots().filter_map(|s| self.driver(s))
    }

    /// The drivers that declare manufacturer-specific security modes (`plain_security_modes`
    /// or `scrambled_security_modes`), building only those: the build-time index says which
    /// built-in ones do, so a run does not build all 121 drivers at start to find the few
    /// (building them all took 1.5 MB of heap for one `decode --driver auto`).
    pub fn with_manufacturer_security_modes(&self) -> impl Iterator<Item = &Driver> {
        self.slots()
            .filter(|s| match s {
                Slot::BuiltIn(b) => built_in::BUILT_IN_DRIVERS[*b].manufacturer_security_modes,
                Slot::User(_) => true,
            })
            .filter_map(|s| self.driver(s))
            .filter(|d| {
                !d.file.plain_security_modes.is_empty()
                    || !d.file.scrambled_security_modes.is_empty()
            })
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
    /// (0-2: how many of version and type it names), most specific first, then by name. Only
    /// the matching drivers are built: built-in entries come from the build-time index, sorted
    /// by manufacturer, so a telegram looks at its manufacturer's few entries, not at every
    /// driver; user drivers (usually few) are looked at one by one.
    pub fn candidates(
        &self,
        manufacturer: &str,
        version: u8,
        device_type: u8,
    ) -> Vec<(u8, &Driver)> {
        let mut slots: Vec<(u8, Slot)> = Vec::new();
        let mut consider = |s: u8, slot: Slot| match slots.iter_mut().find(|(_, x)| *x == slot) {
            Some(found) => found.0 = found.0.max(s),
            None => slots.push((s, slot)),
        };
        let index = built_in::BUILT_IN_DETECT;
        let first = index.partition_point(|(m, ..)| *m < manufacturer);
        for (m, v, t, b) in &index[first..] {
            if *m != manufacturer {
                break;
            }
            if self.replaced[*b].is_none()
                && v.is_none_or(|v| v == version)
                && t.is_none_or(|t| t == device_type)
            {
                consider(specificity(*v, *t), Slot::BuiltIn(*b));
            }
        }
        for (u, d) in self.user.iter().enumerate() {
            if let Some(s) = d
                .detect
                .iter()
                .filter(|m| m.matches(manufacturer, version, device_type))
                .map(Mvt::specificity)
                .max()
            {
                consider(s, Slot::User(u));
            }
        }
        let mut found: Vec<(u8, &Driver)> = slots
            .into_iter()
            .filter_map(|(s, slot)| self.driver(slot).map(|d| (s, d)))
            .collect();
        found.sort_by(|(sa, a), (sb, b)| sb.cmp(sa).then_with(|| a.name().cmp(b.name())));
        found
    }
}

/// How exactly a detection entry names a meter: a given version or type counts one each.
fn specificity(version: Option<u8>, device_type: Option<u8>) -> u8 {
    u8::from(version.is_some()) + u8::from(device_type.is_some())
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
        let (m, version, device_type) = model::parse_detect_entry(s)?;
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
        specificity(self.version, self.device_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_a_driver_builds_that_one_only() {
        let r = Registry::built_in();
        assert_eq!(r.built_in_loaded(), 0);
        let by_alias = r.get("multical21").expect("an alias of kamwater");
        assert_eq!(by_alias.name(), "kamwater");
        assert_eq!(r.built_in_loaded(), 1);
        assert_eq!(r.get("kamwater").map(Driver::name), Some("kamwater"));
        assert!(r.get("no such driver").is_none());
        assert_eq!(r.built_in_loaded(), 1);
        let detected = r.detect("KAM", 0x1b, 0x16).expect("Multical 21");
        assert_eq!(detected.name(), "kamwater");
        assert_eq!(r.built_in_loaded(), 1);
        assert!(r.detect("ZZZ", 1, 2).is_none());
        assert_eq!(r.built_in_loaded(), 1);
        let names: Vec<&str> = r.names().collect();
        assert!(names.contains(&"multical21") && names.contains(&"kamheat"));
        assert_eq!(r.built_in_loaded(), 1);
        assert_eq!(r.iter().count(), built_in::BUILT_IN_DRIVERS.len());
        assert_eq!(r.built_in_loaded(), built_in::BUILT_IN_DRIVERS.len());
    }

    /// A run's start-up builds only the drivers with manufacturer-specific modes, and finds
    /// the same ones as building every driver would.
    #[test]
    fn manufacturer_modes_are_found_without_building_every_driver() {
        let r = Registry::built_in();
        let found: Vec<&str> = r
            .with_manufacturer_security_modes()
            .map(Driver::name)
            .collect();
        for name in ["hydrus", "rfmtx1", "sharky"] {
            assert!(found.contains(&name), "{name} in {found:?}");
        }
        assert_eq!(r.built_in_loaded(), found.len());
        assert!(
            found.len() < built_in::BUILT_IN_DRIVERS.len() / 4,
            "{found:?}"
        );
        let all: Vec<&str> = r
            .iter()
            .filter(|d| {
                !d.file.plain_security_modes.is_empty()
                    || !d.file.scrambled_security_modes.is_empty()
            })
            .map(Driver::name)
            .collect();
        assert_eq!(found, all);
    }

    /// A built driver leaves its test cases in the binary until they are asked for, and then
    /// they are the file's.
    #[test]
    fn built_drivers_read_their_test_cases_on_demand() {
        let registry = Registry::built_in();
        let driver = registry.get("kamwater").expect("built-in");
        assert!(driver.file.tests.is_empty());
        let b = built_in::BUILT_IN_DRIVERS
            .iter()
            .find(|b| b.file == "kamwater.yaml")
            .expect("kamwater.yaml");
        let parsed = Driver::from_yaml(b.file, b.text).expect("parses");
        assert!(parsed.tests().len() >= 2);
        assert_eq!(
            format!("{:?}", driver.tests()),
            format!("{:?}", parsed.file.tests)
        );
    }

    /// The packed form reads back as what parsing the YAML gives, field by field (Debug shows
    /// every field, and floats as the shortest text that reads back the same).
    #[test]
    fn packed_drivers_equal_their_parsed_files() {
        for b in built_in::BUILT_IN_DRIVERS {
            let parsed = Driver::from_yaml(b.file, b.text).expect("parses");
            let packed = b.model().unwrap_or_else(|e| panic!("{}: {e}", b.file));
            assert_eq!(
                format!("{packed:?}"),
                format!("{:?}", parsed.file),
                "{}",
                b.file
            );
        }
    }

    /// A driver's bytes cut short anywhere, or with a byte changed, read as `Damaged` or as
    /// some driver, never as a panic (the reader works on untrusted lengths and tags).
    #[test]
    fn damaged_packed_bytes_never_panic() {
        let b = built_in::BUILT_IN_DRIVERS
            .iter()
            .find(|b| b.file == "kamheat.yaml")
            .expect("kamheat.yaml");
        let bytes = b.packed.bytes();
        assert!(bytes.len() > 100);
        for cut in 0..bytes.len() {
            assert!(packed::Reader::whole::<DriverFile>(&bytes[..cut]).is_err());
        }
        let mut damaged = bytes.to_vec();
        for i in 0..damaged.len() {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let old = damaged[i];
                damaged[i] = v;
                let _ = packed::Reader::whole::<DriverFile>(&damaged);
                damaged[i] = old;
            }
        }
    }

    /// The build-time index says what the parsed files say: every name and alias, every
    /// detection entry, in file order.
    #[test]
    fn the_build_time_index_matches_the_parsed_drivers() {
        let r = Registry::built_in();
        for (b, d) in built_in::BUILT_IN_DRIVERS.iter().zip(r.iter()) {
            for name in std::iter::once(&d.file.name).chain(&d.file.aliases) {
                assert_eq!(r.get(name).map(Driver::name), Some(d.name()), "{}", b.file);
            }
            let parsed: Vec<_> = d
                .detect
                .iter()
                .map(|m| (m.manufacturer.as_str(), m.version, m.device_type))
                .collect();
            let mut indexed: Vec<_> = built_in::BUILT_IN_DETECT
                .iter()
                .filter(|e| built_in::BUILT_IN_DRIVERS[e.3].file == b.file)
                .map(|(m, v, t, _)| (*m, *v, *t))
                .collect();
            let mut parsed = parsed;
            parsed.sort();
            indexed.sort();
            assert_eq!(parsed, indexed, "{}", b.file);
        }
        let mut names: Vec<&str> = r
            .iter()
            .flat_map(|d| {
                std::iter::once(d.name()).chain(d.file.aliases.iter().map(String::as_str))
            })
            .collect();
        names.sort();
        assert_eq!(names, r.names().collect::<Vec<_>>());
    }

    /// Detection from the index picks what detection over the parsed entries picks: the most
    /// exact entry, a tie to the name that sorts first.
    #[test]
    fn detection_from_the_index_agrees_with_the_parsed_entries() {
        let r = Registry::built_in();
        let drivers: Vec<&Driver> = r.iter().collect();
        for d in &drivers {
            for m in &d.detect {
                let v = m.version.unwrap_or(0x42);
                let t = m.device_type.unwrap_or(0x07);
                let expected = drivers
                    .iter()
                    .filter_map(|d| {
                        d.detect
                            .iter()
                            .filter(|m2| m2.matches(&m.manufacturer, v, t))
                            .map(Mvt::specificity)
                            .max()
                            .map(|s| (s, d.name()))
                    })
                    .min_by(|(sa, na), (sb, nb)| sb.cmp(sa).then_with(|| na.cmp(nb)))
                    .map(|(_, n)| n);
                assert_eq!(
                    r.detect(&m.manufacturer, v, t).map(Driver::name),
                    expected,
                    "{} {v:02x} {t:02x}",
                    m.manufacturer
                );
            }
        }
    }

    #[test]
    fn a_user_driver_replaces_a_built_in_one_under_all_its_names() {
        let dir = std::env::temp_dir().join(format!("meterbridge-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("mine.yaml"),
            "name: kamwater\naliases: [mywater]\nmeter_type: water\ndetect: [\"KAM,1b,16\"]\nfields:\n  - name: water_total\n    quantity: volume\n    match: {vif_range: volume}\n",
        )
        .expect("write");
        std::fs::write(
            dir.join("other.yaml"),
            "name: otherwater\nmeter_type: water\ndetect: [\"ZZZ,01,07\"]\n",
        )
        .expect("write");
        let mut r = Registry::built_in();
        assert_eq!(r.load_dir(&dir).expect("loads"), 2);
        let _ = std::fs::remove_dir_all(&dir);
        for name in ["kamwater", "multical21", "mywater"] {
            let d = r.get(name).expect(name);
            assert_eq!(
                d.field_keys().collect::<Vec<_>>(),
                ["water_total_m3"],
                "{name}"
            );
        }
        // Detection: the replacement's entries; the built-in kamwater's other ones are gone.
        let d = r.detect("KAM", 0x1b, 0x16).expect("detected");
        assert_eq!(d.field_keys().collect::<Vec<_>>(), ["water_total_m3"]);
        assert_ne!(
            r.detect("KAM", 0x1b, 0x06).map(Driver::name),
            Some("kamwater")
        );
        assert_eq!(r.detect("ZZZ", 1, 7).map(Driver::name), Some("otherwater"));
        let all: Vec<&str> = r.iter().map(Driver::name).collect();
        assert_eq!(all.len(), built_in::BUILT_IN_DRIVERS.len() + 1);
        assert_eq!(all.last(), Some(&"otherwater"));
        assert_eq!(all.iter().filter(|n| **n == "kamwater").count(), 1);

        // Another driver with an equally exact entry: the tie goes to the name that sorts first
        // (here the replacement `kamwater`), wherever the files come from.
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("later.yaml"),
            "name: laterwater\nmeter_type: water\ndetect: [\"KAM,1b,16\"]\n",
        )
        .expect("write");
        assert_eq!(r.load_dir(&dir).expect("loads"), 1);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            r.detect("KAM", 0x1b, 0x16).map(Driver::name),
            Some("kamwater")
        );
        let names: Vec<&str> = r
            .candidates("KAM", 0x1b, 0x16)
            .into_iter()
            .map(|(_, d)| d.name())
            .collect();
        assert_eq!(names, ["kamwater", "laterwater"]);
        assert_eq!(r.detect("ZZZ", 1, 7).map(Driver::name), Some("otherwater"));
    }
}
