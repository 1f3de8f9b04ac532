//! Hand-written protobuf encoding (and a minimal decoder) for the few
//! TensorBoard messages this crate uses:
//!
//! ```text
//! Event          { double wall_time = 1; int64 step = 2;
//!                  oneof what { string file_version = 3; Summary summary = 5; } }
//! Summary        { repeated Value value = 1; }
//! Summary.Value  { string tag = 1;
//!                  oneof value { float simple_value = 2; Image image = 4;
//!                                HistogramProto histo = 5; } }
//! Summary.Image  { int32 height = 1; int32 width = 2; int32 colorspace = 3;
//!                  bytes encoded_image_string = 4; }
//! HistogramProto { double min = 1; double max = 2; double num = 3; double sum = 4;
//!                  double sum_squares = 5; repeated double bucket_limit = 6 [packed];
//!                  repeated double bucket = 7 [packed]; }
//! ```
//!
//! Fields inside a `oneof` are always written, even when they hold the
//! default value (a `simple_value` of `0.0` must still mark the value as a
//! scalar).

/// Protobuf wire types.
const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

/// Appends `v` as a base-128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_key(out, field, WIRE_VARINT);
    put_varint(out, v);
}

fn put_double(out: &mut Vec<u8>, field: u32, v: f64) {
    put_key(out, field, WIRE_FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_float(out: &mut Vec<u8>, field: u32, v: f32) {
    put_key(out, field, WIRE_FIXED32);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_packed_doubles(out: &mut Vec<u8>, field: u32, vs: &[f64]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, (vs.len() * 8) as u64);
    for v in vs {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// An encoded `Summary.Image`.
pub(crate) struct ImageProto<'a> {
    pub height: u32,
    pub width: u32,
    pub colorspace: u32,
    pub png: &'a [u8],
}

/// A `HistogramProto`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistoProto {
    pub min: f64,
    pub max: f64,
    pub num: f64,
    pub sum: f64,
    pub sum_squares: f64,
    pub bucket_limit: Vec<f64>,
    pub bucket: Vec<f64>,
}

/// The payload of one `Summary.Value`.
pub(crate) enum ValueKind<'a> {
    Simple(f32),
    Image(ImageProto<'a>),
    Histo(&'a HistoProto),
}

/// Encodes an `Event` that carries `file_version`.
pub(crate) fn encode_file_version_event(wall_time: f64, version: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    put_double(&mut out, 1, wall_time);
    put_bytes(&mut out, 3, version.as_bytes());
    out
}

/// Encodes an `Event` whose summary holds a single value.
pub(crate) fn encode_summary_event(
    wall_time: f64,
    step: u64,
    tag: &str,
    value: &ValueKind<'_>,
) -> Vec<u8> {
    let mut v = Vec::new();
    put_bytes(&mut v, 1, tag.as_bytes());
    match value {
        ValueKind::Simple(x) => put_float(&mut v, 2, *x),
        ValueKind::Image(img) => {
            let mut m = Vec::with_capacity(img.png.len() + 24);
            put_varint_field(&mut m, 1, u64::from(img.height));
            put_varint_field(&mut m, 2, u64::from(img.width));
            put_varint_field(&mut m, 3, u64::from(img.colorspace));
            put_bytes(&mut m, 4, img.png);
            put_bytes(&mut v, 4, &m);
        }
        ValueKind::Histo(h) => {
            let mut m = Vec::with_capacity(64 + 8 * (h.bucket.len() + h.bucket_limit.len()));
            put_double(&mut m, 1, h.min);
            put_double(&mut m, 2, h.max);
            put_double(&mut m, 3, h.num);
            put_double(&mut m, 4, h.sum);
            put_double(&mut m, 5, h.sum_squares);
            put_packed_doubles(&mut m, 6, &h.bucket_limit);
            put_packed_doubles(&mut m, 7, &h.bucket);
            put_bytes(&mut v, 5, &m);
        }
    }
    let mut summary = Vec::with_capacity(v.len() + 6);
    put_bytes(&mut summary, 1, &v);

    let mut out = Vec::with_capacity(summary.len() + 24);
    put_double(&mut out, 1, wall_time);
    // int64 on the wire: a u64 step is written with the same bit pattern.
    put_varint_field(&mut out, 2, step);
    put_bytes(&mut out, 5, &summary);
    out
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// One decoded field value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// A malformed protobuf message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed protobuf: {}", self.0)
    }
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| DecodeError("truncated varint".into()))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError("varint longer than 10 bytes".into()))
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: u64) -> Result<&'a [u8], DecodeError> {
    let rest = &buf[*pos..];
    if (rest.len() as u64) < n {
        return Err(DecodeError(format!(
            "field needs {n} bytes, {} left",
            rest.len()
        )));
    }
    let n = n as usize;
    *pos += n;
    Ok(&rest[..n])
}

