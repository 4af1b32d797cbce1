//! Frame Streams (github.com/farsightsec/fstrm), the framing dnstap travels in: pure and
//! bounded, bytes in, frames out.
//!
//! Every integer is 32-bit big-endian. A data frame is its length (never 0) and its bytes. A
//! control frame is an escape (a 0 length), its own length (at most
//! [`MAX_CONTROL`]), a type, and fields, of which only the content type is defined. A
//! sender on a socket says READY with the content types it can send, the collector answers
//! ACCEPT with the one it takes, the sender says START, sends data frames, and at the end
//! STOP, which the collector answers with FINISH. A file (and some relays) has no READY:
//! START, data, STOP.

use bytes::{Buf, Bytes, BytesMut};

/// The content type of dnstap frames.
pub const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";
/// Longest control frame (its length field's value), as fstrm allows.
pub const MAX_CONTROL: usize = 512;
/// Longest content type in a control frame, as fstrm allows.
pub const MAX_CONTENT_TYPE: usize = 256;

/// The control frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Accept = 1,
    Start = 2,
    Stop = 3,
    Ready = 4,
    Finish = 5,
}

/// One frame off the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A data frame's payload (one serialized `Dnstap`), sharing the read buffer.
    Data(Bytes),
    /// A control frame, and whether its content types (if it lists any) include dnstap's.
    Control { kind: Control, dnstap: bool },
}

/// Why a stream cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a data frame of {0} bytes, over [dnstap] max_frame")]
    TooLong(usize),
    #[error("a control frame of {0} bytes (at most {MAX_CONTROL})")]
    ControlLength(usize),
    #[error("an unknown control frame type {0}")]
    ControlType(u32),
    #[error("a control frame with a malformed field")]
    ControlField,
}

/// Takes the next whole frame off the front of `buffer`; `None` until one has arrived.
pub fn next(buffer: &mut BytesMut, max_frame: usize) -> Result<Option<Frame>, FrameError> {
    let Some(len) = be32(buffer, 0) else {
        return Ok(None);
    };
    let len = len as usize;
    if len > 0 {
        if len > max_frame {
            return Err(FrameError::TooLong(len));
        }
        if buffer.len() < 4 + len {
            return Ok(None);
        }
        buffer.advance(4);
        return Ok(Some(Frame::Data(buffer.split_to(len).freeze())));
    }
    let Some(control_len) = be32(buffer, 4) else {
        return Ok(None);
    };
    let control_len = control_len as usize;
    if !(4..=MAX_CONTROL).contains(&control_len) {
        return Err(FrameError::ControlLength(control_len));
    }
    if buffer.len() < 8 + control_len {
        return Ok(None);
    }
    buffer.advance(8);
    let control = buffer.split_to(control_len);
    let kind = match u32::from_be_bytes(control[..4].try_into().expect("4 bytes")) {
        1 => Control::Accept,
        2 => Control::Start,
        3 => Control::Stop,
        4 => Control::Ready,
        5 => Control::Finish,
        other => return Err(FrameError::ControlType(other)),
    };
    let (mut listed, mut dnstap) = (false, false);
    let mut fields = &control[4..];
    while !fields.is_empty() {
        let (Some(field), Some(len)) = (be32(fields, 0), be32(fields, 4)) else {
            return Err(FrameError::ControlField);
        };
        let len = len as usize;
        let value = fields.get(8..8 + len).ok_or(FrameError::ControlField)?;
        if field != 1 || len > MAX_CONTENT_TYPE {
            return Err(FrameError::ControlField);
        }
        listed = true;
        dnstap |= value == CONTENT_TYPE;
        fields = &fields[8 + len..];
    }
    Ok(Some(Frame::Control {
        kind,
        dnstap: dnstap || !listed,
    }))
}

/// The bytes of control frame `kind`, with dnstap's content type when `typed`.
pub fn control(kind: Control, typed: bool) -> Vec<u8> {
    let mut payload = (kind as u32).to_be_bytes().to_vec();
    if typed {
        payload.extend_from_slice(&1u32.to_be_bytes());
        payload.extend_from_slice(&(CONTENT_TYPE.len() as u32).to_be_bytes());
        payload.extend_from_slice(CONTENT_TYPE);
    }
    let mut frame = 0u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// A data frame around `payload`.
pub fn data(payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    frame
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_s_handshake_reads_as_fstrm_writes_it() {
        // READY as NSD, Knot and BIND send it (captured on the wire).
        let ready = control(Control::Ready, true);
        assert_eq!(
            ready[..20],
            [
                0, 0, 0, 0, 0, 0, 0, 0x22, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0x16
            ]
        );
        let mut buffer = BytesMut::from(&ready[..10]);
        assert_eq!(next(&mut buffer, 1024), Ok(None), "a part is not a frame");
        buffer.extend_from_slice(&ready[10..]);
        buffer.extend_from_slice(&data(b"payload"));
        assert_eq!(
            next(&mut buffer, 1024),
            Ok(Some(Frame::Control {
                kind: Control::Ready,
                dnstap: true
            }))
        );
        assert_eq!(
            next(&mut buffer, 1024),
            Ok(Some(Frame::Data(Bytes::from_static(b"payload"))))
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn bad_frames_are_named() {
        let mut long = BytesMut::from(&data(&[0; 600])[..]);
        assert_eq!(next(&mut long, 512), Err(FrameError::TooLong(600)));
        let mut huge = BytesMut::from(&[0u8, 0, 0, 0, 0, 0, 4, 0][..]);
        assert_eq!(next(&mut huge, 512), Err(FrameError::ControlLength(1024)));
        let mut unknown = BytesMut::from(&[0u8, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 9][..]);
        assert_eq!(next(&mut unknown, 512), Err(FrameError::ControlType(9)));
        let mut other = BytesMut::from(&control(Control::Start, false)[..]);
        let mut typed = other.clone();
        typed.clear();
        let mut payload = 2u32.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 4]);
        payload.extend_from_slice(b"json");
        typed.extend_from_slice(&[0, 0, 0, 0]);
        typed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        typed.extend_from_slice(&payload);
        assert_eq!(
            next(&mut typed, 512),
            Ok(Some(Frame::Control {
                kind: Control::Start,
                dnstap: false
            })),
            "another content type"
        );
        assert_eq!(
            next(&mut other, 512),
            Ok(Some(Frame::Control {
                kind: Control::Start,
                dnstap: true
            })),
            "no content type listed: taken as dnstap's"
        );
    }
}
