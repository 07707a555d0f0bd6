//! What nodes tell each other over Redis pub/sub: one binary envelope per message, with the
//! frames already encoded by the sending node (once per codec), so that a receiving node only
//! finds each local recipient's frame and queues it.
//!
//! ```text
//! version u8 = 1 │ origin node u64 │ kind u8 │ body (by kind)
//! target:  u8 tag (0 connection: node u64, local u64 │ 1 user: str │ 2 room: str │ 3 all)
//! except:  u8 tag (0 none │ 1 connection: node u64, local u64 │ 2 user: str)
//! str:     u32 length, UTF-8 │ bytes: u32 length, bytes │ integers big-endian
//! ```
//!
//! Decoding never panics and never allocates more than the message holds: a malformed
//! envelope (another application on the same channel, a newer version) is an error the
//! receiver counts and skips.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use wse_server::{Close, ConnectionId, Except, NodeId, Packed, Presence, Target};

/// The envelope's format version: a node skips envelopes of another.
const VERSION: u8 = 1;

/// One message between nodes.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    /// The node that published it: a node skips its own.
    pub(crate) origin: NodeId,
    pub(crate) body: Body,
}

/// What a message asks of the nodes that receive it.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// Queue the frames for the local connections of `target`, less `except`.
    Send {
        target: Target,
        except: Option<Except>,
        packed: Packed,
    },
    /// Close the local connections of `target`, less `except`.
    Disconnect {
        target: Target,
        except: Option<Except>,
        close: Close,
    },
    /// Take out and close a connection of the receiving node that the cluster-wide user
    /// limit chose, with 1000 `wse.clients-concurrency`.
    Evict { connection: ConnectionId },
    /// Call a procedure of a connection of the receiving node and answer `reply_to`.
    Call {
        /// The call's number at the caller's node.
        call: u64,
        reply_to: NodeId,
        connection: ConnectionId,
        procedure: String,
        /// The arguments, as JSON.
        args: Bytes,
        timeout_ms: u64,
    },
    /// The answer to a [`Body::Call`]: the result as JSON, or the error object as JSON.
    Reply {
        call: u64,
        outcome: Result<Bytes, Bytes>,
    },
    /// A node stopped renewing its place and was taken out: calls waiting on it fail.
    NodeGone { node: NodeId },
    /// A membership change the cluster made, for the node that holds the connection (or,
    /// for a user, for every node): its index follows, for delivery.
    Membership(Membership),
    /// A user's presence changed: every node tells its presence subscribers.
    Presence(Presence),
}

/// A room membership change, as a node's index applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Membership {
    Join {
        connection: ConnectionId,
        room: String,
    },
    Leave {
        connection: ConnectionId,
        room: String,
    },
    LeaveAll {
        connection: ConnectionId,
    },
    JoinUser {
        user: String,
        room: String,
    },
    LeaveUser {
        user: String,
        room: String,
    },
}

/// Why an envelope could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Malformed {
    /// Another format version, or not an envelope at all.
    #[error("envelope version {0}, not {VERSION}")]
    Version(u8),
    /// It ends before what it announces.
    #[error("envelope truncated")]
    Truncated,
    /// A tag that names nothing, or text that is not UTF-8.
    #[error("envelope invalid: {0}")]
    Invalid(&'static str),
}

const SEND: u8 = 1;
const DISCONNECT: u8 = 2;
const EVICT: u8 = 3;
const CALL: u8 = 4;
const REPLY: u8 = 5;
const NODE_GONE: u8 = 6;
const MEMBERSHIP: u8 = 7;
const PRESENCE: u8 = 8;

