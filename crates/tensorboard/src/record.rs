//! TFRecord framing: `u64 len (LE)`, `masked_crc32c(len bytes)` (u32 LE),
//! payload, `masked_crc32c(payload)` (u32 LE).

/// The constant TensorFlow adds after rotating a CRC ("kMaskDelta").
const MASK_DELTA: u32 = 0xa282_ead8;

/// Size of the header (length + its CRC) that precedes every payload.
pub(crate) const HEADER_LEN: usize = 12;
/// Size of the footer (payload CRC) that follows every payload.
pub(crate) const FOOTER_LEN: usize = 4;

/// CRC-32C (Castagnoli) of `data`.
pub(crate) fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// TensorFlow's masked CRC-32C: `rotate_right(crc, 15) + 0xa282ead8`.
pub(crate) fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Frames `payload` as one TFRecord.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + FOOTER_LEN);
    let len = (payload.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc32c(payload).to_le_bytes());
    out
}

/// Why a byte stream could not be split into records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The stream ends inside the record starting at `offset`.
    Truncated { offset: usize },
    /// The length CRC of the record at `offset` does not match.
    LengthCrc { offset: usize },
    /// The payload CRC of the record at `offset` does not match.
    PayloadCrc { offset: usize },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated { offset } => {
                write!(f, "truncated record at byte offset {offset}")
            }
            FrameError::LengthCrc { offset } => {
                write!(f, "length CRC mismatch in record at byte offset {offset}")
            }
            FrameError::PayloadCrc { offset } => {
                write!(f, "payload CRC mismatch in record at byte offset {offset}")
            }
        }
    }
}

/// Splits `data` into record payloads, verifying both CRCs of every record.
pub(crate) fn unframe(data: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let offset = pos;
        let rest = &data[pos..];
        if rest.len() < HEADER_LEN {
            return Err(FrameError::Truncated { offset });
        }
        let (len_bytes, rest) = rest.split_at(8);
        let (len_crc, rest) = rest.split_at(4);
        let mut len_arr = [0u8; 8];
        len_arr.copy_from_slice(len_bytes);
        let mut crc_arr = [0u8; 4];
        crc_arr.copy_from_slice(len_crc);
        if masked_crc32c(len_bytes) != u32::from_le_bytes(crc_arr) {
            return Err(FrameError::LengthCrc { offset });
        }
        let len = u64::from_le_bytes(len_arr);
        // Compare in u64 so a huge length can never overflow or allocate.
        if (rest.len() as u64) < len.saturating_add(FOOTER_LEN as u64) {
            return Err(FrameError::Truncated { offset });
        }
        let len = len as usize; // fits: it is <= rest.len()
        let (payload, rest) = rest.split_at(len);
        crc_arr.copy_from_slice(&rest[..FOOTER_LEN]);
        if masked_crc32c(payload) != u32::from_le_bytes(crc_arr) {
            return Err(FrameError::PayloadCrc { offset });
        }
        out.push(payload.to_vec());
        pos += HEADER_LEN + len + FOOTER_LEN;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vectors() {
        // The standard CRC-32C check value (RFC 3720 / "123456789").
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        // RFC 3720 B.4: 32 bytes of 0xFF.
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn masked_crc_matches_tensorboard() {
        // Golden from tensorboard 2.21's
        // `tensorflow_stub.pywrap_tensorflow.masked_crc32c(b"123456789")`.
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
        // By hand: 0xE3069283 >> 15 = 0x0001C60D, 0xE3069283 << 17 = 0x25060000
        // (mod 2^32), so rotr(.., 15) = 0x2507C60D; 0x2507C60D + 0xA282EAD8
        // = 0xC78AB0E5 (mod 2^32).
        // Deliberately not `rotate_right`, which the code under test uses.
        #[allow(clippy::manual_rotate)]
        let rot = (0xE306_9283u32 >> 15) | (0xE306_9283u32 << 17);
        assert_eq!(rot, 0x2507_C60D);
        assert_eq!(rot.wrapping_add(0xa282_ead8), 0xC78A_B0E5);
    }

    #[test]
    fn frame_matches_tensorboard_record_writer() {
        // Golden from tensorboard 2.21's
        // `tensorboard.summary.writer.record_writer.RecordWriter.write(b"hello")`.
        let golden: [u8; 21] = [
            0x05, 0, 0, 0, 0, 0, 0, 0, // len = 5, u64 LE
            0xea, 0xb2, 0x04, 0x3e, // masked crc of the 8 length bytes
            b'h', b'e', b'l', b'l', b'o', // payload
            0xbb, 0x1f, 0x1c, 0x19, // masked crc of the payload
        ];
        assert_eq!(frame(b"hello"), golden);
    }

    #[test]
    fn frame_round_trip() {
        let payloads: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"hello".to_vec(),
            (0..=255u8).cycle().take(70_000).collect(),
        ];
        let mut data = Vec::new();
        for p in &payloads {
            data.extend(frame(p));
        }
        assert_eq!(unframe(&data).unwrap(), payloads);
        assert_eq!(unframe(&[]).unwrap(), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn unframe_detects_truncation_and_corruption() {
        let mut data = frame(b"first");
        let second_at = data.len();
        data.extend(frame(b"second record"));
        // Every proper prefix that cuts the second record is truncated.
        for cut in second_at + 1..data.len() {
            assert_eq!(
                unframe(&data[..cut]),
                Err(FrameError::Truncated { offset: second_at }),
                "cut at {cut}"
            );
        }
        // Flip one bit in each byte in turn: always detected.
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0x10;
            let err = unframe(&bad).unwrap_err();
            let offset = if i < second_at { 0 } else { second_at };
            match err {
                FrameError::LengthCrc { offset: o }
                | FrameError::PayloadCrc { offset: o }
                | FrameError::Truncated { offset: o } => assert_eq!(o, offset, "byte {i}"),
            }
        }
        // A huge length with a valid CRC must not allocate or panic.
        let len = u64::MAX.to_le_bytes();
        let mut huge = len.to_vec();
        huge.extend(masked_crc32c(&len).to_le_bytes());
        assert_eq!(unframe(&huge), Err(FrameError::Truncated { offset: 0 }));
    }
}
