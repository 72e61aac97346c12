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
