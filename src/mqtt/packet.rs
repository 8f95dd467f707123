//! MQTT 3.1.1 packets as bytes, without I/O: the encoders for what a client sends and a
//! decoder (`push` bytes, pull packets) for what a broker sends.
//!
//! Only the client side of MQTT 3.1.1 is covered: the gateway publishes at QoS 0 or 1 and
//! subscribes at QoS 1 at most, so QoS 2 flows never start.

use thiserror::Error;

/// The largest remaining length MQTT can express (four length bytes).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("malformed remaining length")]
    BadLength,
    #[error("packet of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed {0} packet")]
    Malformed(&'static str),
    #[error("topic is not UTF-8")]
    TopicNotUtf8,
    #[error("{0} is longer than 65535 bytes")]
    FieldTooLong(&'static str),
}

/// What a broker can send to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    ConnAck {
        session_present: bool,
        code: u8,
    },
    Publish(Publish),
    PubAck {
        pkid: u16,
    },
    SubAck {
        pkid: u16,
        codes: Vec<u8>,
    },
    UnsubAck {
        pkid: u16,
    },
    PingResp,
    /// A packet type a broker does not send to a 3.1.1 client that never uses QoS 2.
    Unexpected {
        kind: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    /// 0 for QoS 0.
    pub pkid: u16,
}

/// The last will a broker publishes when the connection ends without DISCONNECT.
#[derive(Debug, Clone)]
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
}

#[derive(Debug, Clone)]
pub struct Connect<'a> {
    pub client_id: &'a str,
    pub keep_alive_secs: u16,
    pub clean_session: bool,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub will: Option<Will<'a>>,
}

fn put_len(out: &mut Vec<u8>, mut len: usize) -> Result<(), PacketError> {
    if len > MAX_REMAINING_LENGTH {
        return Err(PacketError::TooLarge {
            size: len,
            limit: MAX_REMAINING_LENGTH,
        });
    }
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return Ok(());
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8], what: &'static str) -> Result<(), PacketError> {
    let len = u16::try_from(bytes.len()).map_err(|_| PacketError::FieldTooLong(what))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn frame(first: u8, body: &[u8]) -> Result<Vec<u8>, PacketError> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    put_len(&mut out, body.len())?;
    out.extend_from_slice(body);
    Ok(out)
}

pub fn connect(c: &Connect<'_>) -> Result<Vec<u8>, PacketError> {
    let mut flags = 0u8;
    if c.clean_session {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos.min(2)) << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    let mut body = Vec::new();
    put_bytes(&mut body, b"MQTT", "protocol name")?;
    body.push(4);
    body.push(flags);
    body.extend_from_slice(&c.keep_alive_secs.to_be_bytes());
    put_bytes(&mut body, c.client_id.as_bytes(), "client id")?;
    if let Some(w) = &c.will {
        put_bytes(&mut body, w.topic.as_bytes(), "will topic")?;
        put_bytes(&mut body, w.payload, "will payload")?;
    }
    if let Some(u) = c.username {
        put_bytes(&mut body, u.as_bytes(), "username")?;
    }
    if let Some(p) = c.password {
        put_bytes(&mut body, p, "password")?;
    }
    frame(0x10, &body)
}

/// `pkid` is ignored for QoS 0.
pub fn publish(
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pkid: u16,
) -> Result<Vec<u8>, PacketError> {
    let qos = qos.min(2);
    let mut first = 0x30 | (qos << 1);
    if retain {
        first |= 0x01;
    }
    if dup && qos > 0 {
        first |= 0x08;
    }
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
    put_bytes(&mut body, topic.as_bytes(), "topic")?;
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    frame(first, &body)
}

pub fn puback(pkid: u16) -> Vec<u8> {
    let [hi, lo] = pkid.to_be_bytes();
    vec![0x40, 0x02, hi, lo]
}

