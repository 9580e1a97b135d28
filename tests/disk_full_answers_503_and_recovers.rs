//! A full disk: the next segment cannot be preallocated, so writes answer 503 with Retry-After,
//! nothing written before is harmed, and once space returns the server works again by itself.
//!
//! Needs root to mount a small tmpfs; elsewhere it says so and passes.

mod common;
use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_small_tmpfs(at: &std::path::Path) -> Option<Mount> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"]).arg(at).status().ok()?.success();
    ok.then(|| Mount(at.to_owned()))
}

/// Fills the filesystem with a file until it refuses more.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![1u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn a_full_disk_answers_503_and_the_server_recovers_when_space_returns() {
    let mnt = tempfile::tempdir().unwrap();
    let Some(_mount) = mount_small_tmpfs(mnt.path()) else {
        println!("skipped: needs root and tmpfs to make a small filesystem");
        return;
    };
    let data = mnt.path().join("data");
    let args = ["--shards", "1", "--segment-size-bytes", "1048576"];
    let server = Server::start_in(&data, &args);
    let mut c = server.client();
    let filler = mnt.path().join("filler");
    fill(&filler);

    let body = format!(r#"{{"messages": [{{"ttl": 3600, "body": "{}"}}]}}"#, "f".repeat(60_000));
    let mut acked = Vec::new();
    let mut refused = None;
    for _ in 0..200 {
        let r = c.post("/v2/queues/full/messages", &body);
        match r.status {
            201 => acked.push(id_of(&r.json()["resources"][0])),
            503 => {
                refused = Some(r);
                break;
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    let refused = refused.expect("the disk never filled");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.text().contains("disk is full"), "{}", refused.text());
    // Reads still work, and what was acknowledged is all there.
    assert_eq!(c.all_messages("full").len(), acked.len());

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.post("/v2/queues/full/messages", &body);
        if r.status == 201 {
            acked.push(id_of(&r.json()["resources"][0]));
            break;
        }
        assert!(Instant::now() < deadline, "still refused after space returned: {}", r.text());
        std::thread::sleep(Duration::from_millis(200));
    }
    server.kill();
    let server = Server::start_in(&data, &args);
    let ids: Vec<String> =
        server.client().all_messages("full").iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, acked);
}
