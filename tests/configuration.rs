//! The configuration model and start-up checks as an operator meets them: `--print-config`,
//! refused keys and ranges, `marconi check`, and `serve` stopping on a fatal check.

use std::process::{Command, Output};

fn marconi(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_marconi"));
    cmd.args(args);
    // The tests must not inherit an operator's MARCONI_* settings.
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("MARCONI_")) {
        cmd.env_remove(key);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run marconi")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
fn print_config_shows_each_layer_and_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("marconi.toml");
    std::fs::write(&file, "shards = 3\n[api]\nmax_wait_s = 5\n[http]\nmax_headers = 40\n").unwrap();
    let out = marconi(
        &["serve", "--config", file.to_str().unwrap(), "--print-config", "--set", "http.max_headers=50"],
        &[("MARCONI_API_MAX_WAIT_S", "7"), ("MARCONI_SIGNED_URL_SECRET_KEY", "hunter2"), ("MARCONI_API_MAX_WAIT", "1")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = |key: &str| stdout.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key}: {stdout}"));
    assert!(line("shards = 3").contains("file "), "{stdout}");
    assert!(line("max_wait_s = 7").contains("env MARCONI_API_MAX_WAIT_S"), "{stdout}");
    assert!(line("max_headers = 50").contains("flag --set http.max_headers"), "{stdout}");
    assert!(line("max_body_bytes = ").contains("default"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "secrets must not be printed");
    assert!(stdout.contains("# ignored: environment variable MARCONI_API_MAX_WAIT names no knob"), "{stdout}");
    // The output is itself a configuration file that loads.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &stdout).unwrap();
    let out = marconi(&["serve", "--config", again.to_str().unwrap(), "--print-config"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn unknown_keys_and_out_of_range_values_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[api]\nmax_message_ttl = 60\n").unwrap();
    let out = marconi(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("`api.max_message_ttl`") && err.contains("api.max_message_ttl_s"), "{err}");

    let out = marconi(&["serve", "--print-config"], &[("MARCONI_API_MAX_MESSAGE_TTL_S", "10")]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("api.max_message_ttl_s") && err.contains("60..=31536000"), "{err}");
    assert!(err.contains("MARCONI_API_MAX_MESSAGE_TTL_S"), "{err}");

    let out = marconi(&["check", "--set", "http.max_connections_per_shard=0"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("1..=1048576"), "{}", text(&out.stderr));
}

#[test]
fn check_reports_every_check_and_fails_on_missing_cpus() {
    let dir = tempfile::tempdir().unwrap();
    let out = marconi(&["check", "--listen", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap()], &[]);
    let stdout = text(&out.stdout);
    for check in ["io_uring", "cpus", "memlock", "nofile", "data_dir", "executor", "listen"] {
        assert!(stdout.lines().any(|l| l.contains(check)), "no {check} line: {stdout}");
    }
    // 0 when all is well, 3 when only warnings (e.g. a small open-file limit on this machine).
    assert!(matches!(out.status.code(), Some(0 | 3)), "{stdout}");

    let out = marconi(&["check", "--cpus", "1000"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("FAIL") && stdout.contains("CPU 1000") && stdout.contains("Fix:"), "{stdout}");
}

#[test]
fn serve_stops_with_the_message_when_a_fatal_check_fails() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let out = marconi(&["serve", "--listen", "127.0.0.1:0", "--data-dir", not_a_dir.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "must not report listening");
    let err = text(&out.stderr);
    assert!(err.contains("not a directory") && err.contains("install -d"), "{err}");
}

#[test]
fn tuning_profiles_load_and_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tuning/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = marconi(&["serve", "--config", path.to_str().unwrap(), "--print-config"], &[]);
            assert!(out.status.success(), "{}: {}", path.display(), text(&out.stderr));
            seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    seen.sort();
    assert_eq!(seen, ["default.toml", "durable.toml", "low-memory.toml", "throughput.toml"]);
}

#[test]
fn the_systemd_unit_grants_the_limits_the_checks_ask_for() {
    let unit =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/marconi.service"))
            .expect("scripts/marconi.service");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
            .trim()
            .to_owned()
    };
    assert_eq!(value("LimitMEMLOCK"), "infinity");
    let nofile: u64 = value("LimitNOFILE").parse().expect("a number");
    let default_cap = marconi::config::Config::default().http.max_connections_per_shard as u64;
    assert!(nofile >= marconi::preflight::fds_needed(32, default_cap), "LimitNOFILE too low for 32 shards");
}