impl Envelope {
    /// The envelope as it travels.
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64);
        out.put_u8(VERSION);
        out.put_u64(self.origin.get());
        match &self.body {
            Body::Send {
                target,
                except,
                packed,
            } => {
                out.put_u8(SEND);
                put_target(&mut out, target);
                put_except(&mut out, except.as_ref());
                let frames: Vec<_> = packed.frames().collect();
                put_len(&mut out, frames.len());
                for (codec, frame) in frames {
                    put_str(&mut out, codec);
                    put_len(&mut out, frame.len());
                    out.put_slice(frame);
                }
            }
            Body::Disconnect {
                target,
                except,
                close,
            } => {
                out.put_u8(DISCONNECT);
                put_target(&mut out, target);
                put_except(&mut out, except.as_ref());
                out.put_u16(close.code);
                put_str(&mut out, &close.reason);
            }
            Body::Evict { connection } => {
                out.put_u8(EVICT);
                put_id(&mut out, *connection);
            }
            Body::Call {
                call,
                reply_to,
                connection,
                procedure,
                args,
                timeout_ms,
            } => {
                out.put_u8(CALL);
                out.put_u64(*call);
                out.put_u64(reply_to.get());
                put_id(&mut out, *connection);
                put_str(&mut out, procedure);
                put_bytes(&mut out, args);
                out.put_u64(*timeout_ms);
            }
            Body::Reply { call, outcome } => {
                out.put_u8(REPLY);
                out.put_u64(*call);
                match outcome {
                    Ok(result) => {
                        out.put_u8(0);
                        put_bytes(&mut out, result);
                    }
                    Err(error) => {
                        out.put_u8(1);
                        put_bytes(&mut out, error);
                    }
                }
            }
            Body::NodeGone { node } => {
                out.put_u8(NODE_GONE);
                out.put_u64(node.get());
            }
            Body::Membership(change) => {
                out.put_u8(MEMBERSHIP);
                match change {
                    Membership::Join { connection, room } => {
                        out.put_u8(0);
                        put_id(&mut out, *connection);
                        put_str(&mut out, room);
                    }
                    Membership::Leave { connection, room } => {
                        out.put_u8(1);
                        put_id(&mut out, *connection);
                        put_str(&mut out, room);
                    }
                    Membership::LeaveAll { connection } => {
                        out.put_u8(2);
                        put_id(&mut out, *connection);
                    }
                    Membership::JoinUser { user, room } => {
                        out.put_u8(3);
                        put_str(&mut out, user);
                        put_str(&mut out, room);
                    }
                    Membership::LeaveUser { user, room } => {
                        out.put_u8(4);
                        put_str(&mut out, user);
                        put_str(&mut out, room);
                    }
                }
            }
            Body::Presence(presence) => {
                out.put_u8(PRESENCE);
                put_str(&mut out, &presence.user);
                out.put_u8(u8::from(presence.online));
                out.put_u64(presence.devices as u64);
                put_str(&mut out, &presence.alias);
                out.put_u64(presence.version);
            }
        }
        out.freeze()
    }

    /// The node that published `bytes`, read without decoding the rest.
    pub(crate) fn origin_of(bytes: &[u8]) -> Option<NodeId> {
        match bytes {
            [VERSION, origin @ ..] => {
                let origin: [u8; 8] = origin.get(..8)?.try_into().ok()?;
                Some(NodeId::from_u64(u64::from_be_bytes(origin)))
            }
            _ => None,
        }
    }

    /// Reads an envelope; the frames it carries share `bytes`' memory.
    pub(crate) fn decode(mut bytes: Bytes) -> Result<Self, Malformed> {
        let version = take_u8(&mut bytes)?;
        if version != VERSION {
            return Err(Malformed::Version(version));
        }
        let origin = NodeId::from_u64(take_u64(&mut bytes)?);
        let body = match take_u8(&mut bytes)? {
            SEND => {
                let target = take_target(&mut bytes)?;
                let except = take_except(&mut bytes)?;
                let count = take_len(&mut bytes)?;
                // Each frame takes at least 8 bytes: a count beyond that is a lie.
                if count > bytes.remaining() / 8 {
                    return Err(Malformed::Truncated);
                }
                let mut frames = Vec::with_capacity(count);
                for _ in 0..count {
                    let codec: Arc<str> = take_str(&mut bytes)?.into();
                    let frame = take_bytes(&mut bytes)?;
                    frames.push((codec, frame));
                }
                Body::Send {
                    target,
                    except,
                    packed: Packed::from_frames(frames),
                }
            }
            DISCONNECT => {
                let target = take_target(&mut bytes)?;
                let except = take_except(&mut bytes)?;
                let code = take_u16(&mut bytes)?;
                let reason = take_str(&mut bytes)?;
                Body::Disconnect {
                    target,
                    except,
                    close: Close::new(code, reason),
                }
            }
            EVICT => Body::Evict {
                connection: take_id(&mut bytes)?,
            },
            CALL => Body::Call {
                call: take_u64(&mut bytes)?,
                reply_to: NodeId::from_u64(take_u64(&mut bytes)?),
                connection: take_id(&mut bytes)?,
                procedure: take_str(&mut bytes)?,
                args: take_bytes(&mut bytes)?,
                timeout_ms: take_u64(&mut bytes)?,
            },
            REPLY => {
                let call = take_u64(&mut bytes)?;
                let outcome = match take_u8(&mut bytes)? {
                    0 => Ok(take_bytes(&mut bytes)?),
                    1 => Err(take_bytes(&mut bytes)?),
                    _ => return Err(Malformed::Invalid("reply")),
                };
                Body::Reply { call, outcome }
            }
            NODE_GONE => Body::NodeGone {
                node: NodeId::from_u64(take_u64(&mut bytes)?),
            },
            MEMBERSHIP => Body::Membership(match take_u8(&mut bytes)? {
                0 => Membership::Join {
                    connection: take_id(&mut bytes)?,
                    room: take_str(&mut bytes)?,
                },
                1 => Membership::Leave {
                    connection: take_id(&mut bytes)?,
                    room: take_str(&mut bytes)?,
                },
                2 => Membership::LeaveAll {
                    connection: take_id(&mut bytes)?,
                },
                3 => Membership::JoinUser {
                    user: take_str(&mut bytes)?,
                    room: take_str(&mut bytes)?,
                },
                4 => Membership::LeaveUser {
                    user: take_str(&mut bytes)?,
                    room: take_str(&mut bytes)?,
                },
                _ => return Err(Malformed::Invalid("membership")),
            }),
            PRESENCE => Body::Presence(Presence {
                user: take_str(&mut bytes)?.into(),
                online: take_u8(&mut bytes)? == 1,
                devices: usize::try_from(take_u64(&mut bytes)?)
                    .map_err(|_| Malformed::Invalid("devices"))?,
                alias: take_str(&mut bytes)?,
                version: take_u64(&mut bytes)?,
            }),
            _ => return Err(Malformed::Invalid("kind")),
        };
        if bytes.has_remaining() {
            return Err(Malformed::Invalid("trailing bytes"));
        }
        Ok(Self { origin, body })
    }
}

