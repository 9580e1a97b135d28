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

fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Whether this run rewrites generated documentation instead of comparing it.
fn updating_docs() -> bool {
    std::env::var_os("UPDATE_KNOB_DOCS").is_some()
}

/// Compares `generated` with what `file` holds between the lines `begin` and `end` (or, with
/// `end` = None, from `begin` to the end of the file); rewrites that part with UPDATE_KNOB_DOCS.
fn check_generated(file: &str, begin: &str, end: Option<&str>, generated: &str) {
    let path = repo_file(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let start = text.find(begin).unwrap_or_else(|| panic!("{file} has no line `{begin}`")) + begin.len();
    let stop = match end {
        Some(end) => start + text[start..].find(end).unwrap_or_else(|| panic!("{file} has no line `{end}`")),
        None => text.len(),
    };
    if &text[start..stop] == generated {
        return;
    }
    if updating_docs() {
        std::fs::write(&path, format!("{}{generated}{}", &text[..start], &text[stop..])).unwrap();
        return;
    }
    let line = text[start..stop].lines().zip(generated.lines()).position(|(a, b)| a != b);
    panic!(
        "{file} is out of step with the knob table (src/settings.rs) near generated line {}:\n  file: {:?}\n  want: {:?}\n\
         Regenerate it with `UPDATE_KNOB_DOCS=1 cargo test --test configuration` and commit the result.",
        line.map_or("(end)".into(), |l| (l + 1).to_string()),
        line.and_then(|l| text[start..stop].lines().nth(l)),
        line.and_then(|l| generated.lines().nth(l)),
    );
}

#[test]
fn tuning_readme_knob_reference_is_generated_from_the_table() {
    check_generated(
        "tuning/README.md",
        "<!-- knob reference: generated from KNOBS in src/settings.rs, do not edit -->\n",
        Some("<!-- end of knob reference -->"),
        &format!("\n{}\n", marconi::settings::markdown_reference()),
    );
}

#[test]
fn default_profile_is_generated_from_the_table() {
    // The profile's own opening comment ends with this line; the knobs follow.
    check_generated(
        "tuning/default.toml",
        "# Generated from KNOBS in src/settings.rs: every knob at its default, with its line.\n",
        None,
        &marconi::settings::default_profile(),
    );
}

/// docs/api.md's limits table: each row that names knobs (in its `knob` column) states their
/// defaults as the table renders them, and every API and HTTP limit has a row.
#[test]
fn api_limits_table_states_the_knob_tables_defaults() {
    use marconi::settings::{knob, Kind, KNOBS};
    let doc = std::fs::read_to_string(repo_file("docs/api.md")).unwrap();
    let section = doc.split("\n## Limits\n").nth(1).expect("docs/api.md has a Limits section");
    let section = section.split("\n## ").next().unwrap();
    let mut named = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| limit ")) {
        let cells: Vec<&str> = row.split(" | ").map(|c| c.trim_matches(|c| c == '|' || c == ' ')).collect();
        let [_, knobs, default, _] = cells[..] else { panic!("docs/api.md limits row without 4 cells: {row}") };
        let keys: Vec<&str> = knobs.split('`').skip(1).step_by(2).collect();
        if knobs.starts_with('—') {
            // A rule of the protocol, with no number to keep in step.
            continue;
        }
        if knobs == "fixed" {
            let fixed = [
                ("queue name", marconi::config::MAX_QUEUE_NAME_BYTES),
                ("project id", marconi::config::MAX_PROJECT_ID_BYTES),
                ("limits body", marconi::api::limits::MAX_LIMITS_BODY_BYTES),
            ];
            let (_, bytes) = fixed.iter().find(|(what, _)| row.contains(what)).expect("a fixed limit of config.rs");
            assert_eq!(default, format!("{bytes} bytes"), "docs/api.md: {row}");
            continue;
        }
        let want: Vec<String> = keys
            .iter()
            .map(|key| {
                knob(key).unwrap_or_else(|| panic!("docs/api.md names `{key}`, which is no knob")).default_text()
            })
            .collect();
        assert_eq!(default, want.join(" / "), "docs/api.md row for {keys:?} must state the defaults of KNOBS");
        named.extend(keys);
    }
    for k in KNOBS.iter().filter(|k| matches!(k.kind, Kind::Int { .. })) {
        if k.key.starts_with("http.") || k.key.starts_with("api.max_") || k.key.starts_with("limits.") {
            assert!(named.contains(&k.key), "docs/api.md's limits table has no row for `{}`", k.key);
        }
    }
}

