//! A half-duplex M-Bus port over any byte stream (serial device, TCP socket, pseudo-terminal):
//! send a frame, then classify what comes back within the standard's response window.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

use super::timing;
use crate::wire::wired::{scan, Scan};

/// Most bytes taken as one reply: two long frames (261 bytes each) and then some, so a
/// collision of two answers is still seen whole for diagnostics.
const MAX_REPLY: usize = 600;

/// Any byte stream a port can run on.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What came back after a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nothing within the response window.
    Silence,
    /// One complete, valid frame (`E5`, short or long), and nothing else before the line went
    /// quiet.
    Frame(Vec<u8>),
    /// Bytes that are not one valid frame: a collision of several slaves, noise, or a frame cut
    /// short. The bytes are kept for diagnostics.
    Garbled(Vec<u8>),
}

/// Port settings that come from the user or the converter, not from the standard.
#[derive(Debug, Clone, Copy)]
pub struct PortConfig {
    pub baud: u32,
    /// Added to the standard's response window (USB adapters, TCP gateways).
    pub extra_latency: Duration,
    /// The converter echoes what the master sends; drop those bytes before reading the reply.
    pub echo: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            baud: 2400,
            extra_latency: Duration::from_millis(50),
            echo: false,
        }
    }
}

pub struct Port {
    stream: Box<dyn Stream>,
    pub config: PortConfig,
    /// Bytes read but not yet consumed (a late byte of an earlier reply, or echo).
    pending: Vec<u8>,
    /// Where to reconnect when the stream drops: set for TCP gateways, which close idle or
    /// broken connections as a matter of course. A serial device that vanishes is a hardware
    /// fault the user has to see.
    reconnect_to: Option<String>,
    /// The peer closed the stream (seen as end of file while reading).
    closed: bool,
    stale_bytes: u64,
    /// Attempts of the current request (repeats of the same frame) whose window passed in
    /// silence. Silence to a different request (a scan moving on) does not count: only a
    /// request answered after its own silent attempts can have answers still on their way.
    unanswered: u32,
    last_request: Vec<u8>,
    /// The last answer came after silent attempts, so it may have been a late answer to one of
    /// them, with the answers to the later attempts still on their way.
    strays_possible: bool,
}

impl Port {
    pub fn new(stream: Box<dyn Stream>, config: PortConfig) -> Port {
        Port {
            stream,
            config,
            pending: Vec::new(),
            reconnect_to: None,
            closed: false,
            stale_bytes: 0,
            unanswered: 0,
            last_request: Vec::new(),
            strays_possible: false,
        }
    }

    /// A port on a TCP gateway that reopens the connection when it drops.
    pub fn reconnecting(stream: Box<dyn Stream>, config: PortConfig, address: String) -> Port {
        Port {
            reconnect_to: Some(address),
            ..Port::new(stream, config)
        }
    }

    /// The gateway address to reconnect to, if this port reconnects.
    pub fn reconnect_address(&self) -> Option<&str> {
        self.reconnect_to.as_deref()
    }

    /// The peer has closed the stream; nothing more will arrive on it.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Replaces a dropped stream with a fresh connection to the same gateway.
    pub async fn reconnect(
        &mut self,
        connect_timeout: Duration,
    ) -> Result<(), super::open::OpenError> {
        let Some(address) = self.reconnect_to.clone() else {
            return Err(super::open::OpenError::NotReconnectable);
        };
        self.stream = super::open::open_tcp(&address, connect_timeout).await?;
        self.pending.clear();
        self.closed = false;
        // Nothing sent on the old connection can arrive on the new one.
        self.unanswered = 0;
        self.strays_possible = false;
        Ok(())
    }

