//! Home Assistant spellings of the units our JSON keys end in, and which units Home Assistant
//! accepts for each sensor device class (it rejects an entity whose unit does not fit).

/// The Home Assistant unit for a key's unit suffix (`total_m3` → `m³`). `None` for suffixes
/// that are not units (`counter`, `hca`, `nr`) and for unknown ones.
pub fn ha_unit(suffix: &str) -> Option<&'static str> {
    Some(match suffix {
        "m3" => "m³",
        "l" => "L",
        "wh" => "Wh",
        "kwh" => "kWh",
        "mwh" => "MWh",
        "gwh" => "GWh",
        "mj" => "MJ",
        "gj" => "GJ",
        "w" => "W",
        "kw" => "kW",
        "mw" => "MW",
        "m3h" => "m³/h",
        "lh" => "L/h",
        "c" => "°C",
        "k" => "K",
        "f" => "°F",
        "bar" => "bar",
        "s" => "s",
        "min" => "min",
        "h" => "h",
        "d" => "d",
        // Home Assistant's UnitOfTime spellings for months and years.
        "month" => "m",
        "y" => "y",
        "v" => "V",
        "a" => "A",
        "hz" => "Hz",
        "rh" | "pct" => "%",
        "ppm" => "ppm",
        "kg" => "kg",
        "t" => "t",
        "kvah" => "kVAh",
        "kvarh" => "kvarh",
        "kva" => "kVA",
        "kvar" => "kvar",
        "deg" => "°",
        // Kamstrup's volume × temperature registers (m³·°C); a plain unit without a class.
        "m3c" => "m³·°C",
        "dbm" => "dBm",
        _ => return None,
    })
}

/// Units Home Assistant accepts for a sensor device class; `None` for classes this table does
/// not know (callers then drop the class rather than risk a rejected entity). An empty slice
/// means the class takes no unit.
pub fn units_for_class(device_class: &str) -> Option<&'static [&'static str]> {
    Some(match device_class {
        "water" => &["L", "m³", "ft³", "CCF", "MCF", "gal"],
        "gas" => &["L", "m³", "ft³", "CCF", "MCF"],
        "volume" => &["L", "mL", "m³", "ft³", "CCF", "MCF", "gal", "fl. oz."],
        "energy" => &[
            "Wh", "kWh", "MWh", "GWh", "TWh", "J", "kJ", "MJ", "GJ", "cal", "kcal", "Mcal", "Gcal",
        ],
        "power" => &["mW", "W", "kW", "MW", "GW", "TW", "BTU/h"],
        "apparent_power" => &["VA", "kVA"],
        "reactive_power" => &["var", "kvar"],
        "reactive_energy" => &["varh", "kvarh"],
        "volume_flow_rate" => &[
            "m³/h", "m³/min", "m³/s", "ft³/min", "L/h", "L/min", "L/s", "gal/min", "mL/s",
        ],
        "temperature" => &["°C", "°F", "K"],
        "temperature_delta" => &["°C", "°F", "K"],
        "duration" => &["d", "h", "min", "s", "ms", "μs"],
        "voltage" => &["V", "mV", "μV", "kV", "MV"],
        "current" => &["A", "mA"],
        "frequency" => &["Hz", "kHz", "MHz", "GHz"],
        "pressure" => &[
            "Pa", "kPa", "hPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi", "mmH₂O",
        ],
        "humidity" | "battery" | "moisture" => &["%"],
        "power_factor" => &["%", ""],
        "carbon_dioxide" => &["ppm"],
        "signal_strength" => &["dB", "dBm"],
        "weight" => &["kg", "g", "mg", "µg", "oz", "lb", "st"],
        "date" | "timestamp" | "enum" => &[],
        _ => return None,
    })
}

/// Whether Home Assistant accepts `unit` for `device_class` (`None`: no unit).
pub fn unit_fits(device_class: &str, unit: Option<&str>) -> bool {
    let Some(allowed) = units_for_class(device_class) else {
        return false;
    };
    match unit {
        Some(u) => allowed.contains(&u),
        None => allowed.is_empty() || allowed.contains(&""),
    }
}

/// Classes whose state is a running total: Home Assistant warns about `measurement` on them.
pub fn is_total_class(device_class: &str) -> bool {
    matches!(device_class, "water" | "gas" | "volume" | "energy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_units_fit_their_classes() {
        assert!(unit_fits("water", ha_unit("m3")));
        assert!(unit_fits("water", ha_unit("l")));
        assert!(unit_fits("energy", ha_unit("gj")));
        assert!(unit_fits("volume_flow_rate", ha_unit("m3h")));
        assert!(unit_fits("temperature", ha_unit("c")));
        assert!(!unit_fits("energy", ha_unit("kvarh")));
        assert!(!unit_fits("water", ha_unit("kwh")));
        assert!(!unit_fits("duration", ha_unit("y")));
        assert!(unit_fits("timestamp", None));
        assert!(!unit_fits("water", None));
        assert!(!unit_fits("no_such_class", Some("m³")));
        assert_eq!(ha_unit("counter"), None);
    }
}
