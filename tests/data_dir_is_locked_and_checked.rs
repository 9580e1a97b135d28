//! One server per data directory, and only with the shard count and format it was written with.

mod common;
use common::*;

#[test]
fn a_second_server_and_a_wrong_shard_count_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Server::start_in(dir.path(), &[]);
    first.client().post_messages("locked", &["1"]);
    let err = start_fails(dir.path(), &[]);
    assert!(err.contains("in use by another marconi process"), "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    assert_eq!(first.terminate().code(), Some(0));

    let err = start_fails(dir.path(), &["--shards", "3"]);
    assert!(err.contains("holds 2 shard(s)") && err.contains("--shards 2"), "{err}");

    let meta = dir.path().join("marconi.meta");
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(&meta, text.replace("\"format\":2", "\"format\":99")).unwrap();
    let err = start_fails(dir.path(), &[]);
    assert!(err.contains("format 99"), "{err}");
    std::fs::write(&meta, text).unwrap();

    let server = Server::start_in(dir.path(), &[]);
    assert_eq!(server.client().all_messages("locked").len(), 1);
}