pub fn subscribe(pkid: u16, filters: &[(&str, u8)]) -> Result<Vec<u8>, PacketError> {
    let mut body = pkid.to_be_bytes().to_vec();
    for (filter, qos) in filters {
        put_bytes(&mut body, filter.as_bytes(), "topic filter")?;
        body.push((*qos).min(2));
    }
    frame(0x82, &body)
}

pub fn pingreq() -> Vec<u8> {
    vec![0xC0, 0x00]
}

pub fn disconnect() -> Vec<u8> {
    vec![0xE0, 0x00]
}

/// Collects bytes from the stream and cuts them into packets.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_packet: usize,
}

impl Decoder {
    /// `max_packet` bounds the remaining length of one packet, so a broken or hostile peer
    /// cannot make us buffer without limit.
    pub fn new(max_packet: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            max_packet,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete packet, `Ok(None)` when more bytes are needed. After an error the
    /// stream is out of step; the connection has to be dropped.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, PacketError> {
        let Some(&first) = self.buf.first() else {
            return Ok(None);
        };
        let mut len = 0usize;
        let mut header = 1usize;
        loop {
            let Some(&b) = self.buf.get(header) else {
                return Ok(None);
            };
            len |= usize::from(b & 0x7F) << (7 * (header - 1));
            header += 1;
            if b & 0x80 == 0 {
                break;
            }
            if header > 4 {
                return Err(PacketError::BadLength);
            }
        }
        if len > self.max_packet {
            return Err(PacketError::TooLarge {
                size: len,
                limit: self.max_packet,
            });
        }
        let Some(body) = self.buf.get(header..header + len) else {
            return Ok(None);
        };
        let packet = parse(first, body)?;
        self.buf.drain(..header + len);
        Ok(Some(packet))
    }
}

fn be16(b: &[u8], at: usize, what: &'static str) -> Result<u16, PacketError> {
    match b.get(at..at + 2) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(PacketError::Malformed(what)),
    }
}

