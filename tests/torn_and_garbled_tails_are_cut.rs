//! A write the machine did not finish leaves a torn or garbled tail at the end of the newest
//! segment. Start-up cuts it off (zeroes it) and goes on: every complete record stays, the server
//! starts, and new writes land where the tail was.

mod common;
use common::*;

fn tail_case(name: &str, kill: bool, tail: impl Fn(&[u8]) -> Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &["--shards", "1"]);
    let mut c = server.client();
    let ids = c.post_messages("tails", &["\"one\"", "\"two\"", "\"three\""]);
    if kill {
        server.kill();
    } else {
        assert_eq!(server.terminate().code(), Some(0));
    }
    let (path, records) = active_segment(dir.path(), 0);
    let last = *records.last().unwrap();
    let end = last.offset + last.len;
    let whole_last = read_at(&path, last.offset, last.len);
    let garbage = tail(&whole_last);
    write_at(&path, end, &garbage);

    let server = Server::start_in(dir.path(), &["--shards", "1"]);
    let mut c = server.client();
    let got: Vec<String> = c.all_messages("tails").iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(got, ids, "{name}");
    assert!(read_at(&path, end, garbage.len()).iter().all(|&b| b == 0), "{name}: the tail was not cut");
    let more = c.post_messages("tails", &["\"four\""]);
    server.kill();
    let server = Server::start_in(dir.path(), &["--shards", "1"]);
    let mut c = server.client();
    assert_eq!(c.all_messages("tails").len(), 4, "{name}");
    assert_eq!(c.all_messages("tails")[3]["id"], serde_json::json!(more[0]), "{name}");
}

#[test]
fn a_record_cut_short_is_cut_off() {
    // The first part of a record (length, checksum, half the payload), as a torn write leaves it.
    tail_case("torn after kill", true, |rec| rec[..rec.len() / 2].to_vec());
    tail_case("torn after clean stop", false, |rec| rec[..20].to_vec());
}

#[test]
fn garbage_after_the_last_record_is_cut_off() {
    tail_case("garbage", true, |_| (0..300u32).map(|i| (i * 7 + 13) as u8).collect());
    // A whole record with one flipped bit: a plausible length, a wrong checksum.
    tail_case("bad checksum", true, |rec| {
        let mut r = rec.to_vec();
        let i = r.len() - 9;
        r[i] ^= 0x10;
        r
    });
}
