//! Every durability mode serves and restarts as docs/storage.md says: `sync`, `interval` and
//! `none` keep acknowledged messages across a process kill (the page cache survives it) and a
//! clean stop; `memory` keeps nothing and writes nothing to the data directory.

mod common;
use common::*;

#[test]
fn each_mode_keeps_what_it_promises_across_restarts() {
    for mode in ["sync", "interval", "none"] {
        let dir = tempfile::tempdir().unwrap();
        let args = ["--durability", mode, "--flush-interval-ms", "5"];
        let server = Server::start_in(dir.path(), &args);
        let ids = server.client().post_messages("modes", &["1", "2"]);
        server.kill();
        let mut server = Server::start_in(dir.path(), &args);
        let mut c = server.client();
        assert_eq!(c.all_messages("modes").len(), 2, "{mode} after a kill");
        c.post_messages("modes", &["3"]);
        assert_eq!(server.terminate().code(), Some(0));
        let server = Server::start_in(dir.path(), &args);
        let got: Vec<String> =
            server.client().all_messages("modes").iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(got.len(), 3, "{mode} after a clean stop");
        assert_eq!(got[..2], ids[..], "{mode}");
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &["--durability", "memory"]);
    server.client().post_messages("modes", &["1"]);
    server.kill();
    let server = Server::start_in(dir.path(), &["--durability", "memory"]);
    assert!(server.client().all_messages("modes").is_empty());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "memory mode wrote to the data directory");
}