/// Decodes every `(field number, value)` of one message, in order.
pub(crate) fn fields(buf: &[u8]) -> Result<Vec<(u32, Field<'_>)>, DecodeError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let key = get_varint(buf, &mut pos)?;
        let field = u32::try_from(key >> 3)
            .map_err(|_| DecodeError(format!("field number too large in key {key}")))?;
        let value = match (key & 7) as u8 {
            WIRE_VARINT => Field::Varint(get_varint(buf, &mut pos)?),
            WIRE_FIXED64 => {
                let b = take(buf, &mut pos, 8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Field::Fixed64(u64::from_le_bytes(a))
            }
            WIRE_LEN => {
                let n = get_varint(buf, &mut pos)?;
                Field::Bytes(take(buf, &mut pos, n)?)
            }
            WIRE_FIXED32 => {
                let b = take(buf, &mut pos, 4)?;
                let mut a = [0u8; 4];
                a.copy_from_slice(b);
                Field::Fixed32(u32::from_le_bytes(a))
            }
            w => return Err(DecodeError(format!("unsupported wire type {w}"))),
        };
        out.push((field, value));
    }
    Ok(out)
}

/// Decodes a packed (or a single unpacked) repeated double field value.
pub(crate) fn doubles(field: Field<'_>) -> Result<Vec<f64>, DecodeError> {
    match field {
        Field::Fixed64(b) => Ok(vec![f64::from_bits(b)]),
        Field::Bytes(b) if b.len() % 8 == 0 => Ok(b
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                f64::from_le_bytes(a)
            })
            .collect()),
        other => Err(DecodeError(format!("expected doubles, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (v, bytes) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, *v);
            assert_eq!(&out, bytes, "encode {v}");
            let mut pos = 0;
            assert_eq!(get_varint(bytes, &mut pos).unwrap(), *v);
            assert_eq!(pos, bytes.len());
        }
        let mut pos = 0;
        assert!(get_varint(&[0x80, 0x80], &mut pos).is_err());
        let mut pos = 0;
        assert!(get_varint(&[0xff; 11], &mut pos).is_err());
    }

    #[test]
    fn scalar_event_golden() {
        // Event { wall_time: 1.5, step: 300, summary { value { tag: "a", simple_value: 0.5 } } }
        // derived by hand:
        //   09                          key(1, fixed64)      wall_time
        //   00 00 00 00 00 00 f8 3f     1.5 = 0x3FF8000000000000, LE
        //   10                          key(2, varint)       step
        //   ac 02                       300 = 0b10_0101100 -> 0xac, 0x02
        //   2a 0a                       key(5, len), 10 bytes: Summary
        //     0a 08                     key(1, len), 8 bytes: Summary.Value
        //       0a 01 61                key(1, len) tag "a"
        //       15 00 00 00 3f          key(2, fixed32) 0.5f = 0x3F000000, LE
        // (The Python protobuf runtime in tensorboard 2.21 serialises the same
        // Event to exactly these bytes.)
        let golden: [u8; 24] = [
            0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, //
            0x10, 0xac, 0x02, //
            0x2a, 0x0a, //
            0x0a, 0x08, //
            0x0a, 0x01, 0x61, //
            0x15, 0, 0, 0, 0x3f,
        ];
        let got = encode_summary_event(1.5, 300, "a", &ValueKind::Simple(0.5));
        assert_eq!(got, golden);
    }

    #[test]
    fn file_version_event_golden() {
        //   09 00 00 00 00 00 00 f8 3f  wall_time 1.5
        //   1a 0d "brain.Event:2"       key(3, len), 13 bytes
        let mut golden = vec![0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x1a, 0x0d];
        golden.extend_from_slice(b"brain.Event:2");
        assert_eq!(encode_file_version_event(1.5, "brain.Event:2"), golden);
    }

    #[test]
    fn zero_simple_value_is_still_written() {
        let got = encode_summary_event(0.0, 0, "z", &ValueKind::Simple(0.0));
        // Value = 0a 01 7a 15 00 00 00 00: the simple_value key 0x15 is there.
        assert!(got
            .windows(8)
            .any(|w| w == [0x0a, 0x01, b'z', 0x15, 0, 0, 0, 0]));
    }

    #[test]
    fn image_and_histo_encode_then_decode() {
        let png = [1u8, 2, 3];
        let ev = encode_summary_event(
            2.0,
            7,
            "img",
            &ValueKind::Image(ImageProto {
                height: 24,
                width: 40,
                colorspace: 3,
                png: &png,
            }),
        );
        let f = fields(&ev).unwrap();
        assert_eq!(f[0], (1, Field::Fixed64(2.0f64.to_bits())));
        assert_eq!(f[1], (2, Field::Varint(7)));
        let Field::Bytes(summary) = f[2].1 else {
            panic!("summary")
        };
        let Field::Bytes(value) = fields(summary).unwrap()[0].1 else {
            panic!("value")
        };
        let vf = fields(value).unwrap();
        assert_eq!(vf[0], (1, Field::Bytes(b"img")));
        let Field::Bytes(img) = vf[1].1 else {
            panic!("image")
        };
        assert_eq!(vf[1].0, 4);
        assert_eq!(
            fields(img).unwrap(),
            vec![
                (1, Field::Varint(24)),
                (2, Field::Varint(40)),
                (3, Field::Varint(3)),
                (4, Field::Bytes(&png)),
            ]
        );

        let h = HistoProto {
            min: -1.0,
            max: 2.0,
            num: 3.0,
            sum: 1.5,
            sum_squares: 5.25,
            bucket_limit: vec![0.0, 2.5],
            bucket: vec![1.0, 2.0],
        };
        let ev = encode_summary_event(0.0, 1, "h", &ValueKind::Histo(&h));
        let f = fields(&ev).unwrap();
        let Field::Bytes(summary) = f[2].1 else {
            panic!("summary")
        };
        let Field::Bytes(value) = fields(summary).unwrap()[0].1 else {
            panic!("value")
        };
        let vf = fields(value).unwrap();
        assert_eq!(vf[1].0, 5);
        let Field::Bytes(histo) = vf[1].1 else {
            panic!("histo")
        };
        let hf = fields(histo).unwrap();
        assert_eq!(hf.len(), 7);
        assert_eq!(hf[4], (5, Field::Fixed64(5.25f64.to_bits())));
        assert_eq!(hf[5].0, 6);
        assert_eq!(doubles(hf[5].1).unwrap(), vec![0.0, 2.5]);
        assert_eq!(doubles(hf[6].1).unwrap(), vec![1.0, 2.0]);
    }

    #[test]
    fn decoder_rejects_malformed() {
        assert!(fields(&[0x0a, 0x05, 1, 2]).is_err()); // length past the end
        assert!(fields(&[0x09, 1, 2, 3]).is_err()); // short fixed64
        assert!(fields(&[0x0b]).is_err()); // wire type 3 (groups)
        assert!(
            fields(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err()
        );
        assert!(doubles(Field::Bytes(&[0; 7])).is_err());
    }
}