fn parse(first: u8, body: &[u8]) -> Result<Packet, PacketError> {
    let kind = first >> 4;
    Ok(match kind {
        2 => match body {
            [flags, code] => Packet::ConnAck {
                session_present: flags & 1 == 1,
                code: *code,
            },
            _ => return Err(PacketError::Malformed("CONNACK")),
        },
        3 => {
            let qos = (first >> 1) & 3;
            if qos == 3 {
                return Err(PacketError::Malformed("PUBLISH"));
            }
            let topic_len = usize::from(be16(body, 0, "PUBLISH")?);
            let topic_bytes = body
                .get(2..2 + topic_len)
                .ok_or(PacketError::Malformed("PUBLISH"))?;
            let topic = std::str::from_utf8(topic_bytes)
                .map_err(|_| PacketError::TopicNotUtf8)?
                .to_string();
            let mut at = 2 + topic_len;
            let pkid = if qos > 0 {
                let id = be16(body, at, "PUBLISH")?;
                at += 2;
                id
            } else {
                0
            };
            Packet::Publish(Publish {
                topic,
                payload: body.get(at..).unwrap_or_default().to_vec(),
                qos,
                retain: first & 1 == 1,
                dup: first & 0x08 != 0,
                pkid,
            })
        }
        4 => Packet::PubAck {
            pkid: be16(body, 0, "PUBACK")?,
        },
        9 => Packet::SubAck {
            pkid: be16(body, 0, "SUBACK")?,
            codes: body.get(2..).unwrap_or_default().to_vec(),
        },
        11 => Packet::UnsubAck {
            pkid: be16(body, 0, "UNSUBACK")?,
        },
        13 => Packet::PingResp,
        _ => Packet::Unexpected { kind },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_length_uses_up_to_four_bytes() {
        for (len, bytes) in [
            (0usize, vec![0u8]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            put_len(&mut out, len).unwrap();
            assert_eq!(out, bytes, "length {len}");
        }
        assert!(put_len(&mut Vec::new(), MAX_REMAINING_LENGTH + 1).is_err());
    }

    #[test]
    fn connect_encodes_the_mqtt_3_1_1_layout() {
        let bytes = connect(&Connect {
            client_id: "gw",
            keep_alive_secs: 30,
            clean_session: true,
            username: Some("u"),
            password: Some(b"p"),
            will: Some(Will {
                topic: "b/status",
                payload: b"offline",
                qos: 1,
                retain: true,
            }),
        })
        .unwrap();
        let mut expected = vec![0x10, 0];
        expected.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4]);
        // username, password, will retain, will QoS 1, will flag, clean session
        expected.push(0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02);
        expected.extend_from_slice(&[0, 30, 0, 2, b'g', b'w', 0, 8]);
        expected.extend_from_slice(b"b/status");
        expected.extend_from_slice(&[0, 7]);
        expected.extend_from_slice(b"offline");
        expected.extend_from_slice(&[0, 1, b'u', 0, 1, b'p']);
        expected[1] = (expected.len() - 2) as u8;
        assert_eq!(bytes, expected);
    }

    #[test]
    fn publish_round_trips_through_the_decoder() {
        let big = vec![0x5A; 70_000];
        let bytes = publish("a/b", &big, 1, true, true, 0x1234).unwrap();
        let mut d = Decoder::new(1 << 20);
        // byte by byte: a packet is only returned once complete
        for (i, b) in bytes.iter().enumerate() {
            d.push(&[*b]);
            let got = d.next_packet().unwrap();
            if i + 1 < bytes.len() {
                assert_eq!(got, None);
            } else {
                assert_eq!(
                    got,
                    Some(Packet::Publish(Publish {
                        topic: "a/b".into(),
                        payload: big.clone(),
                        qos: 1,
                        retain: true,
                        dup: true,
                        pkid: 0x1234,
                    }))
                );
            }
        }
        assert_eq!(d.next_packet().unwrap(), None);
    }

    #[test]
    fn decoder_splits_concatenated_packets() {
        let mut d = Decoder::new(1024);
        let mut bytes = vec![0x20, 0x02, 0x01, 0x00, 0x40, 0x02, 0x00, 0x07];
        bytes.extend_from_slice(&[0x90, 0x04, 0x00, 0x01, 0x01, 0x80, 0xD0, 0x00]);
        d.push(&bytes);
        assert_eq!(
            d.next_packet().unwrap(),
            Some(Packet::ConnAck {
                session_present: true,
                code: 0
            })
        );
        assert_eq!(d.next_packet().unwrap(), Some(Packet::PubAck { pkid: 7 }));
        assert_eq!(
            d.next_packet().unwrap(),
            Some(Packet::SubAck {
                pkid: 1,
                codes: vec![1, 0x80]
            })
        );
        assert_eq!(d.next_packet().unwrap(), Some(Packet::PingResp));
        assert_eq!(d.next_packet().unwrap(), None);
    }

    #[test]
    fn decoder_rejects_bad_input_without_panicking() {
        let mut d = Decoder::new(100);
        d.push(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
        assert_eq!(d.next_packet(), Err(PacketError::BadLength));

        let mut d = Decoder::new(100);
        d.push(&[0x30, 0x80, 0x01]);
        assert!(matches!(
            d.next_packet(),
            Err(PacketError::TooLarge { size: 128, .. })
        ));

        // topic length beyond the packet, QoS 3, a PUBACK without id, a CONNACK of 3 bytes
        for bad in [
            &[0x30, 0x03, 0x00, 0x05, b'a'][..],
            &[0x36, 0x02, 0x00, 0x00],
            &[0x40, 0x01, 0x00],
            &[0x20, 0x03, 0, 0, 0],
        ] {
            let mut d = Decoder::new(100);
            d.push(bad);
            assert!(
                matches!(d.next_packet(), Err(PacketError::Malformed(_))),
                "{bad:02X?}"
            );
        }

        // every prefix of every byte pattern up to 4 bytes: no panic
        for a in 0..=255u8 {
            for b in [0u8, 1, 2, 3, 0x7F, 0x80, 0xFF] {
                let mut d = Decoder::new(16);
                d.push(&[a, b, 0, 0, 0xFF]);
                let _ = d.next_packet();
            }
        }
    }
}