    fn eof(&mut self) -> std::io::Error {
        self.closed = true;
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the converter closed the connection",
        )
    }

    /// Drops whatever arrived since the last reply was taken, before the next request goes
    /// out. Those bytes answer no request of ours: the answer to an attempt we had given up on
    /// (a converter or meter slower than the window), a repeat's answer after the original
    /// came late, noise. Left in place they would pass for the next request's answer, and from
    /// then on every reading would be the one before. If bytes are still arriving, wait until
    /// the line has been quiet for a reply's gap, at most two response windows (three after
    /// an answer that came late).
    async fn discard_stale_input(&mut self) -> std::io::Result<()> {
        let give_up = Instant::now() + self.response_window() * 3;
        let mut buf = [0u8; 256];
        // After an answer that only came to a repeated request, the answers to the earlier
        // attempts may still arrive: give them one window (the cost is paid only then).
        let mut wait = if std::mem::take(&mut self.strays_possible) {
            self.response_window() + self.quiet_gap()
        } else {
            Duration::ZERO
        };
        loop {
            // A zero timeout still polls the read once, so only bytes already here count.
            match timeout_at(Instant::now() + wait, self.stream.read(&mut buf)).await {
                Err(_) => return Ok(()),
                Ok(Ok(0)) => {
                    self.closed = true;
                    return Ok(());
                }
                Ok(Ok(n)) => {
                    self.stale_bytes += n as u64;
                    if Instant::now() >= give_up {
                        return Ok(());
                    }
                    wait = self.quiet_gap();
                }
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Bytes dropped so far because they arrived when no answer was awaited.
    pub fn stale_bytes(&self) -> u64 {
        self.stale_bytes
    }

    /// The window in which a slave's first byte must arrive, counted from the end of our frame.
    pub fn response_window(&self) -> Duration {
        timing::response_window(self.config.baud) + self.config.extra_latency
    }

    /// Gap after which a reply is taken as finished: a few byte times plus the latency
    /// allowance, since converters deliver bytes in bursts.
    fn quiet_gap(&self) -> Duration {
        timing::byte_time(self.config.baud) * 4 + self.config.extra_latency
    }

    /// Writes a frame. With `echo`, the converter's copy of it is read back and dropped.
    pub async fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.pending.clear();
        if self.last_request != frame {
            self.unanswered = 0;
            self.last_request = frame.to_vec();
        }
        if !self.closed {
            self.discard_stale_input().await?;
        }
        if self.closed {
            return Err(self.eof());
        }
        self.stream.write_all(frame).await?;
        self.stream.flush().await?;
        if self.config.echo {
            let deadline = Instant::now()
                + timing::wire_time(self.config.baud, frame.len())
                + self.response_window();
            let mut echoed = Vec::with_capacity(frame.len());
            let mut buf = [0u8; 64];
            while echoed.len() < frame.len() {
                match timeout_at(deadline, self.stream.read(&mut buf)).await {
                    Ok(Ok(0)) => return Err(self.eof()),
                    Ok(Ok(n)) => echoed.extend_from_slice(&buf[..n]),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => break,
                }
            }
            // Whatever arrived after the echo is the start of the reply.
            if echoed.len() > frame.len() && echoed.starts_with(frame) {
                self.pending.extend_from_slice(&echoed[frame.len()..]);
            }
        }
        Ok(())
    }

    /// Waits for a reply: silence if no byte arrives within the response window (the wire time
    /// of our own frame is the caller's to add when the transport does not block on writes);
    /// otherwise reads until a whole frame is there and the line stays quiet.
    pub async fn receive(&mut self, extra_wait: Duration) -> std::io::Result<Reply> {
        let mut got = std::mem::take(&mut self.pending);
        let first_deadline = Instant::now() + self.response_window() + extra_wait;
        let mut buf = [0u8; 256];
        if got.is_empty() {
            match timeout_at(first_deadline, self.stream.read(&mut buf)).await {
                Err(_) => {
                    self.unanswered = self.unanswered.saturating_add(1);
                    return Ok(Reply::Silence);
                }
                Ok(Ok(0)) => return Err(self.eof()),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => return Err(e),
            }
        }
        loop {
            // A line that never goes quiet (a babbling meter, a shorted bus, a gateway sending
            // garbage) must not hold the bus task or grow this buffer: no answer is longer than
            // a long frame, so beyond a few of them the reply is garbled. The rest is dropped
            // before the next request.
            if got.len() > MAX_REPLY {
                break;
            }
            // How long to wait for the next byte: until the frame can be complete, plus a
            // quiet gap; once a frame is complete, a quiet gap to catch a second answer.
            let wait = match scan(&got) {
                Scan::NeedMore(n) => timing::wire_time(self.config.baud, n) + self.quiet_gap(),
                // A whole long frame with a good checksum: a second talker would have garbled
                // it, so there is nothing more to wait for. A lone E5 can be followed by a
                // second slave's E5, which is how a collision of acknowledgements looks.
                Scan::Complete(n) if n == got.len() && got.first() == Some(&0x68) => break,
                _ => self.quiet_gap(),
            };
            match timeout_at(Instant::now() + wait, self.stream.read(&mut buf)).await {
                Err(_) => break,
                // Closed mid-answer: what arrived is judged as it is (usually garbled), and
                // the next request finds the port closed.
                Ok(Ok(0)) => {
                    self.closed = true;
                    break;
                }
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => return Err(e),
            }
        }
        if std::mem::take(&mut self.unanswered) > 0 {
            self.strays_possible = true;
        }
        Ok(match scan(&got) {
            Scan::Complete(n) if n == got.len() => Reply::Frame(got),
            _ => Reply::Garbled(got),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn port(stream: tokio::io::DuplexStream, echo: bool) -> Port {
        Port::new(
            Box::new(stream),
            PortConfig {
                baud: 9600,
                extra_latency: Duration::from_millis(20),
                echo,
            },
        )
    }

    #[tokio::test]
    async fn a_line_that_never_goes_quiet_is_a_garbled_reply_not_a_hang() {
        let (a, mut b) = duplex(64 * 1024);
        let mut p = port(a, false);
        p.send(&[0x10, 0x7B, 0x01, 0x7C, 0x16]).await.unwrap();
        let mut req = [0u8; 5];
        b.read_exact(&mut req).await.unwrap();
        // Noise without end, faster than the quiet gap.
        let noise = tokio::spawn(async move {
            loop {
                if b.write_all(&[0x55; 16]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let reply = tokio::time::timeout(Duration::from_secs(10), p.receive(Duration::ZERO))
            .await
            .expect("receive returns while the noise goes on")
            .unwrap();
        match reply {
            Reply::Garbled(bytes) => {
                assert!(
                    bytes.len() > MAX_REPLY && bytes.len() <= MAX_REPLY + 256,
                    "{}",
                    bytes.len()
                )
            }
            other => panic!("{other:?}"),
        }
        // The next request goes out after at most the drain's limit, noise or not.
        tokio::time::timeout(
            Duration::from_secs(10),
            p.send(&[0x10, 0x7B, 0x01, 0x7C, 0x16]),
        )
        .await
        .expect("send returns while the noise goes on")
        .unwrap();
        noise.abort();
    }

    #[tokio::test]
    async fn ack_silence_and_collision() {
        let (a, mut b) = duplex(1024);
        let mut p = port(a, false);
        p.send(&[0x10, 0x40, 0x05, 0x45, 0x16]).await.unwrap();
        let mut req = [0u8; 5];
        b.read_exact(&mut req).await.unwrap();
        b.write_all(&[0xE5]).await.unwrap();
        assert_eq!(
            p.receive(Duration::ZERO).await.unwrap(),
            Reply::Frame(vec![0xE5])
        );

        p.send(&[0x10, 0x40, 0x06, 0x46, 0x16]).await.unwrap();
        b.read_exact(&mut req).await.unwrap();
        assert_eq!(p.receive(Duration::ZERO).await.unwrap(), Reply::Silence);

        // Two slaves acknowledging at once: two E5s are no single frame.
        p.send(&[0x10, 0x40, 0xFD, 0x3D, 0x16]).await.unwrap();
        b.read_exact(&mut req).await.unwrap();
        b.write_all(&[0xE5, 0xE5]).await.unwrap();
        assert_eq!(
            p.receive(Duration::ZERO).await.unwrap(),
            Reply::Garbled(vec![0xE5, 0xE5])
        );
    }

    #[tokio::test]
    async fn echo_is_dropped() {
        let (a, mut b) = duplex(1024);
        let mut p = port(a, true);
        let frame = [0x10, 0x5B, 0x05, 0x60, 0x16];
        let sender = tokio::spawn(async move {
            let mut req = [0u8; 5];
            b.read_exact(&mut req).await.unwrap();
            // The converter echoes, then the meter answers.
            b.write_all(&req).await.unwrap();
            b.write_all(&[0xE5]).await.unwrap();
            b
        });
        p.send(&frame).await.unwrap();
        let _b = sender.await.unwrap();
        assert_eq!(
            p.receive(Duration::ZERO).await.unwrap(),
            Reply::Frame(vec![0xE5])
        );
    }
}
