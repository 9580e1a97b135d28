//! Runs the curl examples of docs/api.md and the README's tour against a fresh server, so the
//! documentation cannot drift from the server.
//!
//! In docs/api.md, a ```sh block whose first line is `# setup: …` is run before every example;
//! a block whose first line is `# example: METHOD PATH → HTTP/1.1 CODE …` is an example: its last
//! status line must carry CODE. Every endpoint of the Endpoints table needs an example.

mod common;

use std::process::Command;

use common::Server;

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect(path)
}

/// The contents of every ```sh block, in order.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

fn run_sh(script: &str, server: &Server) -> (bool, String, String) {
    let script = script.replace("localhost:8888", &server.addr.to_string());
    let out = Command::new("sh").arg("-c").arg(&script).output().expect("run sh (and curl)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `GET /v2/queues/{q}/claims/{id} (note)` → ("GET", "/v2/queues/{}/claims/{}").
fn endpoint(text: &str) -> (String, String) {
    let text = text.split(" (").next().unwrap_or(text).trim();
    let (method, path) = text.split_once(' ').unwrap_or(("", text));
    let path = path.split(['?', '[', '…']).next().unwrap_or(path).trim_end_matches('/');
    let mut normal = String::new();
    let mut inside = false;
    for ch in path.chars() {
        match ch {
            '{' => {
                inside = true;
                normal.push('{');
            }
            '}' => {
                inside = false;
                normal.push('}');
            }
            _ if inside => {}
            _ => normal.push(ch),
        }
    }
    (method.to_owned(), if normal.is_empty() { "/".to_owned() } else { normal })
}

#[test]
fn api_md_examples_answer_as_shown_and_cover_every_endpoint() {
    let api_md = read("docs/api.md");
    let blocks = sh_blocks(&api_md);
    let setup: String = blocks.iter().filter(|b| b.starts_with("# setup:")).cloned().collect();
    assert!(!setup.is_empty(), "docs/api.md has no `# setup:` block");
    let server = Server::start();
    let mut covered = Vec::new();
    let mut failures = Vec::new();
    for block in blocks.iter().filter(|b| b.starts_with("# example:")) {
        let header = block.lines().next().unwrap_or("").trim_start_matches("# example:").trim();
        let (what, expected) = header.split_once('→').unwrap_or_else(|| panic!("no `→ STATUS` in {header:?}"));
        let expected_code = expected.split_whitespace().nth(1).unwrap_or_else(|| panic!("no code in {header:?}"));
        covered.push(endpoint(what));
        let (_, stdout, stderr) = run_sh(&format!("{setup}{block}"), &server);
        let status = stdout.lines().map(|l| l.trim_end_matches('\r')).rfind(|l| l.starts_with("HTTP/"));
        match status {
            Some(line) if line.split_whitespace().nth(1) == Some(expected_code) => {}
            other => failures.push(format!("{header}: got {other:?}\nstdout: {stdout}\nstderr: {stderr}")),
        }
    }
    assert!(failures.is_empty(), "docs/api.md examples disagree with the server:\n{}", failures.join("\n"));

    let table = api_md.split("## Endpoints").nth(1).expect("an Endpoints section").split("\n## ").next().unwrap();
    let mut missing = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = row.split(" | ").next().unwrap_or("");
        for token in first_cell.split('`').skip(1).step_by(2) {
            let (methods, path) = endpoint(token);
            // Rows without a method (the out-of-scope families) need no example of their own.
            for method in methods.split('/').filter(|m| !m.is_empty()) {
                if !covered.contains(&(method.to_owned(), path.clone())) {
                    missing.push(format!("{method} {path}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "endpoints of docs/api.md without an example: {missing:?}");
    assert!(covered.len() >= 25, "only {} examples", covered.len());
}

#[test]
fn readme_tour_runs_without_errors() {
    let readme = read("README.md");
    let tour = readme.split("## A 60-second tour").nth(1).expect("a tour section");
    let block = sh_blocks(tour).into_iter().next().expect("a sh block in the tour");
    let server = Server::start();
    let (ok, stdout, stderr) = run_sh(&block, &server);
    assert!(ok, "the tour failed: {stderr}\n{stdout}");
    assert!(!stdout.contains("\"code\""), "the tour got an error answer:\n{stdout}");
    assert!(stdout.contains("HTTP/1.1 201"), "the tour's first step should create the queue:\n{stdout}");
}
