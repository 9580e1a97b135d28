//! Fuzzes what recovery reads from disk: the recovery scan over a segment's record area, the
//! record decoder behind it, and a round trip of whatever decodes (re-encoding a decoded record
//! must give the same bytes back, so compaction's byte-for-byte copies mean what they meant).
//!
//! Random bytes almost never carry a valid CRC32C, so when the first byte is odd the input is
//! taken as one record whose length and checksum are fixed up first: that lets the fuzzer reach
//! the payload decoder of every kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marconi::storage::codec;
use marconi::storage::recovery::scan_records;

fn fixed_up(data: &[u8]) -> Vec<u8> {
    let mut rec = data.to_vec();
    rec.resize(rec.len().max(codec::RECORD_HEADER_BYTES), 0);
    let len = rec.len() as u32;
    rec[0..4].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[0..4]), &rec[8..]);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
    rec.resize(codec::padded(rec.len()), 0);
    rec
}

fuzz_target!(|data: &[u8]| {
    let owned;
    let data = match data.split_first() {
        Some((first, rest)) if first & 1 == 1 => {
            owned = fixed_up(rest);
            &owned[..]
        }
        _ => data,
    };
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