/// docs/openapi.yaml describes the server at its defaults: its bounds are the knobs'.
#[test]
fn openapi_bounds_are_the_default_limits() {
    let text = std::fs::read_to_string(repo_file("docs/openapi.yaml")).unwrap();
    let spec: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let api = marconi::config::ApiLimits::default();
    let param = |path: &str, method: &str, name: &str| -> serde_json::Value {
        let op = &spec["paths"][path][method];
        let params = op["parameters"].as_array().unwrap_or_else(|| panic!("{method} {path} has no parameters"));
        params.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{method} {path} has no {name}"))["schema"]
            .clone()
    };
    let posted = &spec["paths"]["/v2/queues/{queue_name}/messages"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"]["properties"]["messages"]["items"]["properties"];
    let claim = &spec["components"]["schemas"]["ClaimParams"]["properties"];
    let u = |n: usize| serde_json::Value::from(n as u64);
    let checks = [
        ("GET /v2/queues limit", param("/v2/queues", "get", "limit")["maximum"].clone(), u(api.max_queues_per_page)),
        (
            "GET messages limit",
            param("/v2/queues/{queue_name}/messages", "get", "limit")["maximum"].clone(),
            u(api.max_messages_per_page),
        ),
        (
            "DELETE messages pop",
            param("/v2/queues/{queue_name}/messages", "delete", "pop")["maximum"].clone(),
            u(api.max_messages_per_claim_or_pop),
        ),
        (
            "POST claims limit",
            param("/v2/queues/{queue_name}/claims", "post", "limit")["maximum"].clone(),
            u(api.max_messages_per_claim_or_pop),
        ),
        ("message ttl maximum", posted["ttl"]["maximum"].clone(), api.max_message_ttl_s.into()),
        ("message ttl minimum", posted["ttl"]["minimum"].clone(), marconi::config::MIN_MESSAGE_TTL_S.into()),
        ("message delay maximum", posted["delay"]["maximum"].clone(), api.max_message_delay_s.into()),
        ("claim ttl maximum", claim["ttl"]["maximum"].clone(), api.max_claim_ttl_s.into()),
        ("claim ttl default", claim["ttl"]["default"].clone(), api.default_claim_ttl_s.into()),
        ("claim grace maximum", claim["grace"]["maximum"].clone(), api.max_claim_grace_s.into()),
        ("claim grace default", claim["grace"]["default"].clone(), api.default_claim_grace_s.into()),
    ];
    for (what, documented, knob) in checks {
        assert_eq!(documented, knob, "docs/openapi.yaml: {what} differs from the default configuration");
    }
    let wait = format!("at most {}", api.max_wait_s);
    assert!(text.matches(&wait).count() >= 2, "docs/openapi.yaml: long polls wait {wait} by default");
}

/// Every TOML example in the documentation is a configuration that loads.
#[test]
fn toml_examples_in_the_docs_load() {
    let dir = tempfile::tempdir().unwrap();
    for doc in ["README.md", "docs/storage.md", "tuning/README.md", "docs/perf.md", "docs/api.md"] {
        let markdown = std::fs::read_to_string(repo_file(doc)).unwrap();
        for (i, block) in markdown.split("```toml\n").skip(1).enumerate() {
            let block = block.split("```").next().unwrap();
            let file = dir.path().join("example.toml");
            std::fs::write(&file, block).unwrap();
            let out = marconi(&["serve", "--config", file.to_str().unwrap(), "--print-config"], &[]);
            assert!(out.status.success(), "{doc}, TOML example {}: {}", i + 1, text(&out.stderr));
        }
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
