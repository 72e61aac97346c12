//! A writer that hands fixed-size buffers to a second thread over a bounded
//! channel, so that the producer (walk, read, hash, tar framing) and the
//! consumer (compress, encrypt, write) run on different cores. Buffers are
//! recycled, so memory stays at `(DEPTH + 2) * BUF_SIZE` whatever the case.

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::io::BUF_SIZE;
use crate::Result;

/// Buffers in flight between the two threads.
const DEPTH: usize = 4;

enum Msg {
    Data(Vec<u8>),
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
                Ok(Msg::Data(mut buf)) => {
                    sink.write_all(&buf)?;
                    buf.clear();
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
    buf: Vec<u8>,
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
        let (tx, rx) = mpsc::sync_channel(DEPTH);
        let (free_tx, free_rx) = mpsc::sync_channel(DEPTH + 1);
        let handle = std::thread::Builder::new()
            .name("casevault-writer".into())
            .spawn(move || {
                consumer(Chunks {
                    rx,
                    free: free_tx,
                    ended: false,
                })
            })
            .expect("spawning a thread only fails when the OS is out of resources");
        PipeWriter {
            buf: Vec::with_capacity(BUF_SIZE),
            tx: Some(tx),
            free: free_rx,
            handle: Some(handle),
        }
    }

    fn send_buf(&mut self) -> io::Result<()> {
        let next = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUF_SIZE));
        let full = std::mem::replace(&mut self.buf, next);
        let tx = self.tx.as_ref().expect("send after finish is a bug");
        tx.send(Msg::Data(full))
            .map_err(|_| io::Error::other("output stage stopped"))
    }

    /// Flush the last buffer, tell the consumer the stream is complete, and
    /// return its result.
    pub fn finish(mut self) -> Result<T> {
        let sent = if self.buf.is_empty() {
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
            let room = BUF_SIZE - self.buf.len();
            let k = room.min(data.len());
            self.buf.extend_from_slice(&data[..k]);
            data = &data[k..];
            if self.buf.len() == BUF_SIZE {
                self.send_buf()?;
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
}
