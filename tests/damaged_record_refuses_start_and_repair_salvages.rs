//! Damage in what had reached the disk is not a torn tail: start-up stops and says which file
//! and offset, touching nothing. `--repair` then keeps every record that passes its checksum,
//! moves the damaged file aside, and the server starts (and keeps starting without the flag).

mod common;
use common::*;

#[test]
fn damage_stops_start_up_with_its_place_and_repair_salvages_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &["--shards", "1"]);
    let mut c = server.client();
    let bodies: Vec<String> = (0..10).map(|i| format!("{{\"n\": {i}}}")).collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let ids = c.post_messages("dmg", &refs);
    assert_eq!(server.terminate().code(), Some(0));

    // Flip a byte inside the fourth message's record: below the part known to be on disk.
    let (path, records) = active_segment(dir.path(), 0);
    let victim = records.iter().filter(|r| r.message).nth(3).copied().unwrap();
    let mut byte = read_at(&path, victim.offset + victim.len - 10, 1);
    byte[0] ^= 0x01;
    write_at(&path, victim.offset + victim.len - 10, &byte);
    let before = std::fs::read(&path).unwrap();

    let err = start_fails(dir.path(), &["--shards", "1"]);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains(&format!("offset {}", victim.offset)), "{err}");
    assert!(err.contains("--repair"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "a refused start changed the file");

    let server = Server::start_in(dir.path(), &["--shards", "1", "--repair"]);
    let mut c = server.client();
    let got: Vec<String> = c.all_messages("dmg").iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    let mut want = ids.clone();
    want.remove(3);
    assert_eq!(got, want);
    let damaged: Vec<_> = std::fs::read_dir(dir.path().join("shard-000"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".damaged"))
        .collect();
    assert_eq!(damaged.len(), 1);
    let after_repair = c.post_messages("dmg", &["\"later\""]);
    server.kill();

    let server = Server::start_in(dir.path(), &["--shards", "1"]);
    let mut c = server.client();
    let got = c.all_messages("dmg");
    assert_eq!(got.len(), 10);
    assert_eq!(got[9]["id"], serde_json::json!(after_repair[0]));
}
