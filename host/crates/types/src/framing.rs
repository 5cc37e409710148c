//! How a framed source splits a byte stream into messages.

/// A frame is `header_length` bytes of header, whose first `length_size` bytes hold the payload's
/// length as an unsigned integer, followed by the payload. Wallaroo's default, and what
/// `wallaroo send` writes, is a 4-byte big-endian length and nothing else in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub header_length: u32,
    pub length_size: u8,
    pub big_endian: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("length field of {0} bytes is not supported (use 1, 2, 4 or 8)")]
    LengthSize(u8),
    #[error("header of {header} bytes cannot hold a {length}-byte length")]
    HeaderTooShort { header: u32, length: u8 },
}

impl Framing {
    /// Four-byte big-endian length, no other header bytes.
    pub const DEFAULT: Framing = Framing {
        header_length: 4,
        length_size: 4,
        big_endian: true,
    };

    pub fn validate(&self) -> Result<(), FramingError> {
        if !matches!(self.length_size, 1 | 2 | 4 | 8) {
            return Err(FramingError::LengthSize(self.length_size));
        }
        if self.header_length < u32::from(self.length_size) {
            return Err(FramingError::HeaderTooShort {
                header: self.header_length,
                length: self.length_size,
            });
        }
        Ok(())
    }

    /// The payload length a header announces. `header` must be `header_length` bytes of a
    /// validated framing.
    pub fn payload_length(&self, header: &[u8]) -> u64 {
        let field = &header[..usize::from(self.length_size)];
        let mut bytes = [0u8; 8];
        if self.big_endian {
            bytes[8 - field.len()..].copy_from_slice(field);
            u64::from_be_bytes(bytes)
        } else {
            bytes[..field.len()].copy_from_slice(field);
            u64::from_le_bytes(bytes)
        }
    }

    /// Appends one frame with this framing (header bytes beyond the length are zero).
    pub fn encode(&self, payload: &[u8], out: &mut Vec<u8>) {
        let len = payload.len() as u64;
        let size = usize::from(self.length_size);
        let start = out.len();
        out.resize(start + self.header_length as usize, 0);
        let field = if self.big_endian {
            len.to_be_bytes()[8 - size..].to_vec()
        } else {
            len.to_le_bytes()[..size].to_vec()
        };
        out[start..start + size].copy_from_slice(&field);
        out.extend_from_slice(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_and_little_endian_lengths() {
        let be = Framing::DEFAULT;
        assert_eq!(be.payload_length(&[0, 0, 1, 2]), 258);
        let le = Framing {
            header_length: 2,
            length_size: 2,
            big_endian: false,
        };
        assert_eq!(le.payload_length(&[2, 1]), 258);
    }

    #[test]
    fn length_sits_at_the_start_of_a_longer_header() {
        let f = Framing {
            header_length: 6,
            length_size: 2,
            big_endian: true,
        };
        let mut out = Vec::new();
        f.encode(b"hey", &mut out);
        assert_eq!(out, [0, 3, 0, 0, 0, 0, b'h', b'e', b'y']);
        assert_eq!(f.payload_length(&out[..6]), 3);
    }

    #[test]
    fn rejects_impossible_framings() {
        let bad = Framing {
            header_length: 4,
            length_size: 3,
            big_endian: true,
        };
        assert_eq!(bad.validate(), Err(FramingError::LengthSize(3)));
        let short = Framing {
            header_length: 2,
            length_size: 4,
            big_endian: true,
        };
        assert!(short.validate().is_err());
        assert!(Framing::DEFAULT.validate().is_ok());
    }
}
