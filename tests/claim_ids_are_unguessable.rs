//! Claim ids are capabilities: each carries 64 random bits, no claim id is ever a message id, and
//! knowing a claim's sequence number (or another claim's id) gives no power over it.

mod common;
use common::*;

fn claim_id(resp: &Resp) -> String {
    resp.header("location").expect("location").rsplit('/').next().unwrap().to_owned()
}

#[test]
fn a_guessed_claim_id_can_neither_read_renew_release_nor_delete() {
    let server = Server::start();
    let mut c = server.client();
    let mut firsts = Vec::new();
    for q in ["ga", "gb"] {
        let ids = c.post_messages(q, &["1", "2"]);
        let r = c.post(&format!("/v2/queues/{q}/claims?limit=1"), "{}");
        assert_eq!(r.status, 201, "{}", r.text());
        let cid = claim_id(&r);
        assert_eq!(cid.len(), 32, "{cid}");
        assert!(cid.bytes().all(|b| b.is_ascii_hexdigit()), "{cid}");
        assert!(!ids.contains(&cid), "the first claim of a queue has the id of a message");
        // The message's href names the claim by the same id.
        let href = r.json()["messages"][0]["href"].as_str().unwrap().to_owned();
        assert!(href.ends_with(&format!("?claim_id={cid}")), "{href}");
        firsts.push((q, ids, cid));
    }
    let (q, ids, cid) = &firsts[0];
    // Both first claims have sequence 1; their secrets differ.
    assert_eq!(cid[..16], firsts[1].2[..16]);
    assert_ne!(cid[16..], firsts[1].2[16..], "two claims share a secret");
    let mut guesses = vec![firsts[1].2.clone(), format!("{}{}", &cid[..16], "0".repeat(16))];
    guesses.push(format!("{}{:016x}", &cid[..16], u64::from_str_radix(&cid[16..], 16).unwrap() ^ 1));
    for guess in &guesses {
        assert_eq!(c.get(&format!("/v2/queues/{q}/claims/{guess}")).status, 404, "{guess}");
        assert_eq!(c.patch(&format!("/v2/queues/{q}/claims/{guess}"), r#"{"ttl": 100}"#).status, 404);
        assert_eq!(c.delete(&format!("/v2/queues/{q}/claims/{guess}")).status, 204, "release is idempotent");
        let del = c.delete(&format!("/v2/queues/{q}/messages/{}?claim_id={guess}", ids[0]));
        assert_eq!(del.status, 400, "a guessed claim is an unknown claim: {}", del.text());
    }
    // The real claim is untouched by all that, and works.
    let view = c.get(&format!("/v2/queues/{q}/claims/{cid}"));
    assert_eq!(view.status, 200, "{}", view.text());
    assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{}?claim_id={cid}", ids[0])).status, 204);
    assert_eq!(c.get(&format!("/v2/queues/{q}/stats")).json()["messages"]["total"], 1);
}
