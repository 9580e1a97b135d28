//! The configuration model and start-up checks as an operator meets them: `--print-config`,
//! refused keys and ranges, `marconi check`, and `serve` stopping on a fatal check.

use std::process::{Command, Output};

/// `marconi ARGS`, without the operator's MARCONI_* settings: the tests must not inherit them.
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_marconi"));
    cmd.args(args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("MARCONI_")) {
        cmd.env_remove(key);
    }
    cmd
}

fn marconi(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args).envs(env.iter().copied()).output().expect("run marconi")
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

/// Starts `marconi serve` with `args` and reports how it went: `Ok(())` once it listens (then it is
/// stopped), or `Err((exit code, stderr))` when it exits first.
fn start(dir: &std::path::Path, args: &[&str]) -> Result<(), (Option<i32>, String)> {
    use std::io::BufRead as _;
    let mut cmd = command(&["serve", "--listen", "127.0.0.1:0", "--shards", "1", "--log", "warn", "--data-dir"]);
    cmd.arg(dir).args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start marconi");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read stdout");
    if line.starts_with("marconi listening") {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(());
    }
    let out = child.wait_with_output().expect("wait for marconi");
    Err((out.status.code(), text(&out.stderr)))
}

/// Every integer knob at either end of its range in the one table either works or is refused by
/// the configuration's validation (exit 2, naming the knob), so the table's ranges are the ones
/// the server really accepts: nothing refuses a value later, at start-up or in the store.
#[test]
fn every_knob_at_its_bounds_loads_or_is_refused_by_name() {
    use marconi::settings::{Kind, KNOBS};
    for knob in KNOBS {
        let Kind::Int { min, max } = knob.kind else { continue };
        for value in [min, max] {
            let set = format!("{}={value}", knob.key);
            let out = marconi(&["serve", "--print-config", "--set", &set], &[]);
            let err = text(&out.stderr);
            match out.status.code() {
                Some(0) => {}
                Some(2) => assert!(err.contains(&format!("`{}`", knob.key)), "{set}: refused without naming it: {err}"),
                other => panic!("{set}: exit {other:?}: {err}"),
            }
        }
    }
    // The store's own limits are the table's: its largest segment starts a durable server.
    let Kind::Int { max, .. } = marconi::settings::knob("storage.segment_size_bytes").unwrap().kind else {
        panic!("storage.segment_size_bytes is an integer knob")
    };
    let dir = tempfile::tempdir().unwrap();
    match start(dir.path(), &["--durability", "none", "--segment-size-bytes", &max.to_string()]) {
        Ok(()) => {}
        Err((Some(2), err)) if err.contains("`storage.segment_size_bytes`") => {}
        Err((code, err)) => panic!("segment_size_bytes = {max} (the table's maximum): exit {code:?}: {err}"),
    }
}

#[test]
fn serve_help_shows_each_flags_default_from_the_table() {
    let out = marconi(&["serve", "--help"], &[]);
    let help = text(&out.stdout);
    for key in ["storage.segment_size_bytes", "storage.flush_interval_ms", "listen", "shards"] {
        let k = marconi::settings::knob(key).unwrap();
        assert!(help.contains(&format!("[default: {}]", k.default_text())), "{key}: {help}");
        assert!(help.contains(&k.env()), "{key}: {help}");
    }
}

#[test]
fn settings_without_effect_are_noted() {
    let out = marconi(&["serve", "--print-config", "--durability", "sync", "--flush-interval-ms", "5"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("# note: `storage.flush_interval_ms` = 5 (flag --flush-interval-ms)"), "{stdout}");
}
