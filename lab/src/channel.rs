//! The host end of the command channel: a unix socket that QEMU connects to the VM's virtio
//! serial port, where `lab-agent` answers.
//!
//! Requests carry ids; one reader thread routes each reply to the caller waiting for that id, so
//! several threads may run commands at once and a reply that comes too late (after its caller
//! gave up) is dropped instead of confusing the next caller. When the socket closes (QEMU
//! exited) every waiting caller learns it at once.

use std::collections::HashMap;
use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ipvs_lab_tools::proto::{self, Reply, Request};

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChannelError {
    /// No reply within the deadline.
    Timeout,
    /// The channel closed (the VM is gone), with the reason.
    Closed(String),
}

type Waiters = Arc<Mutex<HashMap<u64, Sender<Result<Reply, ChannelError>>>>>;

/// A connected channel.
pub(crate) struct Channel {
    writer: Mutex<UnixStream>,
    waiters: Waiters,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
}

impl Channel {
    /// Wraps a connected socket and starts the reader thread.
    pub(crate) fn new(stream: UnixStream) -> std::io::Result<Channel> {
        let reader = stream.try_clone()?;
        let waiters: Waiters = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        {
            let waiters = Arc::clone(&waiters);
            let closed = Arc::clone(&closed);
            thread::Builder::new()
                .name("ipvs-lab-channel".into())
                .spawn(move || {
                    let mut r = BufReader::with_capacity(1 << 16, reader);
                    let why = loop {
                        match Reply::read(&mut r) {
                            Ok(Some(reply)) => {
                                let id = match &reply {
                                    Reply::Pong { id } | Reply::Done { id, .. } => *id,
                                };
                                let tx = waiters.lock().ok().and_then(|mut w| w.remove(&id));
                                if let Some(tx) = tx {
                                    let _ = tx.send(Ok(reply));
                                }
                            }
                            Ok(None) => break "the VM closed the command channel".to_string(),
                            Err(e) => break format!("reading the command channel: {e}"),
                        }
                    };
                    closed.store(true, Ordering::SeqCst);
                    if let Ok(mut w) = waiters.lock() {
                        for (_, tx) in w.drain() {
                            let _ = tx.send(Err(ChannelError::Closed(why.clone())));
                        }
                    }
                })?;
        }
        Ok(Channel {
            writer: Mutex::new(stream),
            waiters,
            next_id: AtomicU64::new(1),
            closed,
        })
    }

    /// The next request id.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn send(
        &self,
        req: &Request,
        id: u64,
    ) -> Result<Receiver<Result<Reply, ChannelError>>, ChannelError> {
        let (tx, rx) = mpsc::channel();
        if self.closed.load(Ordering::SeqCst) {
            return Err(ChannelError::Closed("the command channel is closed".into()));
        }
        self.waiters
            .lock()
            .map_err(|_| ChannelError::Closed("channel state poisoned".into()))?
            .insert(id, tx);
        let mut w = self
            .writer
            .lock()
            .map_err(|_| ChannelError::Closed("channel writer poisoned".into()))?;
        if let Err(e) = proto::write_frame(&mut *w, &req.encode()) {
            self.forget(id);
            return Err(ChannelError::Closed(format!(
                "writing the command channel: {e}"
            )));
        }
        Ok(rx)
    }

    fn forget(&self, id: u64) {
        if let Ok(mut w) = self.waiters.lock() {
            w.remove(&id);
        }
    }

    /// Sends a request and waits for its reply until `deadline`; `abort` is polled every 100 ms
    /// and ends the wait early with its reason (e.g. a kernel panic seen on the console).
    pub(crate) fn call(
        &self,
        req: Request,
        deadline: Instant,
        abort: &dyn Fn() -> Option<String>,
    ) -> Result<Reply, ChannelError> {
        let id = match &req {
            Request::Ping { id } | Request::Run { id, .. } | Request::Spawn { id, .. } => *id,
        };
        let rx = self.send(&req, id)?;
        loop {
            let now = Instant::now();
            if now >= deadline {
                self.forget(id);
                return Err(ChannelError::Timeout);
            }
            match rx.recv_timeout((deadline - now).min(Duration::from_millis(100))) {
                Ok(r) => return r,
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(why) = abort() {
                        self.forget(id);
                        return Err(ChannelError::Closed(why));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(ChannelError::Closed("the command channel closed".into()));
                }
            }
        }
    }
}
