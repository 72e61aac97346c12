//! A writer that hands fixed-size buffers to a second thread over a bounded
//! channel, so that the producer (walk, read, hash, tar framing) and the
//! consumer (compress, encrypt, write) run on different cores. Buffers are
//! recycled, so memory stays at `(DEPTH + 2) * BUF_SIZE` whatever the case.
//!
//! Besides `Write`, the producing end can lend its next free buffer space
//! ([`Lend`]): seal reads a file straight into it and hashes it there,
//! instead of reading into a buffer of its own and copying (issue #12).

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::io::BUF_SIZE;
use crate::{Error, Result};

/// Buffers in flight between the two threads.
const DEPTH: usize = 4;

enum Msg {
    /// A buffer (always `BUF_SIZE` long, so that it is reused without
    /// clearing) and how many of its bytes are data.
    Data(Vec<u8>, usize),
    End,
}

/// The receiving end given to the consumer closure.
pub struct Chunks {
    rx: Receiver<Msg>,
    free: SyncSender<Vec<u8>>,
    ended: bool,
}

impl Chunks {
    /// Feed every chunk to `sink`. Returns `Ok(true)` when the producer
    /// finished normally, `Ok(false)` if it went away without finishing
    /// (the consumer must then discard its output).
    pub fn drain(&mut self, sink: &mut dyn Write) -> io::Result<bool> {
        loop {
            match self.rx.recv() {
                Ok(Msg::Data(buf, len)) => {
                    sink.write_all(&buf[..len])?;
                    let _ = self.free.try_send(buf);
                }
                Ok(Msg::End) => {
                    self.ended = true;
                    return Ok(true);
                }
                Err(_) => return Ok(self.ended),
            }
        }
    }
}

/// The producing end: a `Write` whose output is processed by the consumer
/// thread started in [`PipeWriter::spawn`].
pub struct PipeWriter<T: Send + 'static> {
    /// The buffer being filled: `BUF_SIZE` initialised bytes, of which the
    /// first `used` are data.
    buf: Vec<u8>,
    used: usize,
    tx: Option<SyncSender<Msg>>,
    free: Receiver<Vec<u8>>,
    handle: Option<JoinHandle<Result<T>>>,
}

impl<T: Send + 'static> PipeWriter<T> {
    /// Start `consumer` on a new thread; it must call [`Chunks::drain`].
    pub fn spawn<F>(consumer: F) -> Self
    where
        F: FnOnce(Chunks) -> Result<T> + Send + 'static,
    {
        Self::spawn_named("casevault-writer", consumer)
    }

    /// [`PipeWriter::spawn`], naming the thread (as profilers show it).
    pub fn spawn_named<F>(name: &str, consumer: F) -> Self
    where
        F: FnOnce(Chunks) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(DEPTH);
        let (free_tx, free_rx) = mpsc::sync_channel(DEPTH + 1);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                consumer(Chunks {
                    rx,
                    free: free_tx,
                    ended: false,
                })
            })
            .expect("spawning a thread only fails when the OS is out of resources");
        PipeWriter {
            buf: vec![0; BUF_SIZE],
            used: 0,
            tx: Some(tx),
            free: free_rx,
            handle: Some(handle),
        }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        // Recycled buffers keep their length: nothing is zeroed again.
        let next = self.free.try_recv().unwrap_or_else(|_| vec![0; BUF_SIZE]);
        let full = std::mem::replace(&mut self.buf, next);
        let len = std::mem::take(&mut self.used);
        let tx = self.tx.as_ref().expect("send after finish is a bug");
        tx.send(Msg::Data(full, len))
            .map_err(|_| io::Error::other("output stage stopped"))
    }

    /// Flush the last buffer, tell the consumer the stream is complete, and
    /// return its result.
    pub fn finish(mut self) -> Result<T> {
        let sent = if self.used == 0 {
            Ok(())
        } else {
            self.send_buf()
        };
        let tx = self.tx.take().expect("finish is called once");
        let ended = sent.is_ok() && tx.send(Msg::End).is_ok();
        drop(tx);
        let res = self.join();
        match (res, ended) {
            (Err(e), _) => Err(e),
            (Ok(t), true) => Ok(t),
            (Ok(_), false) => Err(crate::Error::Refused("output stage stopped early".into())),
        }
    }

    /// The consumer's error after a write failed (the consumer stopped).
    pub fn abort(mut self) -> Option<crate::Error> {
        self.tx.take();
        self.join().err()
    }

    fn join(&mut self) -> Result<T> {
        let h = self.handle.take().expect("joined once");
        match h.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

impl<T: Send + 'static> Write for PipeWriter<T> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let room = BUF_SIZE - self.used;
            let k = room.min(data.len());
            self.buf[self.used..self.used + k].copy_from_slice(&data[..k]);
            self.used += k;
            data = &data[k..];
            if self.used == BUF_SIZE {
                self.send_buf()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that can lend the producer its free buffer space, so that data
/// is read straight into the stream instead of into a buffer of the
/// producer's own and then copied.
pub trait Lend: Write {
    /// Call `fill` with the free space of the current buffer, at most `max`
    /// bytes (at least one byte when `max > 0`). The first `n` bytes of that
    /// space become part of the stream, as if written, when `fill` returns
    /// `Ok(n)`; when it returns `Err`, nothing is added (whatever it put
    /// there is overwritten later) and its error is returned as `Ok(Err)`.
    /// The outer `Err` is the writer's own failure (for [`PipeWriter`]: the
    /// consumer stopped), or `fill` claiming more bytes than it was lent.
    fn lend<E, F>(&mut self, max: usize, fill: F) -> io::Result<std::result::Result<usize, E>>
    where
        F: FnOnce(&mut [u8]) -> std::result::Result<usize, E>;
}

impl<T: Send + 'static> Lend for PipeWriter<T> {
    fn lend<E, F>(&mut self, max: usize, fill: F) -> io::Result<std::result::Result<usize, E>>
    where
        F: FnOnce(&mut [u8]) -> std::result::Result<usize, E>,
    {
        // A full buffer is sent as soon as it fills, so there is room here.
        let end = self.used + max.min(BUF_SIZE - self.used);
        let lent = end - self.used;
        let n = match fill(&mut self.buf[self.used..end]) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        if n > lent {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a producer claimed more bytes than it was lent",
            ));
        }
        self.used += n;
        if self.used == BUF_SIZE {
            self.send_buf()?;
        }
        Ok(Ok(n))
    }
}

