//! The records of a write-ahead-log segment: `[len: u32 LE][crc32(payload): u32 LE]
//! [payload]`, written and read without I/O (`wal.rs` holds the files). Reading stops at
//! the first record whose length or checksum does not match: a torn tail from a crash.
//! Fuzzed on arbitrary bytes (`pipeline/fuzz`, target `wal_frame`).

const FRAME_LEN: usize = 8;
/// Refuse absurd lengths from a corrupt frame instead of allocating them.
const MAX_RECORD: usize = 1 << 30;

/// Appends the frame of `payload` to `out`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The intact records of a segment's body, and whether a torn or corrupt tail followed.
pub fn unframe(mut body: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut records = Vec::new();
    while !body.is_empty() {
        if body.len() < FRAME_LEN {
            return (records, true);
        }
        let len = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
        let crc = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
        if len > MAX_RECORD || body.len() < FRAME_LEN + len {
            return (records, true);
        }
        let payload = &body[FRAME_LEN..FRAME_LEN + len];
        if crc32fast::hash(payload) != crc {
            return (records, true);
        }
        records.push(payload);
        body = &body[FRAME_LEN + len..];
    }
    (records, false)
}
