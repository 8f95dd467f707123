//! `meterbridge demo` — the README's first command — and `check-config` as users run them.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meterbridge"))
}

#[test]
fn demo_prints_readings_of_all_six_meters() {
    let out = bin()
        .args(["demo", "--duration", "6", "--format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let find = |name: &str| {
        docs.iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no reading for {name}: {stdout}\n{stderr}"))
    };
    assert_eq!(find("Heat flat 1")["total_energy_consumption_kwh"], 34510.0);
    assert_eq!(find("Heat flat 2")["meter"], "ultraheat");
    assert_eq!(find("Heat flat 3")["meter"], "sensostar");
    assert_eq!(find("Cold water")["total_m3"], 6.408);
    assert_eq!(find("Garden water")["total_m3"], 7.704);
    // The encrypted one: decrypted with the configured key.
    assert_eq!(find("Hot water")["total_m3"], 466.472);
    assert!(stderr.contains("0 key errors"), "{stderr}");
}

#[test]
fn check_config_accepts_the_example_and_reports_every_mistake() {
    // The example names a key file and an environment variable of the machine it is for;
    // `check-config` checks both, as `run` needs them. Here they are provided.
    let dir = std::env::temp_dir().join(format!("meterbridge-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("hot-water.key");
    std::fs::write(&key, "A004EB23329A477F1DD2D7820B56EB3D\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
            .unwrap()
            .replace("/etc/meterbridge/hot-water.key", &key.display().to_string());
    let copy = dir.join("example.yaml");
    std::fs::write(&copy, example).unwrap();
    let out = bin()
        .arg("check-config")
        .arg(&copy)
        .env("MQTT_PASSWORD", "not-checked-here")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "meters:\n  - name: Water\n    adress: \"12345678\"\n    driver: multicl21\nmqtt:\n  url: http://broker\n",
    )
    .unwrap();
    let out = bin().args(["check-config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:3:5"), "{err}");
    assert!(err.contains("address"), "did-you-mean for adress: {err}");
    assert!(
        err.contains("multical21"),
        "did-you-mean for the driver: {err}"
    );
    assert!(err.contains("mqtt.url"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