impl<T: Send + 'static> Drop for PipeWriter<T> {
    fn drop(&mut self) {
        // Dropped without finish: close the channel without `End` so the
        // consumer discards its output, and wait for it.
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Where a pipeline stage leaves the error that stopped it, for the stage
/// writing into it (whose own error is only "output stage stopped").
#[derive(Clone, Default)]
pub struct Failed(std::sync::Arc<std::sync::Mutex<Option<Error>>>);

impl Failed {
    /// Leave `e` for the stage before.
    pub fn set(&self, e: Error) {
        *self.0.lock().expect("the error slot is never poisoned") = Some(e);
    }

    /// The stage's error, if it failed.
    pub fn take(&self) -> Option<Error> {
        self.0
            .lock()
            .expect("the error slot is never poisoned")
            .take()
    }

    /// The stage's error if it failed, else `otherwise()`.
    pub fn take_or(&self, otherwise: impl FnOnce() -> Error) -> Error {
        self.take().unwrap_or_else(otherwise)
    }
}

enum ReadMsg {
    Data(Vec<u8>),
    Err(io::Error),
}

/// A reader fed by a thread that reads another reader ahead: the stage
/// before it (e.g. decryption) runs on its own core. Errors are passed
/// through unchanged, at the position they occurred.
pub struct PumpReader {
    rx: Receiver<ReadMsg>,
    free: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
    handle: Option<JoinHandle<()>>,
}

impl PumpReader {
    /// Start reading `inner` on a new thread, up to `DEPTH` buffers ahead.
    pub fn spawn<R: io::Read + Send + 'static>(mut inner: R) -> Self {
        let (tx, rx) = mpsc::sync_channel(DEPTH);
        let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(DEPTH + 1);
        let handle = std::thread::Builder::new()
            .name("casevault-reader".into())
            .spawn(move || loop {
                let mut buf = free_rx.try_recv().unwrap_or_default();
                buf.resize(BUF_SIZE, 0);
                let mut n = 0;
                let res = loop {
                    if n == buf.len() {
                        break Ok(());
                    }
                    match crate::io::retry(|| inner.read(&mut buf[n..])) {
                        Ok(0) => break Ok(()),
                        Ok(k) => n += k,
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(n);
                let last = n == 0;
                if n > 0 && tx.send(ReadMsg::Data(buf)).is_err() {
                    return;
                }
                if let Err(e) = res {
                    let _ = tx.send(ReadMsg::Err(e));
                    return;
                }
                if last {
                    return; // dropping tx signals EOF
                }
            })
            .expect("spawning a thread only fails when the OS is out of resources");
        PumpReader {
            rx,
            free: free_tx,
            cur: Vec::new(),
            pos: 0,
            done: false,
            handle: Some(handle),
        }
    }
}

impl io::Read for PumpReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done || out.is_empty() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(ReadMsg::Data(buf)) => {
                    let old = std::mem::replace(&mut self.cur, buf);
                    let _ = self.free.try_send(old);
                    self.pos = 0;
                }
                Ok(ReadMsg::Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for PumpReader {
    fn drop(&mut self) {
        // Unblock the producer (its send fails once rx is gone), then wait
        // so that no thread outlives the vault it reads.
        let (_tx, rx) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn pump_passes_bytes_and_errors_in_order() {
        let data: Vec<u8> = (0..3 * BUF_SIZE + 17).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        PumpReader::spawn(io::Cursor::new(data.clone()))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);

        struct Fails(usize);
        impl io::Read for Fails {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "tampered"));
                }
                let n = b.len().min(self.0);
                b[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut r = PumpReader::spawn(Fails(10));
        let mut got = Vec::new();
        let err = r.read_to_end(&mut got).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(got, vec![7; 10]);
        // Dropping a reader mid-stream must not hang.
        drop(PumpReader::spawn(io::repeat(1)));
    }

    /// A consumer that collects the stream, and whether it was finished.
    fn collector() -> PipeWriter<(Vec<u8>, bool)> {
        PipeWriter::spawn(|mut chunks| {
            let mut got = Vec::new();
            let complete = chunks.drain(&mut got).expect("a Vec does not fail");
            Ok((got, complete))
        })
    }

    /// Lend `max` bytes and fill them from `src`, like a file read.
    fn lend_from(w: &mut impl Lend, src: &mut &[u8], max: usize) -> usize {
        w.lend(max, |dst| -> io::Result<usize> { src.read(dst) })
            .expect("the consumer runs")
            .expect("a slice reads")
    }

    #[test]
    fn lent_bytes_and_written_bytes_form_one_stream() {
        let data: Vec<u8> = (0..3 * BUF_SIZE + 4321).map(|i| (i % 253) as u8).collect();
        let mut w = collector();
        let mut src = &data[..];
        // A small write first, so that lent space starts mid-buffer and
        // lends cross buffer boundaries.
        w.write_all(&src[..100]).unwrap();
        src = &src[100..];
        let mut lends = 0;
        while !src.is_empty() {
            let n = lend_from(&mut w, &mut src, 700_000);
            assert!(n > 0 && n <= 700_000);
            lends += 1;
            if lends % 3 == 0 && !src.is_empty() {
                w.write_all(&src[..1]).unwrap();
                src = &src[1..];
            }
        }
        // A lend never reaches past the end of the current buffer.
        assert!(lends > 3 * BUF_SIZE / 700_000);
        let (got, complete) = w.finish().unwrap();
        assert!(complete);
        assert_eq!(got, data);
    }

    #[test]
    fn a_producer_failing_mid_buffer_adds_nothing() {
        let mut w = collector();
        w.write_all(b"abc").unwrap();
        // The producer scribbles over the lent space, then fails.
        let res = w
            .lend(10, |dst| {
                assert_eq!(dst.len(), 10);
                dst.fill(b'X');
                Err::<usize, _>(io::Error::other("disk error"))
            })
            .unwrap();
        assert_eq!(res.unwrap_err().to_string(), "disk error");
        // Claiming more than was lent is refused, and adds nothing either.
        let over = w.lend(4, |dst| {
            dst.fill(b'Y');
            Ok::<usize, io::Error>(5)
        });
        assert_eq!(over.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let n = w
            .lend(2, |dst| {
                dst.copy_from_slice(b"de");
                Ok::<usize, io::Error>(2)
            })
            .unwrap()
            .unwrap();
        assert_eq!(n, 2);
        w.write_all(b"f").unwrap();
        let (got, complete) = w.finish().unwrap();
        assert_eq!((got.as_slice(), complete), (&b"abcdef"[..], true));

        // A producer that gives up (dropped without finish): the consumer
        // learns that the stream is incomplete.
        let (tx, rx) = mpsc::channel();
        let mut w = PipeWriter::spawn(move |mut chunks| {
            let mut got = Vec::new();
            let complete = chunks.drain(&mut got).unwrap();
            tx.send(complete).unwrap();
            Ok(())
        });
        let mut src = &[1u8; BUF_SIZE + 10][..];
        lend_from(&mut w, &mut src, BUF_SIZE + 10);
        drop(w);
        assert!(!rx.recv().unwrap());
    }

    #[test]
    fn a_consumer_that_stops_fails_the_lend_and_gives_its_error() {
        struct FailsAfter(usize);
        impl Write for FailsAfter {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk full"));
                }
                self.0 -= 1;
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w: PipeWriter<()> = PipeWriter::spawn(|mut chunks| {
            chunks
                .drain(&mut FailsAfter(1))
                .map_err(|e| crate::Error::Refused(format!("consumer: {e}")))?;
            Ok(())
        });
        let mut failed = None;
        for _ in 0..4 * (DEPTH + 2) {
            let res = w.lend(BUF_SIZE, |dst| Ok::<usize, io::Error>(dst.len()));
            if let Err(e) = res {
                failed = Some(e);
                break;
            }
        }
        let e = failed.expect("lending fails once the consumer stopped");
        assert_eq!(e.to_string(), "output stage stopped");
        let cause = w.abort().expect("the consumer's error");
        assert!(cause.to_string().contains("consumer: disk full"), "{cause}");
    }
}