fn put_len(out: &mut BytesMut, len: usize) {
    // Nothing a node sends comes near 4 GiB: Redis caps a message at 512 MiB.
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

fn put_str(out: &mut BytesMut, text: &str) {
    put_bytes(out, text.as_bytes());
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.put_slice(bytes);
}

fn put_id(out: &mut BytesMut, id: ConnectionId) {
    out.put_u64(id.node().get());
    out.put_u64(id.local());
}

fn put_target(out: &mut BytesMut, target: &Target) {
    match target {
        Target::Connection(id) => {
            out.put_u8(0);
            put_id(out, *id);
        }
        Target::User(user) => {
            out.put_u8(1);
            put_str(out, user);
        }
        Target::Room(room) => {
            out.put_u8(2);
            put_str(out, room);
        }
        // `Target` may grow: what a node cannot name goes to everyone, which it reaches.
        _ => out.put_u8(3),
    }
}

fn put_except(out: &mut BytesMut, except: Option<&Except>) {
    match except {
        Some(Except::Connection(id)) => {
            out.put_u8(1);
            put_id(out, *id);
        }
        Some(Except::User(user)) => {
            out.put_u8(2);
            put_str(out, user);
        }
        _ => out.put_u8(0),
    }
}

fn take_u8(bytes: &mut Bytes) -> Result<u8, Malformed> {
    bytes.try_get_u8().map_err(|_| Malformed::Truncated)
}

fn take_u16(bytes: &mut Bytes) -> Result<u16, Malformed> {
    bytes.try_get_u16().map_err(|_| Malformed::Truncated)
}

fn take_u64(bytes: &mut Bytes) -> Result<u64, Malformed> {
    bytes.try_get_u64().map_err(|_| Malformed::Truncated)
}

fn take_len(bytes: &mut Bytes) -> Result<usize, Malformed> {
    let len = bytes.try_get_u32().map_err(|_| Malformed::Truncated)?;
    usize::try_from(len).map_err(|_| Malformed::Truncated)
}

fn take_bytes(bytes: &mut Bytes) -> Result<Bytes, Malformed> {
    let len = take_len(bytes)?;
    if len > bytes.remaining() {
        return Err(Malformed::Truncated);
    }
    Ok(bytes.split_to(len))
}

fn take_str(bytes: &mut Bytes) -> Result<String, Malformed> {
    let raw = take_bytes(bytes)?;
    String::from_utf8(raw.to_vec()).map_err(|_| Malformed::Invalid("text"))
}

fn take_id(bytes: &mut Bytes) -> Result<ConnectionId, Malformed> {
    let node = NodeId::from_u64(take_u64(bytes)?);
    Ok(ConnectionId::new(node, take_u64(bytes)?))
}

fn take_target(bytes: &mut Bytes) -> Result<Target, Malformed> {
    Ok(match take_u8(bytes)? {
        0 => Target::Connection(take_id(bytes)?),
        1 => Target::user(take_str(bytes)?),
        2 => Target::room(take_str(bytes)?),
        3 => Target::All,
        _ => return Err(Malformed::Invalid("target")),
    })
}

fn take_except(bytes: &mut Bytes) -> Result<Option<Except>, Malformed> {
    Ok(match take_u8(bytes)? {
        0 => None,
        1 => Some(Except::Connection(take_id(bytes)?)),
        2 => Some(Except::User(take_str(bytes)?.into())),
        _ => return Err(Malformed::Invalid("except")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        NodeId::from_u64(0x0123_4567_89ab_cdef)
    }

    fn send(target: Target, except: Option<Except>) -> Envelope {
        let packed = Packed::from_frames([
            (
                Arc::from("wse-default-json"),
                Bytes::from_static(b"[\"m\",1,null]"),
            ),
            (
                Arc::from("wse-msgpack"),
                Bytes::from_static(b"\x93\xa1m\x01\xc0"),
            ),
        ]);
        Envelope {
            origin: node(),
            body: Body::Send {
                target,
                except,
                packed,
            },
        }
    }

    fn round_trip(envelope: &Envelope) -> Envelope {
        Envelope::decode(envelope.encode()).unwrap()
    }

    #[test]
    fn sends_cross_whole() {
        let id = ConnectionId::new(NodeId::from_u64(7), 42);
        for (target, except) in [
            (Target::All, None),
            (Target::user("ann"), Some(Except::Connection(id))),
            (Target::room("public-ünï"), Some(Except::User("bob".into()))),
            (Target::Connection(id), None),
        ] {
            let back = round_trip(&send(target.clone(), except.clone()));
            assert_eq!(back.origin, node());
            let Body::Send {
                target: t,
                except: e,
                packed,
            } = back.body
            else {
                panic!("not a send");
            };
            assert_eq!((t, e), (target.clone(), except.clone()));
            let bytes = send(target, except).encode();
            assert_eq!(Envelope::origin_of(&bytes), Some(node()));
            assert_eq!(
                packed.frame("wse-msgpack").unwrap().as_ref(),
                b"\x93\xa1m\x01\xc0"
            );
            assert_eq!(packed.frames().count(), 2);
        }
    }

    #[test]
    fn disconnects_cross_whole() {
        let envelope = Envelope {
            origin: node(),
            body: Body::Disconnect {
                target: Target::user("ann"),
                except: None,
                close: Close::new(1000, "wse.logout"),
            },
        };
        let Body::Disconnect { target, close, .. } = round_trip(&envelope).body else {
            panic!("not a disconnect");
        };
        assert_eq!(target, Target::user("ann"));
        assert_eq!((close.code, &*close.reason), (1000, "wse.logout"));
        let id = ConnectionId::new(NodeId::from_u64(9), 3);
        let evict = Envelope {
            origin: node(),
            body: Body::Evict { connection: id },
        };
        let Body::Evict { connection } = round_trip(&evict).body else {
            panic!("not an eviction");
        };
        assert_eq!(connection, id);
    }

    #[test]
    fn calls_and_their_replies_cross_whole() {
        let id = ConnectionId::new(NodeId::from_u64(5), 8);
        let call = Envelope {
            origin: node(),
            body: Body::Call {
                call: 77,
                reply_to: node(),
                connection: id,
                procedure: "client_sum".into(),
                args: Bytes::from_static(br#"{"a":1}"#),
                timeout_ms: 1500,
            },
        };
        let Body::Call {
            call,
            reply_to,
            connection,
            procedure,
            args,
            timeout_ms,
        } = round_trip(&call).body
        else {
            panic!("not a call");
        };
        assert_eq!((call, reply_to, connection), (77, node(), id));
        assert_eq!(
            (&*procedure, &*args, timeout_ms),
            ("client_sum", &br#"{"a":1}"#[..], 1500)
        );
        for outcome in [Ok(Bytes::from_static(b"3")), Err(Bytes::from_static(b"{}"))] {
            let reply = Envelope {
                origin: node(),
                body: Body::Reply {
                    call: 9,
                    outcome: outcome.clone(),
                },
            };
            let Body::Reply {
                call,
                outcome: back,
            } = round_trip(&reply).body
            else {
                panic!("not a reply");
            };
            assert_eq!((call, back), (9, outcome));
        }
        let gone = Envelope {
            origin: node(),
            body: Body::NodeGone {
                node: NodeId::from_u64(4),
            },
        };
        let Body::NodeGone { node: gone } = round_trip(&gone).body else {
            panic!("not a node gone");
        };
        assert_eq!(gone, NodeId::from_u64(4));
    }

    #[test]
    fn membership_changes_cross_whole() {
        let connection = ConnectionId::new(NodeId::from_u64(3), 1);
        for change in [
            Membership::Join {
                connection,
                room: "r".into(),
            },
            Membership::Leave {
                connection,
                room: "r".into(),
            },
            Membership::LeaveAll { connection },
            Membership::JoinUser {
                user: "ann".into(),
                room: "r".into(),
            },
            Membership::LeaveUser {
                user: "ann".into(),
                room: "r".into(),
            },
        ] {
            let envelope = Envelope {
                origin: node(),
                body: Body::Membership(change.clone()),
            };
            let Body::Membership(back) = round_trip(&envelope).body else {
                panic!("not a membership change");
            };
            assert_eq!(back, change);
        }
    }

    #[test]
    fn presence_crosses_whole() {
        let presence = Presence {
            user: "ann".into(),
            online: true,
            devices: 2,
            alias: "Ann".into(),
            version: 41,
        };
        let envelope = Envelope {
            origin: node(),
            body: Body::Presence(presence.clone()),
        };
        let Body::Presence(back) = round_trip(&envelope).body else {
            panic!("not a presence change");
        };
        assert_eq!(back, presence);
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_an_error_or_an_envelope_never_a_panic() {
        let whole = send(Target::room("r"), Some(Except::User("u".into()))).encode();
        for cut in 0..whole.len() {
            assert!(
                Envelope::decode(whole.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
        for at in 0..whole.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bytes = whole.to_vec();
                bytes[at] ^= flip;
                let _ = Envelope::decode(Bytes::from(bytes));
            }
        }
        assert_eq!(
            Envelope::decode(Bytes::from_static(b"\x02")).unwrap_err(),
            Malformed::Version(2)
        );
        assert_eq!(Envelope::origin_of(b"\x02\0\0\0\0\0\0\0\x01"), None);
        assert_eq!(Envelope::origin_of(b"\x01\0\0"), None);
        // A frame count no message could hold allocates nothing.
        let mut lying = BytesMut::new();
        lying.put_u8(VERSION);
        lying.put_u64(1);
        lying.put_u8(SEND);
        lying.put_u8(3);
        lying.put_u8(0);
        lying.put_u32(u32::MAX);
        assert_eq!(
            Envelope::decode(lying.freeze()).unwrap_err(),
            Malformed::Truncated
        );
    }
}
