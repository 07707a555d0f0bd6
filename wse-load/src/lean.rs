//! The lean client: WebSocket frames (RFC 6455) written and parsed by hand on the raw
//! `TcpStream`, once tokio-tungstenite has done the upgrade and [`load::open`] the wse
//! handshake.
//!
//! A load generator that shares the machine's cores with the server it measures takes CPU
//! from that server: the leaner it is, the closer its ratios are to what an efficient client
//! sees. So nothing here allocates per message:
//!
//! - client frames are masked, as RFC 6455 §5.3 requires, with the key 0 0 0 0. Any key is
//!   legal, and XOR with zeros leaves the payload as it is, so a frame can be built once as
//!   complete wire bytes ([`masked_frame`]) and written again and again;
//! - server frames are parsed in place in one read buffer, which is reused; a message is a
//!   borrowed slice of it, checked by comparing bytes.
//!
//! What the servers under test send is narrow, and anything else fails loudly rather than
//! being half-handled: whole messages (FIN set; no fragments), unmasked, no extension bits.
//! A ping is answered with a pong (the wse-rs heartbeat pings a connection quiet for 25 s,
//! which a fan-out receiver may be); a close frame under load is a failure.
//!
//! [`load::open`]: crate::load::open

use std::ops::Range;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;

use crate::error::LoadError;
use crate::load::{Failure, Ws};

/// The FIN bit of a frame's first byte: the last (here, only) frame of a message.
const FIN: u8 = 0x80;
/// The extension bits of a frame's first byte; no extension is negotiated.
const RSV: u8 = 0x70;
/// The MASK bit of a frame's second byte.
const MASKED: u8 = 0x80;

/// A text message frame.
pub(crate) const TEXT: u8 = 0x1;
/// A binary message frame.
pub(crate) const BINARY: u8 = 0x2;
/// A close frame.
const CLOSE: u8 = 0x8;
/// A ping frame.
const PING: u8 = 0x9;
/// A pong frame.
const PONG: u8 = 0xA;

/// The close frame sent when a load is done: code 1000 (normal closure), no reason.
const NORMAL_CLOSURE: [u8; 2] = 1000u16.to_be_bytes();

/// How long a closing handshake may take before the close is reported as failed: the lean
/// client's and tokio-tungstenite's ([`load::close`](crate::load::close)) alike.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The failure of a close that the server did not answer within [`CLOSE_TIMEOUT`].
pub(crate) fn close_timed_out() -> LoadError {
    LoadError::timeout(format!(
        "the server did not answer the close frame within {CLOSE_TIMEOUT:?}"
    ))
}

/// Appends to `out` one client frame carrying `payload` as a whole message of `opcode`, masked
/// with the key 0 0 0 0 (so the payload goes out as it is).
pub(crate) fn push_masked_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(FIN | opcode);
    let len = payload.len();
    if let Ok(short @ 0..=125) = u8::try_from(len) {
        out.push(MASKED | short);
    } else if let Ok(medium) = u16::try_from(len) {
        out.push(MASKED | 126);
        out.extend_from_slice(&medium.to_be_bytes());
    } else {
        out.push(MASKED | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
}

/// One client frame carrying `payload` as a whole message of `opcode`: complete wire bytes,
/// to be written as they are, as often as needed.
pub(crate) fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    push_masked_frame(&mut frame, opcode, payload);
    frame
}

/// A connection past its upgrade and handshake, spoken to frame by frame.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The socket tokio-tungstenite upgraded.
    tcp: TcpStream,
    /// Bytes read and not yet parsed, `buffer[start..end]`; reused for the whole run.
    buffer: Box<[u8]>,
    /// Where the first unparsed byte is.
    start: usize,
    /// Where the bytes read end.
    end: usize,
}

impl Conn {
    /// Takes the socket back from tokio-tungstenite, with a read buffer of `buffer` bytes,
    /// which bounds the largest frame this connection can receive.
    ///
    /// # Errors
    /// When the connection is not plain TCP, or when a message already arrived: tungstenite
    /// may have read its bytes into its own buffer, which is dropped here, so the frames read
    /// from the socket would start in the middle of the stream. (The servers under test send
    /// nothing after the welcome until they are called, so this does not happen.)
    pub(crate) fn from_ws(mut ws: Ws, buffer: usize) -> Result<Self, Failure> {
        // A message ready now is one tungstenite has read, whole or in part: refuse it. Ready
        // or not, polling once also moves any bytes the socket held into tungstenite's buffer,
        // so what it did not turn into a message is a partial frame, which the strict header
        // checks of `next_frame` catch on the first read.
        if let Some(early) = ws.next().now_or_never() {
            return Err(format!(
                "the server sent {early:?} before being called: the lean client would lose \
                 the bytes tungstenite buffered"
            )
            .into());
        }
        match ws.into_inner() {
            MaybeTlsStream::Plain(tcp) => Ok(Self {
                tcp,
                buffer: vec![0; buffer].into_boxed_slice(),
                start: 0,
                end: 0,
            }),
            _ => Err("the lean client speaks plain TCP only (ws://, not wss://)".into()),
        }
    }

