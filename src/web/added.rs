//! Meters added on the web page: kept in `web-meters.yaml` in the state directory (mode 0600:
//! it holds keys) and merged with the configuration when it is loaded. The user's own
//! configuration file is never rewritten.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::config::schema::{Config, KeySource, MeterAddress, MeterConfig};
use crate::config::ValidateOptions;

pub const FILE: &str = "web-meters.yaml";

/// YAML's double-quoted scalar accepts JSON's string escapes, so any name stays one value.
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// The meter as an entry of the file, checked as the configuration would check it at the next
/// start (a name the page accepted must not stop the gateway later).
pub fn entry(meter: &MeterConfig) -> Result<String, String> {
    let address = match &meter.address {
        MeterAddress::Wireless(id) | MeterAddress::Secondary(id) => quoted(id),
        MeterAddress::Primary(a) => a.to_string(),
    };
    let mut entry = format!(
        "  - name: {}\n    address: {address}\n    driver: {}\n",
        quoted(&meter.name),
        quoted(&meter.driver)
    );
    if let Some(bus) = &meter.bus {
        entry.push_str(&format!("    bus: {}\n", quoted(bus)));
    }
    if let Some(KeySource::Inline(k)) = &meter.key {
        entry.push_str(&format!("    key: {}\n", quoted(k.expose())));
    }
    // Driver names were checked against the running registry (which may hold a drivers_dir).
    crate::config::parse_with(
        &format!("{}meters:\n{entry}", buses_named(meter.bus.iter())),
        "the new meter",
        &ValidateOptions::default(),
    )
    .map_err(|e| {
        e.errors
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(entry)
}

/// A `buses:` section naming `names`, so that wired meters of the file validate on their own
/// (the buses themselves are the configuration file's; only their names matter here).
fn buses_named<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let mut text = String::new();
    for name in names {
        if text.is_empty() {
            text.push_str("buses:\n");
        }
        text.push_str(&format!(
            "  - name: {}\n    tcp: \"127.0.0.1:1\"\n",
            quoted(name)
        ));
    }
    text
}

/// Appends an [`entry`] to the file, creating it (owner-only) when missing.
pub fn append(dir: &Path, entry: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(FILE);
    let mut text = String::new();
    if !path.exists() {
        text.push_str(
            "# Meters added on meterbridge's web page; merged with the configuration file.\nmeters:\n",
        );
    }
    text.push_str(entry);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The meters saved in the file (none when there is no file yet). `buses` are the names of the
/// configuration file's buses, which the file's wired meters refer to.
pub fn load(dir: &Path, buses: &[String]) -> Result<Vec<MeterConfig>, String> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let name = path.display().to_string();
    // As in `merge`: after the file's own lines, so that positions in errors stay true.
    let text = format!("{text}\n{}", buses_named(buses.iter()));
    let (saved, _) = crate::config::parse_with(&text, &name, &ValidateOptions::default())
        .map_err(|e| e.to_string())?;
    Ok(saved.meters)
}

/// Writes `meters` as the whole file (a meter edited or removed on the page): to a temporary
/// file created owner-only, then renamed over the old one, so no half-written file and no
/// readable copy of the keys ever exists.
pub fn save(dir: &Path, meters: &[MeterConfig]) -> Result<PathBuf, String> {
    let mut text = String::from(
        "# Meters added on meterbridge's web page; merged with the configuration file.\nmeters:\n",
    );
    for m in meters {
        text.push_str(&entry(m)?);
    }
    if meters.is_empty() {
        text = text.replace("meters:\n", "meters: []\n");
    }
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.new"));
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.create_new(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: {e}", path.display()));
    }
    Ok(path)
}

/// Adds the meters saved by the page to `config` (those whose name or id the configuration
/// file now uses itself are left out: the file wins). Returns how many were added.
pub fn merge(config: &mut Config, options: &ValidateOptions) -> Result<usize, String> {
    let path = config.state_dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let name = path.display().to_string();
    // The file's wired meters name buses of the configuration file; added after the file's
    // own lines so that positions in error messages stay true.
    let text = format!(
        "{text}\n{}",
        buses_named(config.buses.iter().map(|b| &b.name))
    );
    let (saved, _) = crate::config::parse_with(&text, &name, options).map_err(|e| e.to_string())?;
    let mut added = 0;
    for m in saved.meters {
        let taken = config
            .meters
            .iter()
            .any(|c| c.name == m.name || (c.address == m.address && c.bus == m.bus));
        if !taken {
            config.page_meters.push(m.name.clone());
            config.meters.push(m);
            added += 1;
        }
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(name: &str, address: MeterAddress, bus: Option<&str>) -> MeterConfig {
        MeterConfig {
            bus: bus.map(String::from),
            ..MeterConfig::new(name.into(), address, "auto".into())
        }
    }

    /// A file holding a wired meter (added from a scan) next to a wireless one loads with the
    /// configuration's bus names, so the wireless one can still be changed on the page.
    #[test]
    fn a_file_with_wired_and_wireless_meters_loads() {
        let dir = std::env::temp_dir().join(format!("mb-added-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let wired = meter("Flat 2", MeterAddress::Primary(5), Some("cellar"));
        let wireless = meter("Garden", MeterAddress::Wireless("61070071".into()), None);
        for m in [&wired, &wireless] {
            append(&dir, &entry(m).unwrap()).unwrap();
        }
        let loaded = load(&dir, &["cellar".to_string()]).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].name, "Flat 2");
        assert_eq!(loaded[0].address, MeterAddress::Primary(5));
        assert_eq!(loaded[0].bus.as_deref(), Some("cellar"));
        assert_eq!(loaded[1].address, MeterAddress::Wireless("61070071".into()));
        // Saved and loaded again: the same meters.
        save(&dir, &loaded).unwrap();
        let again = load(&dir, &["cellar".to_string()]).unwrap();
        let summary = |ms: &[MeterConfig]| -> Vec<(String, MeterAddress, Option<String>)> {
            ms.iter()
                .map(|m| (m.name.clone(), m.address.clone(), m.bus.clone()))
                .collect()
        };
        assert_eq!(summary(&again), summary(&loaded));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
