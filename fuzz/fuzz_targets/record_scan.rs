//! Fuzzes what recovery reads from disk: the record decoder on arbitrary bytes, the scan over a
//! segment's record area, and a round trip of whatever decodes (re-encoding a decoded record must
//! give the same bytes back, so compaction's byte-for-byte copies mean what they meant).
#![no_main]

use libfuzzer_sys::fuzz_target;
use marconi::storage::codec;
use marconi::storage::recovery::scan_records;

fuzz_target!(|data: &[u8]| {
    let scan = scan_records(data);
    assert!(scan.end <= data.len());
    let mut seqs = Vec::new();
    let mut off = 0;
    while off < scan.end {
        let Ok(Some(d)) = codec::decode(&data[off..], &mut seqs, true) else {
            panic!("scan accepted bytes the decoder refuses at {off}");
        };
        let body = d.body.clone().map(|r| &data[off + r.start..off + r.end]).unwrap_or(&[]);
        let len = codec::check_encodable(&d.record, body.len()).expect("decoded records are encodable");
        let mut again = vec![0u8; codec::padded(len)];
        codec::encode_into(&mut again, &d.record, body);
        assert_eq!(&again[..], &data[off..off + d.padded_len]);
        off += d.padded_len;
    }
});