    /// Writes `bytes` (whole frames) to the server.
    ///
    /// # Cancel safety
    /// Not cancel safe: part of the bytes may have been written.
    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.tcp
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}").into())
    }

    /// Reads what the socket has into the free end of the buffer, first moving a partial
    /// frame left at the end to the front.
    ///
    /// # Errors
    /// On a read error, or when the server closed the socket.
    ///
    /// # Cancel safety
    /// Cancel safe: bytes are kept only once read.
    pub(crate) async fn fill(&mut self) -> Result<(), Failure> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buffer.len() {
            // Only when the buffer is full: then the frame at its end is partial (a complete
            // one would have been parsed), and moving it is rare and short.
            self.buffer.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let read = self
            .tcp
            .read(&mut self.buffer[self.end..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if read == 0 {
            return Err("the server closed the connection under load".into());
        }
        self.end += read;
        Ok(())
    }

    /// The next complete frame in the buffer, as its opcode and where its payload lies, or
    /// `None` when more bytes are needed.
    fn next_frame(&mut self) -> Result<Option<(u8, Range<usize>)>, Failure> {
        let bytes = &self.buffer[self.start..self.end];
        let [first, second, ..] = *bytes else {
            return Ok(None);
        };
        if first & RSV != 0 || second & MASKED != 0 {
            return Err(format!(
                "not a frame the lean client reads (header {first:#04x} {second:#04x}: \
                 extension bits or a mask)"
            )
            .into());
        }
        if first & FIN == 0 {
            return Err("a fragmented message: the lean client reads whole messages only".into());
        }
        let (header, len) = match second & 0x7f {
            126 => match bytes.get(2..4) {
                Some(&[high, low]) => (4, usize::from(u16::from_be_bytes([high, low]))),
                _ => return Ok(None),
            },
            127 => match bytes
                .get(2..10)
                .and_then(|len| <[u8; 8]>::try_from(len).ok())
            {
                Some(len) => (
                    10,
                    usize::try_from(u64::from_be_bytes(len)).unwrap_or(usize::MAX),
                ),
                None => return Ok(None),
            },
            short => (2, usize::from(short)),
        };
        let total = len.saturating_add(header);
        if total > self.buffer.len() {
            return Err(format!(
                "a frame of {total} bytes, larger than the read buffer ({} bytes)",
                self.buffer.len()
            )
            .into());
        }
        if bytes.len() < total {
            return Ok(None);
        }
        let payload = self.start + header..self.start + total;
        self.start += total;
        Ok(Some((first & 0x0f, payload)))
    }

    /// The next whole message in the buffer, as its opcode ([`TEXT`] or [`BINARY`]) and its
    /// payload, or `None` when more bytes are needed. A ping on the way is answered by a pong
    /// appended to `out`, which the caller writes; a pong is skipped.
    ///
    /// # Errors
    /// On a close frame (the server gave up under load), or a frame this client does not read.
    pub(crate) fn next_message(
        &mut self,
        out: &mut Vec<u8>,
    ) -> Result<Option<(u8, &[u8])>, Failure> {
        loop {
            let Some((opcode, payload)) = self.next_frame()? else {
                return Ok(None);
            };
            match opcode {
                TEXT | BINARY => return Ok(Some((opcode, &self.buffer[payload]))),
                PING => push_masked_frame(out, PONG, &self.buffer[payload]),
                PONG => {}
                CLOSE => {
                    return Err(format!(
                        "the server closed under load: {}",
                        describe_close(&self.buffer[payload])
                    )
                    .into());
                }
                other => return Err(format!("unexpected opcode {other:#x}").into()),
            }
        }
    }

    /// Closes cleanly: sends a close frame, then reads until the server's close frame or the
    /// end of the stream, skipping anything else.
    ///
    /// # Errors
    /// When the server does not close within 10 s, or the socket fails.
    pub(crate) async fn close(self) -> Result<(), Failure> {
        self.close_counting().await.map(drop)
    }

    /// Closes as [`Conn::close`] does, and returns how many messages (text or binary) came
    /// before the server's close frame: a fan-out receiver that has had all its rounds
    /// expects none, so any is a delivery too many.
    ///
    /// # Errors
    /// As [`Conn::close`].
    pub(crate) async fn close_counting(mut self) -> Result<usize, Failure> {
        self.write_all(&masked_frame(CLOSE, &NORMAL_CLOSURE))
            .await?;
        let mut messages = 0;
        let closed = async {
            loop {
                while let Some((opcode, _)) = self.next_frame()? {
                    match opcode {
                        CLOSE => return Ok(()),
                        TEXT | BINARY => messages += 1,
                        _ => {}
                    }
                }
                if self.fill().await.is_err() {
                    // The end of the stream (or a reset) after our close: closed as well.
                    return Ok::<_, Failure>(());
                }
            }
        };
        tokio::time::timeout(CLOSE_TIMEOUT, closed)
            .await
            .map_err(|_| close_timed_out())??;
        Ok(messages)
    }
}

/// A close frame's payload in words: its code and reason.
fn describe_close(payload: &[u8]) -> String {
    match payload {
        [high, low, reason @ ..] => format!(
            "close code {}, reason {:?}",
            u16::from_be_bytes([*high, *low]),
            String::from_utf8_lossy(reason)
        ),
        _ => "close frame without a code".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame, unmasked, as tungstenite writes it.
    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = masked_frame(opcode, payload);
        // The same header without the mask bit and without the key.
        frame[1] &= !MASKED;
        let header = frame.len() - payload.len() - 4;
        frame.drain(header..header + 4);
        frame
    }

    #[test]
    fn client_frames_carry_each_length_form_and_a_zero_mask() {
        assert_eq!(
            masked_frame(TEXT, b"hi"),
            [0x81, 0x82, 0, 0, 0, 0, b'h', b'i']
        );
        let medium = masked_frame(BINARY, &[7; 300]);
        assert_eq!(medium[..8], [0x82, 0xfe, 0x01, 0x2c, 0, 0, 0, 0]);
        assert_eq!(medium.len(), 8 + 300);
        let long = masked_frame(BINARY, &[7; 70_000]);
        assert_eq!(long[..2], [0x82, 0xff]);
        assert_eq!(long[2..10], 70_000u64.to_be_bytes());
        assert_eq!(long.len(), 14 + 70_000);
    }

    /// A connection over a real socket, its buffer preloaded with `bytes`.
    async fn preloaded(bytes: &[u8], buffer: usize) -> Result<Conn, Failure> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut conn = Conn {
            tcp,
            buffer: vec![0; buffer].into_boxed_slice(),
            start: 0,
            end: bytes.len(),
        };
        conn.buffer[..bytes.len()].copy_from_slice(bytes);
        Ok(conn)
    }

    #[tokio::test]
    async fn messages_are_parsed_in_place_and_pings_answered() -> Result<(), Failure> {
        let mut wire = server_frame(TEXT, b"short");
        wire.extend(server_frame(PING, b"p"));
        wire.extend(server_frame(BINARY, &[1; 200]));
        wire.extend(server_frame(TEXT, &[b'x'; 70_000]));
        let partial = server_frame(TEXT, b"partial");
        wire.extend(&partial[..4]);
        let mut conn = preloaded(&wire, 1 << 17).await?;
        let mut out = Vec::new();
        assert_eq!(conn.next_message(&mut out)?, Some((TEXT, &b"short"[..])));
        assert_eq!(conn.next_message(&mut out)?, Some((BINARY, &[1; 200][..])));
        assert_eq!(out, masked_frame(PONG, b"p"));
        let long = conn
            .next_message(&mut out)?
            .map(|(_, payload)| payload.len());
        assert_eq!(long, Some(70_000));
        assert_eq!(conn.next_message(&mut out)?, None);
        Ok(())
    }

    /// A tokio-tungstenite server that sends `early` at once after the upgrade, then echoes;
    /// and a client connected to it, as `load::open` connects.
    async fn upgraded(early: Option<&'static str>) -> Result<Ws, Failure> {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let url = format!("ws://{}", listener.local_addr().map_err(|e| e.to_string())?);
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut ws = tokio_tungstenite::accept_async(tcp).await?;
            if let Some(early) = early {
                ws.send(Message::text(early)).await?;
            }
            while let Some(message) = ws.next().await {
                ws.send(message?).await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ws)
    }

    #[tokio::test]
    async fn the_socket_is_taken_back_only_when_nothing_arrived_yet() -> Result<(), Failure> {
        let ws = upgraded(Some("too early")).await?;
        // Time for the early message to arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(Conn::from_ws(ws, 64).is_err());

        let mut conn = Conn::from_ws(upgraded(None).await?, 64)?;
        conn.write_all(&masked_frame(TEXT, b"echo me")).await?;
        let mut out = Vec::new();
        loop {
            conn.fill().await?;
            if let Some(message) = conn.next_message(&mut out)? {
                assert_eq!(message, (TEXT, &b"echo me"[..]));
                break;
            }
        }
        conn.close().await
    }

    #[tokio::test]
    async fn what_the_client_does_not_read_fails_loudly() -> Result<(), Failure> {
        let mut out = Vec::new();
        let close = server_frame(CLOSE, &[0x03, 0xe8, b'b', b'y', b'e']);
        let mut closed = preloaded(&close, 64).await?;
        let error = closed.next_message(&mut out);
        assert!(
            error.is_err_and(|e| e.message().contains("code 1000") && e.message().contains("bye"))
        );
        let mut fragment = server_frame(TEXT, b"half");
        fragment[0] &= !FIN;
        assert!(
            preloaded(&fragment, 64)
                .await?
                .next_message(&mut out)
                .is_err()
        );
        let masked = masked_frame(TEXT, b"masked");
        assert!(
            preloaded(&masked, 64)
                .await?
                .next_message(&mut out)
                .is_err()
        );
        let too_long = server_frame(TEXT, &[b'x'; 100]);
        assert!(
            preloaded(&too_long[..10], 64)
                .await?
                .next_message(&mut out)
                .is_err()
        );
        Ok(())
    }
}
